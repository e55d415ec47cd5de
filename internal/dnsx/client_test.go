package dnsx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// zone is the data most tests share. Addresses are documentation ranges,
// only ever handed back as data: nothing connects to them.
var zone = []string{
	"mx.test. 300 IN MX 10 mx1.mx.test.",
	"mx.test. 300 IN MX 20 mx2.mx.test.",
	"mx.test. 300 IN MX 20 mx3.mx.test.",
	"mx.test. 300 IN MX 30 MX4.Mx.Test.",
	"nomx.test. 300 IN A 192.0.2.1",
	"nullmx.test. 300 IN MX 0 .",
	"mixednull.test. 300 IN MX 0 .",
	"mixednull.test. 300 IN MX 10 mx1.mx.test.",
	"badmx.test. 300 IN MX 10 bad_host.test.",
	"badmx.test. 300 IN MX 20 192.0.2.7.",
	"badmx.test. 300 IN MX 30 good.test.",
	"allbad.test. 300 IN MX 10 -bad.test.",
	"host.test. 300 IN A 192.0.2.10",
	"host.test. 300 IN A 192.0.2.11",
	"host.test. 300 IN AAAA 2001:db8::10",
	"v6only.test. 300 IN AAAA 2001:db8::20",
	"par.test. 300 IN A 192.0.2.30",
	"par.test. 300 IN AAAA 2001:db8::30",
	"alias.test. 300 IN CNAME alias2.test.",
	"alias2.test. 300 IN CNAME host.test.",
	"partial.test. 300 IN CNAME host.test.",
	"loop1.test. 300 IN CNAME loop2.test.",
	"loop2.test. 300 IN CNAME loop1.test.",
	"dangling.test. 300 IN CNAME missing.test.",
	"mxalias.test. 300 IN CNAME mx.test.",
}

// client returns a Client for the given servers with short timeouts.
func client(servers ...string) *Client {
	return New(Options{Servers: servers, Timeout: time.Second, Attempts: 1})
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestLookupMXSeveralPrefs(t *testing.T) {
	s := newTestServer(t, zone...)
	got, err := client(s.Addr).LookupMX(ctxTimeout(t, 5*time.Second), "MX.Test")
	if err != nil {
		t.Fatal(err)
	}
	// As the server returned them (not sorted), lower-cased, no trailing dot.
	want := []MX{{"mx1.mx.test", 10}, {"mx2.mx.test", 20}, {"mx3.mx.test", 20}, {"mx4.mx.test", 30}}
	if !slices.Equal(got, want) {
		t.Fatalf("LookupMX = %v, want %v", got, want)
	}
	// The name went out fully qualified and in lower case.
	q := s.received()
	if len(q) != 1 || q[0].Name != "mx.test." || q[0].Qtype != dns.TypeMX || q[0].Net != "udp" {
		t.Fatalf("server received %+v, want one UDP MX query for mx.test.", q)
	}
}

func TestLookupMXNoDataVersusNXDomain(t *testing.T) {
	s := newTestServer(t, zone...)
	c := client(s.Addr)
	ctx := ctxTimeout(t, 5*time.Second)

	got, err := c.LookupMX(ctx, "nomx.test")
	if err != nil {
		t.Fatalf("NODATA: err = %v, want nil", err)
	}
	if got == nil || len(got) != 0 {
		t.Fatalf("NODATA: got %#v, want an empty non-nil slice", got)
	}

	got, err = c.LookupMX(ctx, "nosuch.test")
	if !errors.Is(err, ErrNotFound) || !IsNotFound(err) || IsTemporary(err) {
		t.Fatalf("NXDOMAIN: err = %v, want NotFound and not Temporary", err)
	}
	var de *Error
	if !errors.As(err, &de) || de.Name != "nosuch.test" || !de.NotFound {
		t.Fatalf("NXDOMAIN: err = %#v, want *Error for nosuch.test", err)
	}
	if got != nil {
		t.Fatalf("NXDOMAIN: got %v, want nil", got)
	}
}

func TestLookupMXNull(t *testing.T) {
	s := newTestServer(t, zone...)
	c := client(s.Addr)
	ctx := ctxTimeout(t, 5*time.Second)

	got, err := c.LookupMX(ctx, "nullmx.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []MX{{".", 0}}) || !IsNullMX(got) {
		t.Fatalf("null MX: got %v, want [{. 0}] recognised by IsNullMX", got)
	}

	// "." beside a real host is not a null MX: the real host is kept.
	got, err = c.LookupMX(ctx, "mixednull.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []MX{{"mx1.mx.test", 10}}) || IsNullMX(got) {
		t.Fatalf("mixed null MX: got %v, want [{mx1.mx.test 10}]", got)
	}
}

func TestLookupMXInvalidHosts(t *testing.T) {
	s := newTestServer(t, zone...)
	c := client(s.Addr)
	ctx := ctxTimeout(t, 5*time.Second)

	got, err := c.LookupMX(ctx, "badmx.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []MX{{"good.test", 30}}) {
		t.Fatalf("got %v, want only the valid host good.test", got)
	}

	_, err = c.LookupMX(ctx, "allbad.test")
	if !errors.Is(err, ErrBadMX) || IsNotFound(err) || IsTemporary(err) {
		t.Fatalf("all MX invalid: err = %v, want ErrBadMX, permanent", err)
	}
}

func TestLookupIPBothFamilies(t *testing.T) {
	s := newTestServer(t, zone...)
	c := client(s.Addr)
	ctx := ctxTimeout(t, 5*time.Second)

	got, err := c.LookupIP(ctx, "host.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::10"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("LookupIP = %v, want %v", got, want)
	}
	var a, aaaa int
	for _, q := range s.received() {
		switch q.Qtype {
		case dns.TypeA:
			a++
		case dns.TypeAAAA:
			aaaa++
		}
	}
	if a != 1 || aaaa != 1 {
		t.Fatalf("server got %d A and %d AAAA queries, want 1 each", a, aaaa)
	}

	got, err = c.LookupIP(ctx, "v6only.test")
	if err != nil || !slices.Equal(got, []netip.Addr{netip.MustParseAddr("2001:db8::20")}) {
		t.Fatalf("v6only: got %v, %v", got, err)
	}

	got, err = c.LookupIP(ctx, "mx.test") // exists, no addresses
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no addresses: got %#v, %v; want empty, nil", got, err)
	}

	_, err = c.LookupIP(ctx, "nosuch.test")
	if !IsNotFound(err) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("NXDOMAIN: err = %v, want NotFound", err)
	}
}

func TestLookupIPQueriesInParallel(t *testing.T) {
	s := newTestServer(t, zone...)
	// Each query is held until the other has arrived; asked one after the
	// other, the first would wait past the client's timeout.
	s.expectRendezvous("par.test.")
	c := New(Options{Servers: []string{s.Addr}, Timeout: 1500 * time.Millisecond, Attempts: 1})
	got, err := c.LookupIP(ctxTimeout(t, 5*time.Second), "par.test")
	if err != nil {
		t.Fatalf("LookupIP: %v (A and AAAA not in flight together?)", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %v, want an IPv4 and an IPv6 address", got)
	}
}

func TestLookupIPLiteral(t *testing.T) {
	// No server at all: a literal needs no query.
	c := New(Options{Servers: []string{silentServer(t)}, Timeout: 100 * time.Millisecond, Attempts: 1})
	got, err := c.LookupIP(ctxTimeout(t, 5*time.Second), "2001:db8::1")
	if err != nil || !slices.Equal(got, []netip.Addr{netip.MustParseAddr("2001:db8::1")}) {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestCNAME(t *testing.T) {
	s := newTestServer(t, zone...)
	s.mark(s.noChase, "partial.test.")
	c := client(s.Addr)
	ctx := ctxTimeout(t, 5*time.Second)

	want := []netip.Addr{
		netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("2001:db8::10"),
	}
	// A two-link chain the server resolves within the answer.
	got, err := c.LookupIP(ctx, "alias.test")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("alias.test: got %v, %v; want %v", got, err, want)
	}
	for _, q := range s.received() {
		if q.Name != "alias.test." {
			t.Fatalf("chain in the answer should need no further query, got %+v", q)
		}
	}

	// A chain the server leaves unfinished: the client asks for its end.
	got, err = c.LookupIP(ctx, "partial.test")
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("partial.test: got %v, %v; want %v", got, err, want)
	}

	mxs, err := c.LookupMX(ctx, "mxalias.test")
	if err != nil || len(mxs) != 4 {
		t.Fatalf("MX through CNAME: got %v, %v", mxs, err)
	}

	_, err = c.LookupIP(ctx, "dangling.test")
	if !IsNotFound(err) {
		t.Fatalf("CNAME to a missing name: err = %v, want NotFound", err)
	}

	_, err = c.LookupIP(ctx, "loop1.test")
	if err == nil || !errors.Is(err, errCNAMELoop) || !IsTemporary(err) {
		t.Fatalf("CNAME loop: err = %v, want a Temporary loop error", err)
	}
}

func TestServfailIsTemporary(t *testing.T) {
	s := newTestServer(t, zone...)
	s.mark(s.servfail, "mx.test.")
	_, err := New(Options{Servers: []string{s.Addr}, Timeout: time.Second, Attempts: 2}).
		LookupMX(ctxTimeout(t, 5*time.Second), "mx.test")
	if !IsTemporary(err) || IsNotFound(err) {
		t.Fatalf("err = %v, want Temporary", err)
	}
	if !strings.Contains(err.Error(), "SERVFAIL") {
		t.Errorf("error %q does not name SERVFAIL", err)
	}
	if n := len(s.received()); n != 2 {
		t.Errorf("server asked %d times, want 2 (Attempts)", n)
	}
}

func TestWrongQuestionRejected(t *testing.T) {
	s := newTestServer(t, zone...)
	s.mark(s.wrongQ, "mx.test.")
	_, err := client(s.Addr).LookupMX(ctxTimeout(t, 5*time.Second), "mx.test")
	if !IsTemporary(err) || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("err = %v, want a Temporary mismatch error", err)
	}
}

func TestSilentServerTimesOut(t *testing.T) {
	c := New(Options{Servers: []string{silentServer(t)}, Timeout: 200 * time.Millisecond, Attempts: 2})
	start := time.Now()
	_, err := c.LookupMX(ctxTimeout(t, 10*time.Second), "mx.test")
	elapsed := time.Since(start)
	if !IsTemporary(err) || IsNotFound(err) {
		t.Fatalf("err = %v, want Temporary", err)
	}
	// Two attempts of 200ms each: not sooner (it did wait), not much later.
	if elapsed < 350*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("took %v, want about 400ms", elapsed)
	}
}

func TestContextBoundsLookup(t *testing.T) {
	c := New(Options{Servers: []string{silentServer(t)}, Timeout: 5 * time.Second, Attempts: 1})

	start := time.Now()
	_, err := c.LookupIP(ctxTimeout(t, 300*time.Millisecond), "host.test")
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("deadline: took %v, want about 300ms", elapsed)
	}
	if !IsTemporary(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: err = %v, want Temporary wrapping DeadlineExceeded", err)
	}

	// Cancellation without a deadline ends the lookup too.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	_, err = c.LookupMX(ctx, "mx.test")
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("cancel: took %v, want about 200ms", elapsed)
	}
	if !IsTemporary(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: err = %v, want Temporary wrapping Canceled", err)
	}
}

func TestFailoverToNextServer(t *testing.T) {
	s := newTestServer(t, zone...)
	c := New(Options{Servers: []string{silentServer(t), s.Addr}, Timeout: 200 * time.Millisecond, Attempts: 1})
	got, err := c.LookupMX(ctxTimeout(t, 5*time.Second), "nullmx.test")
	if err != nil || !IsNullMX(got) {
		t.Fatalf("got %v, %v; want the second server's null MX", got, err)
	}
}

func TestTruncatedRetriesOverTCP(t *testing.T) {
	// 60 MX records with long names do not fit in 1232 bytes.
	var big []string
	var want []MX
	for i := range 60 {
		host := fmt.Sprintf("mail-exchanger-number-%02d.a-rather-long-domain-name.test", i)
		big = append(big, fmt.Sprintf("big.test. 300 IN MX %d %s.", i, host))
		want = append(want, MX{host, uint16(i)})
	}
	s := newTestServer(t, big...)
	got, err := client(s.Addr).LookupMX(ctxTimeout(t, 5*time.Second), "big.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d records %v, want all 60", len(got), got)
	}
	q := s.received()
	if len(q) != 2 || q[0].Net != "udp" || q[1].Net != "tcp" {
		t.Fatalf("server received %+v, want UDP then TCP", q)
	}
}

func TestBadNames(t *testing.T) {
	c := New(Options{Servers: []string{silentServer(t)}, Timeout: 100 * time.Millisecond, Attempts: 1})
	for _, name := range []string{"", ".", "a..b", strings.Repeat("a", 64) + ".test"} {
		_, err := c.LookupMX(ctxTimeout(t, 5*time.Second), name)
		if !errors.Is(err, errBadName) || IsTemporary(err) {
			t.Errorf("LookupMX(%q): err = %v, want a permanent bad-name error", name, err)
		}
	}
}

func TestNewServers(t *testing.T) {
	c := New(Options{Servers: []string{"127.0.0.1", "127.0.0.1:5353", "::1", "[::1]:53"}})
	want := []string{"127.0.0.1:53", "127.0.0.1:5353", "[::1]:53", "[::1]:53"}
	if got := c.serverList(); !slices.Equal(got, want) {
		t.Fatalf("servers = %v, want %v", got, want)
	}
	if c.timeout != defaultTimeout || c.attempts != defaultAttempts {
		t.Fatalf("defaults: timeout %v attempts %d", c.timeout, c.attempts)
	}
}
