package smtpclient

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/policy"
	"github.com/posthorn/posthorn/internal/smtpserver"
)

// This file holds the two kinds of peers the tests talk to: a real
// smtpserver.Server on loopback with an in-memory spool, and a scripted
// fake server whose every reply the test writes.

const ourHostname = "client.example.net"

// testTimeout bounds each test's calls, so a bug shows as a failure and
// not as a hung test binary.
const testTimeout = 10 * time.Second

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// received is one message the in-memory spool committed.
type received struct {
	env  envelope.Envelope
	data []byte
}

// memSpool is a smtpserver.Spooler that keeps committed messages.
type memSpool struct {
	mu   sync.Mutex
	seq  int
	msgs []received
}

func (s *memSpool) Create(env *envelope.Envelope) (smtpserver.SpoolWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	env.ID = fmt.Sprintf("T%04d", s.seq)
	return &memWriter{s: s, env: env}, nil
}

func (s *memSpool) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

type memWriter struct {
	s   *memSpool
	env *envelope.Envelope
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) Abort()                      {}
func (w *memWriter) Commit() error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	env := *w.env
	env.Recipients = append([]envelope.Recipient(nil), w.env.Recipients...)
	w.s.msgs = append(w.s.msgs, received{env: env, data: bytes.Clone(w.buf.Bytes())})
	return nil
}

// startServer runs a Posthorn SMTP server on 127.0.0.1 for the domain
// example.com with the users alice and bob. withTLS offers STARTTLS with
// a self-signed certificate.
func startServer(t testing.TB, withTLS bool, maxSize int64) (string, *memSpool) {
	t.Helper()
	pol, err := policy.New(policy.Options{Domains: map[string]policy.Domain{
		"example.com": {Users: []string{"alice", "bob"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var tlsConf *tls.Config
	if withTLS {
		if tlsConf, err = smtpserver.SelfSignedTLS("mx.example.com", time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	sp := &memSpool{}
	srv := smtpserver.New(smtpserver.Options{
		Hostname:       "mx.example.com",
		MaxMessageSize: maxSize,
		TLSConfig:      tlsConf,
		Policy:         pol,
		Spooler:        sp,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, smtpserver.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String(), sp
}

// peer is the server side of one connection to the scripted fake server.
type peer struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
	// lines the client sent, in order (after STARTTLS too)
	mu    sync.Mutex
	lines []string
}

// send writes raw reply lines, each ended with CRLF, in one write: a
// pipelining client gets them as a group, as from a real server.
func (p *peer) send(lines ...string) {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	if _, err := io.WriteString(p.conn, b.String()); err != nil {
		p.t.Errorf("fake server: write %q: %v", lines, err)
	}
}

// line reads one line from the client, without CRLF; "" and false at EOF.
func (p *peer) line() (string, bool) {
	p.conn.SetReadDeadline(time.Now().Add(testTimeout))
	l, err := p.br.ReadString('\n')
	if err != nil {
		return "", false
	}
	if !strings.HasSuffix(l, "\r\n") {
		p.t.Errorf("fake server: line without CRLF: %q", l)
	}
	l = strings.TrimSuffix(l, "\r\n")
	p.mu.Lock()
	p.lines = append(p.lines, l)
	p.mu.Unlock()
	return l, true
}

// expect reads one line and checks that it starts with prefix.
func (p *peer) expect(prefix string) string {
	p.t.Helper()
	l, ok := p.line()
	if !ok {
		p.t.Errorf("fake server: connection ended, want %q", prefix)
		return ""
	}
	if !strings.HasPrefix(l, prefix) {
		p.t.Errorf("fake server: got %q, want %q...", l, prefix)
	}
	return l
}

// data reads message text up to the line "." and returns it as sent (stuffed).
func (p *peer) data() string {
	p.t.Helper()
	var b strings.Builder
	for {
		l, ok := p.line()
		if !ok {
			p.t.Errorf("fake server: connection ended in DATA")
			return b.String()
		}
		if l == "." {
			return b.String()
		}
		b.WriteString(l + "\r\n")
	}
}

// expectEOF checks that the client sends nothing more and closes.
func (p *peer) expectEOF() {
	p.t.Helper()
	if l, ok := p.line(); ok {
		p.t.Errorf("fake server: got %q, want the connection closed", l)
	}
}

// startTLS turns the connection into TLS with a self-signed certificate.
func (p *peer) startTLS() {
	conf, err := smtpserver.SelfSignedTLS("fake.example.org", time.Now())
	if err != nil {
		p.t.Errorf("fake server: %v", err)
		return
	}
	tc := tls.Server(p.conn, conf)
	tc.SetDeadline(time.Now().Add(testTimeout))
	if err := tc.Handshake(); err != nil {
		p.t.Errorf("fake server: TLS handshake: %v", err)
		return
	}
	p.conn, p.br = tc, bufio.NewReader(tc)
}

// sent returns the lines the client sent so far.
func (p *peer) sent() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// fakeServer accepts one connection on 127.0.0.1 and runs script on it.
// The returned peer is valid once the script has started; wait blocks
// until the script is done (cleanup waits too).
func fakeServer(t testing.TB, script func(p *peer)) (addr string, wait func() *peer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan *peer, 1)
	go func() {
		defer l.Close()
		conn, err := l.Accept()
		if err != nil {
			done <- nil
			return
		}
		defer conn.Close()
		p := &peer{t: t, conn: conn, br: bufio.NewReader(conn)}
		script(p)
		done <- p
	}()
	var once sync.Once
	var p *peer
	wait = func() *peer {
		once.Do(func() {
			select {
			case p = <-done:
			case <-time.After(2 * testTimeout):
				t.Errorf("fake server script did not finish")
			}
		})
		return p
	}
	t.Cleanup(func() { l.Close(); wait() })
	return l.Addr().String(), wait
}

// ehlo answers the greeting and EHLO with the given extension lines.
func (p *peer) greetAndEhlo(exts ...string) {
	p.send("220 fake.example.org ESMTP")
	p.expect("EHLO " + ourHostname)
	lines := append([]string{"fake.example.org"}, exts...)
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		p.send("250" + sep + l)
	}
}

func opts() Options { return Options{Hostname: ourHostname} }
