//go:build unix

package smtpserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FuzzSession feeds arbitrary client bytes to one session and checks:
// no panic (also none recovered by the command dispatcher), no hang, every
// reply line well formed ("ddd text" or "ddd-text", 200-599, CRLF, the
// lines of a multi-line reply sharing their code), one committed message
// per "queued as" reply, and every spool writer finished.
//
// The seeds are the client side of every transcript plus the files in
// testdata/fuzz/FuzzSession.
func FuzzSession(f *testing.F) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range files {
		var in bytes.Buffer
		for _, st := range parseTranscript(f, file).steps {
			switch st.kind {
			case "C":
				in.WriteString(st.text + "\r\n")
			case "B":
				in.WriteString(st.text)
			}
		}
		f.Add(in.Bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) { fuzzSession(t, in) })
}

// chanListener hands out the connections sent on its channel.
type chanListener struct {
	ch        chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }

// socketPair returns the two ends of a connected Unix stream socket: with
// deadlines and half-close like TCP, but no port and no TIME_WAIT, so a
// fuzzer can make thousands a second.
func socketPair(tb testing.TB) (*net.UnixConn, *net.UnixConn) {
	tb.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close() // FileConn holds its own copy
		c, err := net.FileConn(f)
		if err != nil {
			tb.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

var (
	fuzzReplyLine = regexp.MustCompile(`^([2-5][0-9][0-9])([ -])[^\r\n]*$`)
	fuzzTLSReady  = regexp.MustCompile(`(?m)^220 (2\.0\.0 )?Ready to start TLS\r$`)
	fuzzQueued    = regexp.MustCompile(`^250 (2\.0\.0 )?Ok: queued as [0-9A-Z]+$`)
)

func fuzzSession(t *testing.T, in []byte) {
	spool := &fakeSpool{}
	logs := &syncBuffer{}
	srv := New(Options{
		Hostname:           testHostname,
		MaxMessageSize:     4096,
		MaxRecipients:      100,
		MaxReceivedHeaders: 3,
		MaxErrors:          10,
		// Backstops only: the client half-closes, so the server sees EOF.
		CommandTimeout: time.Second,
		DataTimeout:    time.Second,
		TLSConfig:      testTLS(t),
		Policy:         testPolicy(t),
		Spooler:        spool,
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
		Now:            func() time.Time { return fixedNow },
	})
	l := &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(l) }()
	cc, sc := socketPair(t)
	defer cc.Close()
	l.ch <- sc

	// Write and read at once: a server answering a long input can fill
	// the socket buffer before it has read everything.
	go func() {
		cc.Write(in) // fails when the server hung up first; that is fine
		cc.CloseWrite()
	}()
	cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(cc)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("session still running after 10s; output so far %q", out)
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("reading replies: %v", err)
		}
	}

	// The client sees EOF just before the session unregisters; waiting
	// for that spares Shutdown its 50ms poll, which would bound the
	// fuzzer to 20 inputs a second.
	for start := time.Now(); ; time.Sleep(100 * time.Microsecond) {
		srv.mu.Lock()
		n := len(srv.sessions)
		srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("session still registered 5s after it closed the connection")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after the session ended: %v", err)
	}
	if err := <-serveErr; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if log := logs.String(); strings.Contains(log, "panic") {
		t.Fatalf("the server recovered from a panic:\n%s", log)
	}
	open, _, committed := spool.state()
	if open != 0 {
		t.Fatalf("%d spool writers left open", open)
	}
	if len(spool.problems) > 0 {
		t.Fatalf("spool contract: %q", spool.problems)
	}

	// After "220 Ready to start TLS" come TLS records (an alert, as no
	// fuzz input completes a handshake), not lines.
	text := string(out)
	if i := fuzzTLSReady.FindStringIndex(text); i != nil {
		text = text[:i[1]+1] // the match ends at the CR
	}
	if !strings.HasSuffix(text, "\r\n") {
		t.Fatalf("output does not end with CRLF: %q", out)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\r\n"), "\r\n")
	if lines[0] != "220 mx.example.com ESMTP Posthorn" {
		t.Fatalf("no greeting: %q", out)
	}
	queued := 0
	prev := "" // code of an unfinished multi-line reply
	for _, l := range lines {
		m := fuzzReplyLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("malformed reply line %q in %q", l, out)
		}
		if prev != "" && m[1] != prev {
			t.Fatalf("multi-line reply changes code at %q", l)
		}
		prev = ""
		if m[2] == "-" {
			prev = m[1]
		}
		if fuzzQueued.MatchString(l) {
			queued++
		}
	}
	if prev != "" {
		t.Fatalf("unfinished multi-line reply at the end of %q", out)
	}
	if queued != committed {
		t.Fatalf("%d \"queued as\" replies, %d messages committed", queued, committed)
	}
}
