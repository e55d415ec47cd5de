package smtpserver

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
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/policy"
)

// This file is the in-process test harness: a Server on a loopback
// listener with a fake spool, the real recipient policy and a fixed clock,
// and a small line-oriented SMTP client that the transcript runner and the
// Go-coded tests share.

const testHostname = "mx.example.com"

// fixedNow is the clock of every test server: the date of the example
// exchange in ../shared/seed/smtp-session.txt.
var fixedNow = time.Date(2008, time.January, 15, 16, 2, 43, 0, time.FixedZone("", -5*3600))

// ioTimeout bounds every single read or write the test client does, so a
// server that stops answering fails the test instead of hanging it.
const ioTimeout = 5 * time.Second

var errDiskFull = errors.New("fake spool: no space left on device")

// Spool failure modes of fakeSpool.
const (
	failNone   = ""
	failCreate = "create" // Create fails
	failHeader = "header" // the first Write (the Received field) fails
	failWrite  = "write"  // every Write after the first fails
	failCommit = "commit" // Commit fails
)

// spooled is one committed message as the fake spool saw it.
type spooled struct {
	env  envelope.Envelope
	data []byte
}

// fakeSpool implements Spooler in memory. It records committed messages,
// can be told to fail like a full disk, and notes any breach of the
// SpoolWriter contract (use after Commit/Abort, writers never finished).
type fakeSpool struct {
	mu        sync.Mutex
	fail      string
	seq       int
	open      int // writers neither committed nor aborted
	aborted   int
	committed []spooled
	problems  []string
}

func (f *fakeSpool) setFail(mode string) {
	f.mu.Lock()
	f.fail = mode
	f.mu.Unlock()
}

func (f *fakeSpool) Create(env *envelope.Envelope) (SpoolWriter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == failCreate {
		return nil, errDiskFull
	}
	f.seq++
	// Upper-case letters and digits, like the real spool's IDs.
	env.ID = fmt.Sprintf("Q%04d", f.seq)
	f.open++
	return &fakeWriter{f: f, env: env}, nil
}

// messages returns a copy of the committed messages.
func (f *fakeSpool) messages() []spooled {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]spooled(nil), f.committed...)
}

// state returns the counters at one instant.
func (f *fakeSpool) state() (open, aborted, committed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open, f.aborted, len(f.committed)
}

type fakeWriter struct {
	f      *fakeSpool
	env    *envelope.Envelope
	buf    bytes.Buffer
	writes int
	done   bool
}

func (w *fakeWriter) Write(p []byte) (int, error) {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.done {
		w.f.problems = append(w.f.problems, "Write after Commit/Abort of "+w.env.ID)
		return 0, errors.New("fake spool: write after close")
	}
	w.writes++
	if w.f.fail == failHeader && w.writes == 1 || w.f.fail == failWrite && w.writes > 1 {
		return 0, errDiskFull
	}
	return w.buf.Write(p)
}

func (w *fakeWriter) Commit() error {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.done {
		w.f.problems = append(w.f.problems, "Commit after Commit/Abort of "+w.env.ID)
		return errors.New("fake spool: commit after close")
	}
	// Like spool.Writer.Commit: on error the message is gone.
	w.done = true
	w.f.open--
	if w.f.fail == failCommit {
		return errDiskFull
	}
	env := *w.env
	env.Recipients = append([]envelope.Recipient(nil), w.env.Recipients...)
	w.f.committed = append(w.f.committed, spooled{env: env, data: bytes.Clone(w.buf.Bytes())})
	return nil
}

func (w *fakeWriter) Abort() {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if w.done {
		return // allowed, as with spool.Writer
	}
	w.done = true
	w.f.open--
	w.f.aborted++
}

// testPolicy is the real policy with domain example.com, users alice and
// theboss, postmaster as an alias of alice, and "+" plus-addressing.
func testPolicy(tb testing.TB) *policy.Policy {
	tb.Helper()
	p, err := policy.New(policy.Options{
		Domains:            map[string]policy.Domain{"example.com": {Users: []string{"alice", "theboss"}}},
		Aliases:            map[string][]string{"postmaster@example.com": {"alice@example.com"}},
		RecipientDelimiter: "+",
	})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

var (
	tlsOnce sync.Once
	tlsConf *tls.Config
	tlsErr  error
)

// testTLS returns the server TLS configuration, made once per test binary.
func testTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	tlsOnce.Do(func() { tlsConf, tlsErr = SelfSignedTLS(testHostname, time.Now()) })
	if tlsErr != nil {
		tb.Fatal(tlsErr)
	}
	return tlsConf
}

// syncBuffer collects the server log for display when a test fails.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is a running Server and what the test observes of it.
type testServer struct {
	srv      *Server
	addr     string
	spool    *fakeSpool
	logs     *syncBuffer
	serveErr chan error
	stopped  bool
}

// baseOptions are the options of every test server before a test changes them.
func baseOptions(tb testing.TB, spool *fakeSpool, logs io.Writer) Options {
	tb.Helper()
	return Options{
		Hostname:           testHostname,
		MaxMessageSize:     1000000,
		MaxRecipients:      100,
		MaxReceivedHeaders: 30,
		MaxErrors:          10,
		CommandTimeout:     10 * time.Second,
		DataTimeout:        10 * time.Second,
		Policy:             testPolicy(tb),
		PostmasterDomain:   "example.com",
		Spooler:            spool,
		Logger:             slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:                func() time.Time { return fixedNow },
	}
}

// startServer serves on a new 127.0.0.1:0 listener; mod may change the options.
func startServer(tb testing.TB, mod func(*Options)) *testServer {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return startServerOn(tb, l, mod)
}

// startServerOn serves on l. Cleanup shuts the server down, checks that
// Serve returned ErrServerClosed and that every spool writer was finished,
// and shows the server log if the test failed.
func startServerOn(tb testing.TB, l net.Listener, mod func(*Options)) *testServer {
	tb.Helper()
	ts := &testServer{spool: &fakeSpool{}, logs: &syncBuffer{}, serveErr: make(chan error, 1), addr: l.Addr().String()}
	opts := baseOptions(tb, ts.spool, ts.logs)
	if mod != nil {
		mod(&opts)
	}
	ts.srv = New(opts)
	go func() { ts.serveErr <- ts.srv.Serve(l) }()
	tb.Cleanup(func() {
		if !ts.stopped {
			ts.stop(tb)
		}
		if tb.Failed() {
			tb.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

// stop shuts the server down (within a few seconds) and checks the spool
// contract: after the last session, no writer is left open.
func (ts *testServer) stop(tb testing.TB) {
	tb.Helper()
	ts.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		tb.Errorf("Shutdown: %v", err)
	}
	select {
	case err := <-ts.serveErr:
		if !errors.Is(err, ErrServerClosed) {
			tb.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(ioTimeout):
		tb.Errorf("Serve did not return after Shutdown")
	}
	ts.spool.mu.Lock()
	defer ts.spool.mu.Unlock()
	if ts.spool.open != 0 {
		tb.Errorf("%d spool writers neither committed nor aborted", ts.spool.open)
	}
	for _, p := range ts.spool.problems {
		tb.Errorf("spool contract: %s", p)
	}
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is a test SMTP client working line by line.
type client struct {
	tb   testing.TB
	raw  net.Conn // the TCP connection
	conn net.Conn // raw, or the TLS connection over it
	br   *bufio.Reader
	out  bytes.Buffer // bytes queued by queue/queueRaw, sent by flush
}

func dial(tb testing.TB, addr string) *client {
	tb.Helper()
	return dialFrom(tb, addr, nil)
}

// dialFrom connects from the local address local (nil: any).
func dialFrom(tb testing.TB, addr string, local net.Addr) *client {
	tb.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: local}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &client{tb: tb, raw: c, conn: c, br: bufio.NewReader(c)}
}

// queue adds command lines (CRLF appended) to the next write.
func (c *client) queue(lines ...string) {
	for _, l := range lines {
		c.out.WriteString(l)
		c.out.WriteString("\r\n")
	}
}

// queueRaw adds bytes as they are to the next write.
func (c *client) queueRaw(s string) { c.out.WriteString(s) }

// flush sends what was queued in one write: a pipelined group.
func (c *client) flush() {
	c.tb.Helper()
	if c.out.Len() == 0 {
		return
	}
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.conn.Write(c.out.Bytes()); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
	c.out.Reset()
}

// send queues lines and flushes.
func (c *client) send(lines ...string) {
	c.tb.Helper()
	c.queue(lines...)
	c.flush()
}

// line reads one server line, without CRLF. Server lines must end in CRLF.
func (c *client) line() (string, error) {
	c.tb.Helper()
	c.flush()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	l, err := c.br.ReadString('\n')
	if err != nil {
		if l != "" {
			return "", fmt.Errorf("partial line %q: %w", l, err)
		}
		return "", err
	}
	if !strings.HasSuffix(l, "\r\n") {
		return "", fmt.Errorf("reply line %q does not end in CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

// expect reads one line and matches it against pattern (see compilePattern).
// It returns the queue ID if the pattern has {id}.
func (c *client) expect(pattern string) string {
	c.tb.Helper()
	id, err := c.expectErr(pattern)
	if err != nil {
		c.tb.Fatal(err)
	}
	return id
}

func (c *client) expectErr(pattern string) (string, error) {
	c.tb.Helper()
	l, err := c.line()
	if err != nil {
		return "", fmt.Errorf("want %q, got error %v", pattern, err)
	}
	m := compilePattern(pattern, "").FindStringSubmatch(l)
	if m == nil {
		return "", fmt.Errorf("reply mismatch\n got: %q\nwant: %q", l, pattern)
	}
	if len(m) > 1 {
		return m[1], nil
	}
	return "", nil
}

// reply reads one whole reply (all its lines).
func (c *client) reply() []string {
	c.tb.Helper()
	var lines []string
	for {
		l, err := c.line()
		if err != nil {
			c.tb.Fatalf("reading reply: %v (so far %q)", err, lines)
		}
		lines = append(lines, l)
		if !replyLine.MatchString(l) {
			c.tb.Fatalf("malformed reply line %q", l)
		}
		if l[3] == ' ' {
			return lines
		}
	}
}

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)

// expectClosed checks that the server closed the connection and sent
// nothing more.
func (c *client) expectClosed() {
	c.tb.Helper()
	if err := c.expectClosedErr(); err != nil {
		c.tb.Fatal(err)
	}
}

func (c *client) expectClosedErr() error {
	l, err := c.line()
	if err == nil {
		return fmt.Errorf("want the connection closed, got %q", l)
	}
	if !isClosed(err) {
		return fmt.Errorf("want the connection closed, got %v", err)
	}
	return nil
}

// isClosed reports whether err is what a reader sees when the peer closed:
// EOF, or a reset when the peer closed with our bytes still unread.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// starttls runs the client side of the TLS handshake. tls12 pins TLS 1.2
// and one cipher suite so that the Received field is the same on every
// machine (TLS 1.3 picks its suite by the CPU's AES support).
func (c *client) starttls(tls12 bool) {
	c.tb.Helper()
	if c.br.Buffered() > 0 {
		c.tb.Fatalf("server sent %d bytes before the TLS handshake", c.br.Buffered())
	}
	cfg := &tls.Config{ServerName: testHostname, InsecureSkipVerify: true} // the test server's certificate is self-signed
	if tls12 {
		cfg.MaxVersion = tls.VersionTLS12
		cfg.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	}
	tc := tls.Client(c.raw, cfg)
	c.raw.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.tb.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.br = bufio.NewReader(tc)
}

// compilePattern turns an expected line into an anchored regexp (see patternRE).
func compilePattern(p, id string) *regexp.Regexp {
	return regexp.MustCompile("^" + patternRE(p, id) + "$")
}

// patternRE turns an expected line into regexp syntax. The text is literal
// except for the placeholders {id} (a queue ID: id itself when id is not
// empty, else any [0-9A-Z]+, captured) and {*} (any text on the line).
func patternRE(p, id string) string {
	var b strings.Builder
	for p != "" {
		i := strings.IndexByte(p, '{')
		if i < 0 {
			b.WriteString(regexp.QuoteMeta(p))
			break
		}
		b.WriteString(regexp.QuoteMeta(p[:i]))
		p = p[i:]
		switch {
		case strings.HasPrefix(p, "{id}"):
			if id != "" {
				b.WriteString(regexp.QuoteMeta(id))
			} else {
				b.WriteString("([0-9A-Z]+)")
			}
			p = p[len("{id}"):]
		case strings.HasPrefix(p, "{*}"):
			b.WriteString(".*")
			p = p[len("{*}"):]
		default:
			b.WriteString(regexp.QuoteMeta("{"))
			p = p[1:]
		}
	}
	return b.String()
}

// envelopeLines renders an envelope the way transcripts state it ("E:" lines).
func envelopeLines(e envelope.Envelope) []string {
	lines := []string{fmt.Sprintf("from=<%s> helo=%s ip=%s tls=%t smtputf8=%t 8bit=%t",
		e.Sender, e.ClientHelo, e.ClientIP, e.TLS, e.SMTPUTF8, e.Body8Bit)}
	for _, r := range e.Recipients {
		l := fmt.Sprintf("rcpt=<%s> mailbox=%s", r.Addr, r.Mailbox)
		if r.Orig != "" {
			l += " orig=<" + r.Orig + ">"
		}
		lines = append(lines, l)
	}
	return lines
}
