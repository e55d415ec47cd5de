package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/dnsx"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/policy"
	"github.com/posthorn/posthorn/internal/smtpclient"
)

// wantStatus checks one result's status and, when code is not 0, its codes.
func wantStatus(t *testing.T, what string, res deliver.Result, st envelope.Status, code int, enh string) {
	t.Helper()
	if res.Status != st {
		t.Errorf("%s: status %q (err %v), want %q", what, res.Status, res.Err, st)
		return
	}
	if code == 0 {
		if res.Err != nil && st == envelope.Delivered {
			t.Errorf("%s: delivered with error %v", what, res.Err)
		}
		return
	}
	if res.Err == nil || res.Err.Code != code || res.Err.Enhanced != enh {
		t.Errorf("%s: error %v, want %d %s", what, res.Err, code, enh)
	}
}

func TestMXPreferenceOrder(t *testing.T) {
	w := newWorld(t, "127.0.0.2", "127.0.0.3")
	best := realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	worse := realServer(t, w, "127.0.0.3", anyUser("a.test"), nil)
	res := &dnsx.Mock{
		// Listed worst first: the order must come from the preferences.
		MX: map[string][]dnsx.MX{"a.test": {{Host: "mx2.a.test", Pref: 20}, {Host: "mx1.a.test", Pref: 10}}},
		IP: map[string][]netip.Addr{"mx1.a.test": {addr("127.0.0.2")}, "mx2.a.test": {addr("127.0.0.3")}},
	}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("bob@a.test")))
	wantStatus(t, "bob", out[0], envelope.Delivered, 0, "")
	if n := len(best.messages()); n != 1 {
		t.Errorf("preferred MX got %d messages, want 1", n)
	}
	if n := len(worse.messages()); n != 0 {
		t.Errorf("backup MX got %d messages, want 0", n)
	}
	msgs := best.messages()
	if len(msgs) == 1 {
		if msgs[0].env.Sender != "sender@here.test" || !slices.Equal(msgs[0].rcptAddrs(), []string{"bob@a.test"}) {
			t.Errorf("envelope %+v", msgs[0].env)
		}
		if !strings.Contains(string(msgs[0].data), "\r\n.leading dot\r\n") {
			t.Errorf("body lost its leading dot line: %q", msgs[0].data)
		}
	}
}

func TestNextMXWhenConnectionRefused(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	sp := realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	res := &dnsx.Mock{
		MX: map[string][]dnsx.MX{"a.test": {{Host: "dead.a.test", Pref: 10}, {Host: "alive.a.test", Pref: 20}}},
		// Nothing listens on 127.0.0.5 at this port.
		IP: map[string][]netip.Addr{"dead.a.test": {addr("127.0.0.5")}, "alive.a.test": {addr("127.0.0.2")}},
	}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("bob@a.test")))
	wantStatus(t, "bob", out[0], envelope.Delivered, 0, "")
	if n := len(sp.messages()); n != 1 {
		t.Errorf("second MX got %d messages, want 1", n)
	}
}

func TestNextMXAfter421Greeting(t *testing.T) {
	w := newWorld(t, "127.0.0.2", "127.0.0.3")
	busy := fakeServer(t, w, "127.0.0.3", script{greeting: "421 4.3.2 too busy"})
	sp := realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	res := &dnsx.Mock{
		MX: map[string][]dnsx.MX{"a.test": {{Host: "busy.a.test", Pref: 10}, {Host: "ok.a.test", Pref: 20}}},
		IP: map[string][]netip.Addr{"busy.a.test": {addr("127.0.0.3")}, "ok.a.test": {addr("127.0.0.2")}},
	}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("bob@a.test")))
	wantStatus(t, "bob", out[0], envelope.Delivered, 0, "")
	if conns, _ := busy.counts(); conns != 1 {
		t.Errorf("busy MX saw %d connections, want 1", conns)
	}
	if n := len(sp.messages()); n != 1 {
		t.Errorf("second MX got %d messages, want 1", n)
	}
}

func TestAllHostsBusyStaysPending(t *testing.T) {
	w := newWorld(t, "127.0.0.3")
	fakeServer(t, w, "127.0.0.3", script{greeting: "421 4.3.2 too busy"})
	res := &dnsx.Mock{
		MX: map[string][]dnsx.MX{"a.test": {{Host: "busy.a.test", Pref: 10}}},
		IP: map[string][]netip.Addr{"busy.a.test": {addr("127.0.0.3")}},
	}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("bob@a.test")))
	wantStatus(t, "bob", out[0], envelope.Pending, 421, "4.3.2")
	if out[0].Err != nil && strings.HasPrefix(out[0].Err.Message, "4.3.2") {
		t.Errorf("enhanced code left in the text: %q", out[0].Err.Message)
	}
	if out[0].Err != nil && !strings.Contains(out[0].Err.Message, "too busy") {
		t.Errorf("the server's text is lost: %q", out[0].Err.Message)
	}
}

func TestImplicitMX(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	sp := realServer(t, w, "127.0.0.2", anyUser("b.test"), nil)
	// b.test has an address and no MX records.
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"b.test": {addr("127.0.0.2")}}}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("carol@b.test")))
	wantStatus(t, "carol", out[0], envelope.Delivered, 0, "")
	if n := len(sp.messages()); n != 1 {
		t.Errorf("server got %d messages, want 1", n)
	}
}

func TestDNSOutcomes(t *testing.T) {
	res := &dnsx.Mock{
		MX: map[string][]dnsx.MX{
			"null.test":   {{Host: ".", Pref: 0}},
			"nohost.test": {{Host: "mx.nohost.test", Pref: 10}},
		},
		IP: map[string][]netip.Addr{"empty.test": {}},
		Fail: map[string]error{
			"servfail.test":  &dnsx.Error{Name: "servfail.test", Err: errors.New("SERVFAIL"), Temporary: true},
			"mx.nohost.test": &dnsx.Error{Name: "mx.nohost.test", Err: errors.New("timeout"), Temporary: true},
		},
	}
	noDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		t.Errorf("dialled %s although DNS settled the outcome", addr)
		return nil, errors.New("no dialling in this test")
	}
	r := newRemote(t, 25, res, func(o *Options) { o.Dialer = noDial })
	cases := []struct {
		rcpt string
		st   envelope.Status
		code int
		enh  string
	}{
		{"x@nxdomain.test", envelope.Failed, 550, "5.1.2"},
		{"x@null.test", envelope.Failed, 556, "5.1.10"},
		{"x@servfail.test", envelope.Pending, 451, "4.4.3"},
		{"x@nohost.test", envelope.Pending, 451, "4.4.3"},
		{"x@empty.test", envelope.Failed, 550, "5.1.2"},
	}
	for _, c := range cases {
		out := r.Deliver(deliverCtx(t), request(testEnv(c.rcpt)))
		wantStatus(t, c.rcpt, out[0], c.st, c.code, c.enh)
	}
}

func TestPerRecipientResults(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	sp := realServer(t, w, "127.0.0.2", map[string]policy.Domain{"a.test": {Users: []string{"alice"}}}, nil)
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.2")}}}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("nobody@a.test", "alice@a.test")))
	wantStatus(t, "nobody", out[0], envelope.Failed, 550, "5.1.1")
	wantStatus(t, "alice", out[1], envelope.Delivered, 0, "")
	msgs := sp.messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages, want 1", len(msgs))
	}
	if got := msgs[0].rcptAddrs(); !slices.Equal(got, []string{"alice@a.test"}) {
		t.Errorf("message recipients %v, want [alice@a.test]", got)
	}
}

func TestDataRefusedFailsAll(t *testing.T) {
	w := newWorld(t, "127.0.0.2", "127.0.0.3")
	f := fakeServer(t, w, "127.0.0.3", script{dataReply: "554 5.7.1 no mail from you"})
	backup := realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	res := &dnsx.Mock{
		MX: map[string][]dnsx.MX{"a.test": {{Host: "strict.a.test", Pref: 10}, {Host: "backup.a.test", Pref: 20}}},
		IP: map[string][]netip.Addr{"strict.a.test": {addr("127.0.0.3")}, "backup.a.test": {addr("127.0.0.2")}},
	}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("x@a.test", "y@a.test")))
	for i, name := range []string{"x", "y"} {
		wantStatus(t, name, out[i], envelope.Failed, 554, "5.7.1")
	}
	if out[0].Err != nil && !strings.Contains(out[0].Err.Message, "no mail from you") {
		t.Errorf("error message %q does not carry the server's text", out[0].Err.Message)
	}
	if len(f.saw("RCPT")) != 2 {
		t.Errorf("fake saw RCPT commands %v, want 2", f.saw("RCPT"))
	}
	if n := len(backup.messages()); n != 0 {
		t.Errorf("a permanent refusal was retried at the backup MX (%d messages)", n)
	}
}

func TestSilentServerTimesOut(t *testing.T) {
	w := newWorld(t, "127.0.0.3")
	fakeServer(t, w, "127.0.0.3", script{silent: true})
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.3")}}}
	r := newRemote(t, w.port, res, func(o *Options) { o.Timeouts.Greeting = 300 * time.Millisecond })
	start := time.Now()
	out := r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
	wantStatus(t, "x", out[0], envelope.Pending, 451, "4.4.1")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v despite a 300ms greeting timeout", d)
	}
}

func TestMXPointingToUsIsALoop(t *testing.T) {
	w := newWorld(t, "127.0.0.2", "127.0.0.3")
	realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	better := realServer(t, w, "127.0.0.3", anyUser("c.test"), nil)
	port := uint16(w.port)
	res := &dnsx.Mock{
		MX: map[string][]dnsx.MX{
			"a.test": {{Host: "us.test", Pref: 10}, {Host: "other.test", Pref: 20}},
			// We are the backup MX of c.test: only the better host may get it.
			"c.test": {{Host: "other.test", Pref: 10}, {Host: "us.test", Pref: 20}},
		},
		IP: map[string][]netip.Addr{"us.test": {addr("127.0.0.2")}, "other.test": {addr("127.0.0.3")}},
	}
	accepts := func() int32 { return w.lns["127.0.0.2"].accepts.Load() }

	// Our listener on 127.0.0.2 itself.
	r := newRemote(t, w.port, res, func(o *Options) {
		o.OwnAddrs = []netip.AddrPort{netip.AddrPortFrom(addr("127.0.0.2"), port)}
	})
	out := r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
	wantStatus(t, "MX is us", out[0], envelope.Failed, 554, "5.4.6")
	out = r.Deliver(deliverCtx(t), request(testEnv("y@c.test")))
	wantStatus(t, "we are the backup MX", out[0], envelope.Delivered, 0, "")
	if n := len(better.messages()); n != 1 {
		t.Errorf("better MX got %d messages, want 1", n)
	}

	// A listener on 0.0.0.0 answers on every loopback address.
	r = newRemote(t, w.port, res, func(o *Options) {
		o.OwnAddrs = []netip.AddrPort{netip.AddrPortFrom(netip.IPv4Unspecified(), port)}
	})
	out = r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
	wantStatus(t, "MX is us on 0.0.0.0", out[0], envelope.Failed, 554, "5.4.6")
	// The same port on another address is somebody else.
	r = newRemote(t, w.port, res, func(o *Options) {
		o.OwnAddrs = []netip.AddrPort{netip.AddrPortFrom(addr("127.0.0.2"), port+1)}
	})
	out = r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
	wantStatus(t, "other port", out[0], envelope.Delivered, 0, "")
	if n := accepts(); n != 1 {
		t.Errorf("127.0.0.2 accepted %d connections, want 1 (only when it was not us)", n)
	}
}

func TestTwoDomainsTwoTransactions(t *testing.T) {
	w := newWorld(t, "127.0.0.2", "127.0.0.3")
	spA := realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	spB := realServer(t, w, "127.0.0.3", anyUser("b.test"), nil)
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.2")}, "b.test": {addr("127.0.0.3")}}}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("x@a.test", "y@B.test", "z@a.test")))
	for i := range out {
		wantStatus(t, "rcpt", out[i], envelope.Delivered, 0, "")
	}
	a, b := spA.messages(), spB.messages()
	if len(a) != 1 || !slices.Equal(a[0].rcptAddrs(), []string{"x@a.test", "z@a.test"}) {
		t.Errorf("a.test server got %+v, want one message to x and z", a)
	}
	if len(b) != 1 || !slices.Equal(b[0].rcptAddrs(), []string{"y@b.test"}) {
		t.Errorf("b.test server got %+v, want one message to y", b)
	}
}

func TestSTARTTLSWhenOffered(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	sp := realServer(t, w, "127.0.0.2", anyUser("a.test"), serverTLS(t))
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.2")}}}
	r := newRemote(t, w.port, res, nil)
	out := r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
	wantStatus(t, "x", out[0], envelope.Delivered, 0, "")
	msgs := sp.messages()
	if len(msgs) != 1 || !msgs[0].env.TLS {
		t.Errorf("messages %+v: want one, received over TLS", msgs)
	}
}

func TestTLSFallbackToPlain(t *testing.T) {
	for _, fallback := range []bool{true, false} {
		w := newWorld(t, "127.0.0.2")
		f := fakeServer(t, w, "127.0.0.2", script{garbage: true})
		res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.2")}}}
		r := newRemote(t, w.port, res, func(o *Options) { o.TLSFallbackPlain = fallback })
		out := r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
		conns, msgs := f.counts()
		if fallback {
			wantStatus(t, "with fallback", out[0], envelope.Delivered, 0, "")
			if conns != 2 || msgs != 1 {
				t.Errorf("with fallback: %d connections, %d messages; want 2 and 1", conns, msgs)
			}
			if n := len(f.saw("STARTTLS")); n != 1 {
				t.Errorf("STARTTLS sent %d times, want once (not on the plain retry)", n)
			}
		} else {
			wantStatus(t, "without fallback", out[0], envelope.Pending, 451, "4.7.10")
			if conns != 1 || msgs != 0 {
				t.Errorf("without fallback: %d connections, %d messages; want 1 and 0", conns, msgs)
			}
		}
	}
}

func TestConnectionReuse(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	sp := realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.2")}}}
	r := newRemote(t, w.port, res, func(o *Options) { o.IdleTimeout = 400 * time.Millisecond })
	ln := w.lns["127.0.0.2"]
	for _, rcpt := range []string{"one@a.test", "two@a.test"} {
		out := r.Deliver(deliverCtx(t), request(testEnv(rcpt)))
		wantStatus(t, rcpt, out[0], envelope.Delivered, 0, "")
	}
	if n := ln.accepts.Load(); n != 1 {
		t.Errorf("two deliveries used %d connections, want 1", n)
	}
	// After the idle timeout the connection is gone: a new one is made.
	time.Sleep(600 * time.Millisecond)
	out := r.Deliver(deliverCtx(t), request(testEnv("three@a.test")))
	wantStatus(t, "three", out[0], envelope.Delivered, 0, "")
	if n := ln.accepts.Load(); n != 2 {
		t.Errorf("after the idle timeout: %d connections, want 2", n)
	}
	// Close empties the pool: the next delivery connects anew.
	r.Close()
	out = r.Deliver(deliverCtx(t), request(testEnv("four@a.test")))
	wantStatus(t, "four", out[0], envelope.Delivered, 0, "")
	if n := ln.accepts.Load(); n != 3 {
		t.Errorf("after Close: %d connections, want 3", n)
	}
	if n := len(sp.messages()); n != 4 {
		t.Errorf("server got %d messages, want 4", n)
	}
}

func TestSmarthostAuthOverSTARTTLS(t *testing.T) {
	w := newWorld(t, "127.0.0.3")
	cred := base64.StdEncoding.EncodeToString([]byte("\x00relayuser\x00s3cret"))
	srvTLS := serverTLS(t)
	f := fakeServer(t, w, "127.0.0.3", script{startTLS: srvTLS, authPlain: cred})
	leaf, err := x509.ParseCertificate(srvTLS.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	// The recipient domains are unknown to DNS: a smarthost does not look
	// them up.
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"smarthost.test": {addr("127.0.0.3")}}}
	r := newRemote(t, w.port, res, func(o *Options) {
		o.Port = 1 // MX delivery's port must not be used
		o.Smarthost = &Smarthost{Host: "smarthost.test", Port: w.port, TLS: TLSRequired, Username: "relayuser", Password: "s3cret"}
		o.SmarthostTLSConfig = &tls.Config{RootCAs: roots}
	})
	out := r.Deliver(deliverCtx(t), request(testEnv("x@far.test", "y@other.test")))
	for i := range out {
		wantStatus(t, "rcpt", out[i], envelope.Delivered, 0, "")
	}
	if got := f.saw("AUTH"); len(got) != 1 || got[0] != "AUTH PLAIN "+cred {
		t.Errorf("AUTH lines %q", got)
	}
	if n := len(f.saw("MAIL")); n != 1 {
		t.Errorf("%d transactions, want 1 for both domains", n)
	}
	if n := len(f.saw("RCPT")); n != 2 {
		t.Errorf("%d RCPT, want 2", n)
	}
}

func TestSmarthostImplicitTLS(t *testing.T) {
	w := newWorld(t, "127.0.0.3")
	f := fakeServer(t, w, "127.0.0.3", script{implicit: serverTLS(t)})
	r := newRemote(t, w.port, &dnsx.Mock{}, func(o *Options) {
		o.Smarthost = &Smarthost{Host: "127.0.0.3", Port: w.port, TLS: TLSImplicit}
		o.SmarthostTLSConfig = &tls.Config{InsecureSkipVerify: true}
	})
	out := r.Deliver(deliverCtx(t), request(testEnv("x@far.test")))
	wantStatus(t, "x", out[0], envelope.Delivered, 0, "")
	if _, msgs := f.counts(); msgs != 1 {
		t.Errorf("smarthost got %d messages, want 1", msgs)
	}
}

func TestSmarthostRequiredTLSMissing(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	sp := realServer(t, w, "127.0.0.2", anyUser("far.test"), nil)
	r := newRemote(t, w.port, &dnsx.Mock{}, func(o *Options) {
		o.Smarthost = &Smarthost{Host: "127.0.0.2", Port: w.port, TLS: TLSRequired}
	})
	out := r.Deliver(deliverCtx(t), request(testEnv("x@far.test")))
	wantStatus(t, "x", out[0], envelope.Pending, 451, "4.7.10")
	if out[0].Err != nil && !errors.Is(out[0].Err, smtpclient.ErrTLSRequired) {
		t.Errorf("error %v does not wrap ErrTLSRequired", out[0].Err)
	}
	if n := len(sp.messages()); n != 0 {
		t.Errorf("message sent in plain text to a TLS-required smarthost")
	}
}

func TestPerHostLimit(t *testing.T) {
	w := newWorld(t, "127.0.0.2")
	realServer(t, w, "127.0.0.2", anyUser("a.test"), nil)
	res := &dnsx.Mock{IP: map[string][]netip.Addr{"a.test": {addr("127.0.0.2")}}}
	r := newRemote(t, w.port, res, func(o *Options) { o.MaxPerHost = 1 })
	// Hold the only slot for the destination: a delivery must wait for it
	// and give up when its context ends.
	release, err := r.acquire(context.Background(), netip.AddrPortFrom(addr("127.0.0.2"), uint16(w.port)).String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	out := r.Deliver(ctx, request(testEnv("x@a.test")))
	wantStatus(t, "while busy", out[0], envelope.Pending, 451, "4.3.0")
	if n := w.lns["127.0.0.2"].accepts.Load(); n != 0 {
		t.Errorf("connected %d times beyond the per-host limit", n)
	}
	release()
	out = r.Deliver(deliverCtx(t), request(testEnv("x@a.test")))
	wantStatus(t, "after release", out[0], envelope.Delivered, 0, "")
}

// TestSmarthostImplicitTLSWithAuth: over implicit TLS (port 465 style) the
// password may go out at once, with no STARTTLS.
func TestSmarthostImplicitTLSWithAuth(t *testing.T) {
	w := newWorld(t, "127.0.0.3")
	cred := base64.StdEncoding.EncodeToString([]byte("\x00relayuser\x00s3cret"))
	f := fakeServer(t, w, "127.0.0.3", script{implicit: serverTLS(t), authPlain: cred})
	r := newRemote(t, w.port, &dnsx.Mock{}, func(o *Options) {
		o.Smarthost = &Smarthost{Host: "127.0.0.3", Port: w.port, TLS: TLSImplicit, Username: "relayuser", Password: "s3cret"}
		o.SmarthostTLSConfig = &tls.Config{InsecureSkipVerify: true}
	})
	out := r.Deliver(deliverCtx(t), request(testEnv("x@far.test")))
	wantStatus(t, "x", out[0], envelope.Delivered, 0, "")
	if got := f.saw("AUTH"); len(got) != 1 || got[0] != "AUTH PLAIN "+cred {
		t.Errorf("AUTH lines %q", got)
	}
	if got := f.saw("STARTTLS"); len(got) != 0 {
		t.Errorf("STARTTLS sent inside implicit TLS: %q", got)
	}
}
