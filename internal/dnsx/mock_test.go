package dnsx

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestMock(t *testing.T) {
	a := netip.MustParseAddr("127.0.0.2")
	m := &Mock{
		MX: map[string][]MX{
			"example.test": {{"mx.example.test", 10}},
			"Null.Test.":   {{".", 0}},
		},
		IP: map[string][]netip.Addr{
			"mx.example.test": {a},
			"noamx.test":      {a},
		},
		Fail: map[string]error{
			"down.test": &Error{Name: "down.test", Err: errors.New("SERVFAIL"), Temporary: true},
		},
	}
	var r Resolver = m
	ctx := context.Background()

	mxs, err := r.LookupMX(ctx, "EXAMPLE.test.")
	if err != nil || !slices.Equal(mxs, []MX{{"mx.example.test", 10}}) {
		t.Fatalf("LookupMX: %v, %v", mxs, err)
	}
	mxs[0].Host = "changed"
	if m.MX["example.test"][0].Host != "mx.example.test" {
		t.Fatal("LookupMX returned the mock's own slice")
	}
	if mxs, err := r.LookupMX(ctx, "null.test"); err != nil || !IsNullMX(mxs) {
		t.Fatalf("null MX: %v, %v", mxs, err)
	}
	if mxs, err := r.LookupMX(ctx, "noamx.test"); err != nil || mxs == nil || len(mxs) != 0 {
		t.Fatalf("domain without MX: %#v, %v; want empty, nil", mxs, err)
	}
	if _, err := r.LookupMX(ctx, "nosuch.test"); !IsNotFound(err) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown domain: err = %v, want NotFound", err)
	}
	if _, err := r.LookupMX(ctx, "down.test"); !IsTemporary(err) {
		t.Fatalf("Fail entry: err = %v, want Temporary", err)
	}

	ips, err := r.LookupIP(ctx, "mx.example.test")
	if err != nil || !slices.Equal(ips, []netip.Addr{a}) {
		t.Fatalf("LookupIP: %v, %v", ips, err)
	}
	if ips, err := r.LookupIP(ctx, "example.test"); err != nil || ips == nil || len(ips) != 0 {
		t.Fatalf("host without addresses: %#v, %v; want empty, nil", ips, err)
	}
	if _, err := r.LookupIP(ctx, "nosuch.test"); !IsNotFound(err) {
		t.Fatalf("unknown host: err = %v, want NotFound", err)
	}
	if _, err := r.LookupIP(ctx, "down.test"); !IsTemporary(err) {
		t.Fatalf("Fail entry: err = %v, want Temporary", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.LookupMX(cctx, "example.test"); !IsTemporary(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("done context: err = %v, want Temporary Canceled", err)
	}

	var empty Mock
	if _, err := empty.LookupIP(ctx, "x.test"); !IsNotFound(err) {
		t.Fatalf("zero Mock: err = %v, want NotFound", err)
	}
}
