package dnsx

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSortMX(t *testing.T) {
	in := []MX{{"c.test", 20}, {"d.test", 30}, {"a.test", 10}, {"b.test", 20}, {"e.test", 20}}
	orig := slices.Clone(in)
	rnd := rand.New(rand.NewPCG(1, 2))
	seen := map[string]int{}
	for range 300 {
		got := SortMX(in, rnd)
		if len(got) != 5 || got[0] != (MX{"a.test", 10}) || got[4] != (MX{"d.test", 30}) {
			t.Fatalf("SortMX = %v: preference order broken", got)
		}
		mid := got[1:4]
		for _, mx := range mid {
			if mx.Pref != 20 {
				t.Fatalf("SortMX = %v: preference order broken", got)
			}
		}
		seen[fmt.Sprint(mid)]++
	}
	// Three hosts at preference 20 have 6 orders; over 300 runs each
	// should appear (the chance that a fair shuffle misses one is ~1e-23).
	if len(seen) != 6 {
		t.Fatalf("equal preferences appeared in %d orders, want all 6: %v", len(seen), seen)
	}
	if !slices.Equal(in, orig) {
		t.Fatalf("SortMX changed its input: %v", in)
	}
}

func TestSortMXTwoEqualBothOrders(t *testing.T) {
	in := []MX{{"x.test", 5}, {"y.test", 5}}
	rnd := rand.New(rand.NewPCG(7, 7))
	first := map[string]bool{}
	for range 100 {
		first[SortMX(in, rnd)[0].Host] = true
	}
	if !first["x.test"] || !first["y.test"] {
		t.Fatalf("equal preferences not shuffled: first hosts seen %v", first)
	}
}

func TestSortMXUnequalNeverReordered(t *testing.T) {
	in := []MX{{"c.test", 30}, {"a.test", 10}, {"b.test", 20}}
	want := []MX{{"a.test", 10}, {"b.test", 20}, {"c.test", 30}}
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		if got := SortMX(in, rnd); !slices.Equal(got, want) {
			t.Fatalf("SortMX = %v, want %v", got, want)
		}
	}
	// A nil source uses the global one.
	if got := SortMX(in, nil); !slices.Equal(got, want) {
		t.Fatalf("SortMX(nil rnd) = %v, want %v", got, want)
	}
}

func TestSortMXDuplicates(t *testing.T) {
	in := []MX{{"b.test", 20}, {"a.test", 10}, {"B.test", 5}, {"a.test", 10}, {"c.test", 30}}
	got := SortMX(in, rand.New(rand.NewPCG(1, 1)))
	// b.test is kept once, at its lowest preference; a.test once.
	want := []MX{{"b.test", 5}, {"a.test", 10}, {"c.test", 30}}
	if !slices.Equal(got, want) {
		t.Fatalf("SortMX = %v, want %v", got, want)
	}
	if got := SortMX(nil, nil); len(got) != 0 {
		t.Fatalf("SortMX(nil) = %v", got)
	}
}

func TestIsNullMX(t *testing.T) {
	for _, tc := range []struct {
		mxs  []MX
		want bool
	}{
		{[]MX{{".", 0}}, true},
		{[]MX{{".", 10}}, true},
		{nil, false},
		{[]MX{}, false},
		{[]MX{{"mx.test", 0}}, false},
		{[]MX{{".", 0}, {"mx.test", 10}}, false},
	} {
		if got := IsNullMX(tc.mxs); got != tc.want {
			t.Errorf("IsNullMX(%v) = %v, want %v", tc.mxs, got, tc.want)
		}
	}
}

func TestValidHost(t *testing.T) {
	for name, want := range map[string]bool{
		"mx.example.com":                  true,
		"a":                               true,
		"xn--bcher-kva.example":           true,
		"1mail.example.com":               true,
		"mx-1.example.com":                true,
		"":                                false,
		"bad_host.example":                false,
		"-mx.example.com":                 false,
		"mx-.example.com":                 false,
		"mx..example.com":                 false,
		"192.0.2.7":                       false,
		"mx.example.123":                  false,
		"m x.example":                     false,
		string(make([]byte, 64)) + ".com": false,
	} {
		if got := validHost(name); got != want {
			t.Errorf("validHost(%q) = %v, want %v", name, got, want)
		}
	}
	long := ""
	for len(long) < 250 {
		long += "abcdefghi."
	}
	if validHost(long + "abcd") {
		t.Errorf("validHost accepted a %d-octet name", len(long)+4)
	}
}

func TestErrorClassification(t *testing.T) {
	nf := &Error{Name: "x.test", Err: errors.New("custom"), NotFound: true}
	if !errors.Is(nf, ErrNotFound) || !IsNotFound(nf) || IsTemporary(nf) {
		t.Fatalf("NotFound error not classified: %v", nf)
	}
	wrapped := fmt.Errorf("routing: %w", &Error{Name: "y.test", Err: errors.New("timeout"), Temporary: true})
	if !IsTemporary(wrapped) || IsNotFound(wrapped) || errors.Is(wrapped, ErrNotFound) {
		t.Fatalf("Temporary error not classified: %v", wrapped)
	}
	if got := wrapped.Error(); got != "routing: dns lookup y.test: timeout" {
		t.Fatalf("Error() = %q", got)
	}
	if IsTemporary(errors.New("plain")) || IsNotFound(nil) {
		t.Fatal("non-DNS errors classified as DNS errors")
	}
}
