package smtpserver

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/received")

// ehloLines is the EHLO reply of a test server without TLS, helo "c.example.org".
var ehloLines = []string{
	"250-mx.example.com Hello c.example.org",
	"250-PIPELINING",
	"250-SIZE 1000000",
	"250-8BITMIME",
	"250-ENHANCEDSTATUSCODES",
	"250-SMTPUTF8",
	"250-CHUNKING",
	"250 DSN",
}

// greet reads the greeting and sends EHLO c.example.org.
func (c *client) greet() {
	c.tb.Helper()
	c.expect("220 mx.example.com ESMTP Posthorn")
	c.greet2()
}

// greet2 sends EHLO c.example.org and reads the reply of a server whose
// STARTTLS is off or done.
func (c *client) greet2() {
	c.tb.Helper()
	c.send("EHLO c.example.org")
	for _, l := range ehloLines {
		c.expect(l)
	}
}

// TestEnhancedCodes checks RFC 2034 over a spread of commands that give
// 2xx, 4xx and 5xx replies: after EHLO each reply line carries an enhanced
// code of its own class; after HELO none does.
func TestEnhancedCodes(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxErrors = 100; o.MaxRecipients = 100 })
	// The spool is full: DATA with a valid recipient gets 451.
	ts.spool.setFail(failCreate)
	commands := []string{
		"NOOP", "RSET", "VRFY alice", "EXPN x", "HELP", "XYZZY", "RCPT TO:<alice@example.com>", "DATA",
		"BDAT 0", "MAIL FROM:<bob@example.org>", "MAIL FROM:<bob@example.org>", "RCPT TO:<nobody@example.com>",
		"RCPT TO:<x@example.net>", "RCPT TO:<jörg@example.com>", "DATA", "STARTTLS", "HELO", "EHLO",
		"RCPT TO:<alice@example.com>", "DATA", "BDAT 0 LAST", "RSET", "MAIL FROM:<bob@example.org> SIZE=9999999999",
		"MAIL FROM:<bob@example.org> FOO=BAR", strings.Repeat("x", 3000),
	}
	withEnh := regexp.MustCompile(`^([245])[0-9][0-9][ -]([245])\.[0-9]{1,3}\.[0-9]{1,3} `)
	bare := regexp.MustCompile(`^[245][0-9][0-9][ -]`)
	enh := regexp.MustCompile(`^[0-9]{3}[ -][0-9]\.[0-9]+\.[0-9]+ `)

	c := dial(t, ts.addr)
	c.greet()
	seen := map[byte]bool{}
	for _, cmd := range commands {
		c.send(cmd)
		for _, l := range c.reply() {
			m := withEnh.FindStringSubmatch(l)
			if m == nil || m[1] != m[2] {
				t.Errorf("after EHLO, %.30q -> %q: want an enhanced code of the same class", cmd, l)
				continue
			}
			seen[l[0]] = true
		}
	}
	if !seen['2'] || !seen['4'] || !seen['5'] {
		t.Errorf("reply classes seen after EHLO: %q; want 2, 4 and 5", fmt.Sprint(seen))
	}

	c.send("HELO c.example.org")
	if r := c.reply(); len(r) != 1 || r[0] != "250 mx.example.com" {
		t.Fatalf("HELO reply %q", r)
	}
	for _, cmd := range commands {
		c.send(cmd)
		for _, l := range c.reply() {
			if !bare.MatchString(l) || enh.MatchString(l) {
				t.Errorf("after HELO, %.30q -> %q: want no enhanced code", cmd, l)
			}
		}
	}
}

// countingListener counts the writes on each accepted connection.
type countingListener struct {
	net.Listener
	conns chan *countingConn
}

type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countingConn{Conn: c}
	l.conns <- cc
	return cc, nil
}

// TestPipelinedRepliesBatched checks the server side of RFC 2920: the
// replies to a pipelined group leave in one write, not one per command.
func TestPipelinedRepliesBatched(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l, conns: make(chan *countingConn, 1)}
	ts := startServerOn(t, cl, nil)
	c := dial(t, ts.addr)
	c.greet()
	sc := <-cl.conns
	step := func(what string, want int32) {
		t.Helper()
		if got := sc.writes.Load(); got != want {
			t.Errorf("after %s: %d writes by the server, want %d", what, got, want)
		}
	}
	step("greeting and EHLO", 2)

	c.queue("MAIL FROM:<bob@example.org>", "RCPT TO:<alice@example.com>", "RCPT TO:<nobody@example.com>",
		"RCPT TO:<theboss@example.com>", "DATA")
	c.flush()
	for _, l := range []string{"250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 User unknown", "250 2.1.5 Ok",
		"354 End data with <CR><LF>.<CR><LF>"} {
		c.expect(l)
	}
	step("MAIL RCPT RCPT RCPT DATA", 3)

	c.queue("Subject: 1", "", "one", ".", "MAIL FROM:<bob@example.org>", "RCPT TO:<alice@example.com>", "DATA")
	c.flush()
	for _, l := range []string{"250 2.0.0 Ok: queued as {id}", "250 2.1.0 Ok", "250 2.1.5 Ok",
		"354 End data with <CR><LF>.<CR><LF>"} {
		c.expect(l)
	}
	step("message, MAIL RCPT DATA", 4)

	c.queue("Subject: 2", "", "two", ".", "QUIT")
	c.flush()
	c.expect("250 2.0.0 Ok: queued as {id}")
	c.expect("221 2.0.0 Bye")
	c.expectClosed()
	step("message, QUIT", 5)
	if _, _, n := ts.spool.state(); n != 2 {
		t.Errorf("%d messages committed, want 2", n)
	}
}

// TestCommandLineLimit checks RFC 5321 4.5.3.1.4 with our limit of
// smtp.MaxCommandLine octets, CRLF included: the longest line passes, one
// more octet gets 500 5.5.2, and the session continues in step.
func TestCommandLineLimit(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.greet()
	longest := "NOOP " + strings.Repeat("x", 2048-len("NOOP ")-2)
	c.send(longest)
	c.expect("250 2.0.0 Ok")
	c.send(longest + "x")
	c.expect("500 5.5.2 Line too long")
	// A very long line followed, in the same write, by a command.
	c.queue("NOOP "+strings.Repeat("y", 20000), "RCPT TO:<alice@example.com>")
	c.flush()
	c.expect("500 5.5.2 Line too long")
	c.expect("503 5.5.1 Need MAIL command first")
	c.send("NOOP a\x00b")
	c.expect("500 5.5.2 Bad character in command line")
	c.send("NOOP a\rb")
	c.expect("500 5.5.2 Bad character in command line")
	c.send("QUIT")
	c.expect("221 2.0.0 Bye")
	c.expectClosed()
}

// TestRecipientLimit: 100 recipients pass, the 101st and later get 452
// 4.5.3 (RFC 5321 4.5.3.1.10) without counting as client errors, and the
// message goes to the 100 accepted ones.
func TestRecipientLimit(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxRecipients = 100; o.MaxErrors = 3 })
	c := dial(t, ts.addr)
	c.greet()
	c.queue("MAIL FROM:<bob@example.org>")
	for i := 1; i <= 100; i++ {
		c.queue(fmt.Sprintf("RCPT TO:<alice+%d@example.com>", i))
	}
	c.flush()
	c.expect("250 2.1.0 Ok")
	for i := 1; i <= 100; i++ {
		c.expect("250 2.1.5 Ok")
	}
	// More than MaxErrors of them: 452 is not the client's fault.
	for i := 0; i < 5; i++ {
		c.send("RCPT TO:<theboss@example.com>")
		c.expect("452 4.5.3 Too many recipients")
	}
	c.send("DATA")
	c.expect("354 End data with <CR><LF>.<CR><LF>")
	c.send("Subject: many", "", ".")
	c.expect("250 2.0.0 Ok: queued as {id}")
	c.send("QUIT")
	c.expect("221 2.0.0 Bye")
	ts.stop(t)
	msgs := ts.spool.messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	// alice+1 ... alice+100 are one mailbox: one copy.
	got := envelopeLines(msgs[0].env)
	want := []string{
		"from=<bob@example.org> helo=c.example.org ip=127.0.0.1 tls=false smtputf8=false 8bit=false",
		"rcpt=<alice+1@example.com> mailbox=example.com/alice",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("envelope %q, want %q", got, want)
	}
	if strings.Contains(string(msgs[0].data), "for <") {
		t.Errorf("Received field names a recipient of 100:\n%s", msgs[0].data)
	}
}

// TestMaxRecipientsFloor: a configured limit below RFC 5321's minimum of
// 100 recipients (4.5.3.1.8) is raised to it.
func TestMaxRecipientsFloor(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxRecipients = 5 })
	c := dial(t, ts.addr)
	c.greet()
	c.queue("MAIL FROM:<bob@example.org>")
	for i := 1; i <= 101; i++ {
		c.queue(fmt.Sprintf("RCPT TO:<alice+%d@example.com>", i))
	}
	c.flush()
	c.expect("250 2.1.0 Ok")
	for i := 1; i <= 100; i++ {
		c.expect("250 2.1.5 Ok")
	}
	c.expect("452 4.5.3 Too many recipients")
}

// TestTooManyErrors: the MaxErrors-th failed command gets its reply, then
// 421 and the connection is closed. Errors add up across transactions and
// kinds (an unknown command, a refused recipient, a line too long).
func TestTooManyErrors(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.MaxErrors = 4 })
	c := dial(t, ts.addr)
	c.greet()
	c.send("XYZZY")
	c.expect("500 5.5.2 Command unrecognized")
	c.send("MAIL FROM:<bob@example.org>", "RCPT TO:<nobody@example.com>", "RSET")
	c.expect("250 2.1.0 Ok")
	c.expect("550 5.1.1 User unknown")
	c.expect("250 2.0.0 Ok")
	c.send(strings.Repeat("z", 3000))
	c.expect("500 5.5.2 Line too long")
	c.send("PLUGH", "NOOP")
	c.expect("500 5.5.2 Command unrecognized")
	c.expect("421 4.7.0 Too many errors, closing connection")
	c.expectClosed()
}

// TestConnectionLimits: past MaxConnectionsPerIP for one address, or past
// MaxConnections in all, a new connection gets 421 and is closed; a slot
// freed by a closed session is reused.
func TestConnectionLimits(t *testing.T) {
	from := func(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip)} }
	refused := "421 4.7.0 mx.example.com Too many connections, try again later"

	t.Run("per-ip", func(t *testing.T) {
		ts := startServer(t, func(o *Options) { o.MaxConnectionsPerIP = 2; o.MaxConnections = 10 })
		c1 := dialFrom(t, ts.addr, from("127.0.0.1"))
		c1.expect("220 mx.example.com ESMTP Posthorn")
		c2 := dialFrom(t, ts.addr, from("127.0.0.1"))
		c2.expect("220 mx.example.com ESMTP Posthorn")
		c3 := dialFrom(t, ts.addr, from("127.0.0.1"))
		c3.expect(refused)
		c3.expectClosed()
		// Operators (and e2e/load_test.go) look for this line.
		if !strings.Contains(ts.logs.String(), "connection refused: limit") {
			t.Errorf("no \"connection refused: limit\" in the log:\n%s", ts.logs.String())
		}
		// Another address has its own count.
		c4 := dialFrom(t, ts.addr, from("127.0.0.2"))
		c4.expect("220 mx.example.com ESMTP Posthorn")
		// The refused connection held no slot, and a closed session
		// gives its slot back.
		c1.send("QUIT")
		c1.expect("221 Bye")
		c1.expectClosed()
		waitForGreeting(t, ts.addr, from("127.0.0.1"))
	})
	t.Run("total", func(t *testing.T) {
		ts := startServer(t, func(o *Options) { o.MaxConnections = 2 })
		c1 := dialFrom(t, ts.addr, from("127.0.0.1"))
		c1.expect("220 mx.example.com ESMTP Posthorn")
		c2 := dialFrom(t, ts.addr, from("127.0.0.2"))
		c2.expect("220 mx.example.com ESMTP Posthorn")
		c3 := dialFrom(t, ts.addr, from("127.0.0.3"))
		c3.expect(refused)
		c3.expectClosed()
		c2.send("QUIT")
		c2.expect("221 Bye")
		c2.expectClosed()
		waitForGreeting(t, ts.addr, from("127.0.0.3"))
	})
}

// waitForGreeting connects until the server greets with 220 rather than
// refusing with 421 (a closed session frees its slot just after the
// client sees the close).
func waitForGreeting(t testing.TB, addr string, local net.Addr) {
	t.Helper()
	waitFor(t, "a free connection slot", func() bool {
		c := dialFrom(t, addr, local)
		defer c.raw.Close()
		l, err := c.line()
		return err == nil && strings.HasPrefix(l, "220 ")
	})
}

// TestCommandTimeout: a client that says nothing for CommandTimeout is
// disconnected (RFC 5321 4.5.3.2.7), also in the middle of a transaction.
func TestCommandTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, func(o *Options) { o.CommandTimeout = timeout })
	for _, setup := range [][]string{nil, {"EHLO c.example.org", "MAIL FROM:<bob@example.org>"}} {
		c := dial(t, ts.addr)
		c.expect("220 mx.example.com ESMTP Posthorn")
		if setup != nil {
			c.send(setup...)
			for range ehloLines {
				c.line()
			}
			c.expect("250 2.1.0 Ok")
		}
		start := time.Now()
		c.expectClosed()
		if d := time.Since(start); d < timeout/2 {
			t.Errorf("closed after %v, before the command timeout of %v", d, timeout)
		}
	}
}

// TestDataTimeout: a client that stalls inside DATA or a BDAT chunk is
// disconnected after DataTimeout, and nothing is stored.
func TestDataTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	ts := startServer(t, func(o *Options) { o.DataTimeout = timeout; o.CommandTimeout = 10 * time.Second })
	for i, start := range []string{
		"DATA\r\n",
		"BDAT 100\r\nSubject: x\r\n",
		"BDAT 12\r\nSubject: x\r\nBDAT 50 LAST\r\nbody",
	} {
		c := dial(t, ts.addr)
		c.greet()
		c.send("MAIL FROM:<bob@example.org>", "RCPT TO:<alice@example.com>")
		c.expect("250 2.1.0 Ok")
		c.expect("250 2.1.5 Ok")
		c.queueRaw(start)
		if start == "DATA\r\n" {
			c.expect("354 End data with <CR><LF>.<CR><LF>")
			c.queueRaw("Subject: x\r\n\r\npartial")
		}
		if strings.HasPrefix(start, "BDAT 12") {
			c.expect("250 2.0.0 12 octets received")
		}
		c.flush()
		began := time.Now()
		c.expectClosed()
		if d := time.Since(began); d < timeout/2 {
			t.Errorf("closed after %v, before the data timeout of %v", d, timeout)
		}
		waitFor(t, "the message to be aborted", func() bool {
			open, aborted, _ := ts.spool.state()
			return open == 0 && aborted == i+1
		})
	}
	if _, _, n := ts.spool.state(); n != 0 {
		t.Errorf("%d messages committed, want none", n)
	}
}

// TestDisconnectMidMessage: a client that goes away before the end of the
// data (DATA, inside a BDAT chunk, or between chunks) has sent no message.
func TestDisconnectMidMessage(t *testing.T) {
	ts := startServer(t, nil)
	for i, partial := range []string{
		"DATA\r\nSubject: x\r\n\r\nno end",
		"DATA\r\nSubject: x\r\n\r\nalmost\r\n",
		"BDAT 100 LAST\r\nSubject: x\r\n",
		"BDAT 12\r\nSubject: x\r\n",
	} {
		c := dial(t, ts.addr)
		c.greet()
		c.send("MAIL FROM:<bob@example.org>", "RCPT TO:<alice@example.com>")
		c.expect("250 2.1.0 Ok")
		c.expect("250 2.1.5 Ok")
		c.send(partial)
		if strings.HasPrefix(partial, "DATA") {
			c.expect("354 End data with <CR><LF>.<CR><LF>")
		}
		if strings.HasPrefix(partial, "BDAT 12") {
			c.expect("250 2.0.0 12 octets received")
		}
		c.raw.Close()
		waitFor(t, "the message to be aborted", func() bool {
			open, aborted, _ := ts.spool.state()
			return open == 0 && aborted == i+1
		})
	}
	if _, _, n := ts.spool.state(); n != 0 {
		t.Errorf("%d messages committed, want none", n)
	}
}

// shutdownAsync starts Shutdown and returns its result channel.
func shutdownAsync(ts *testServer, timeout time.Duration) <-chan error {
	ts.stopped = true
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	return done
}

// waitShutdownStarted waits until the listener is closed, then long
// enough for Shutdown to have looked at the sessions a few times.
func waitShutdownStarted(t testing.TB, ts *testServer) {
	t.Helper()
	waitFor(t, "the listener to close", func() bool {
		c, err := net.DialTimeout("tcp", ts.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	time.Sleep(150 * time.Millisecond)
}

func checkServeClosed(t testing.TB, ts *testServer) {
	t.Helper()
	select {
	case err := <-ts.serveErr:
		if !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-time.After(ioTimeout):
		t.Errorf("Serve did not return")
	}
}

// TestShutdownIdle: idle sessions get 421 4.3.2 and are closed at once,
// Shutdown returns nil, Serve returns ErrServerClosed, and a later Serve
// too.
func TestShutdownIdle(t *testing.T) {
	ts := startServer(t, nil)
	c1 := dial(t, ts.addr)
	c1.greet()
	c2 := dial(t, ts.addr)
	c2.expect("220 mx.example.com ESMTP Posthorn")
	begin := time.Now()
	done := shutdownAsync(ts, 10*time.Second)
	c1.expect("421 4.3.2 Server shutting down")
	c1.expectClosed()
	c2.expect("421 Server shutting down") // no EHLO: no enhanced code
	c2.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Shutdown of idle sessions took %v", d)
	}
	checkServeClosed(t, ts)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := ts.srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown returned %v, want ErrServerClosed", err)
	}
}

// TestShutdownIdleTLS: an idle session after STARTTLS is woken through
// the TCP connection under TLS and answers 421 over TLS.
func TestShutdownIdleTLS(t *testing.T) {
	ts := startServer(t, func(o *Options) { o.TLSConfig = testTLS(t) })
	c := dial(t, ts.addr)
	c.expect("220 mx.example.com ESMTP Posthorn")
	c.send("STARTTLS")
	c.expect("220 Ready to start TLS")
	c.starttls(false)
	c.greet2()
	done := shutdownAsync(ts, 10*time.Second)
	c.expect("421 4.3.2 Server shutting down")
	c.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	checkServeClosed(t, ts)
}

// TestShutdownFinishesTransaction: a session in the middle of a mail
// transaction may finish it; then it gets 421 and Shutdown returns nil.
func TestShutdownFinishesTransaction(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.greet()
	c.send("MAIL FROM:<bob@example.org>", "RCPT TO:<alice@example.com>")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	done := shutdownAsync(ts, 10*time.Second)
	waitShutdownStarted(t, ts)
	c.send("DATA")
	c.expect("354 End data with <CR><LF>.<CR><LF>")
	c.send("Subject: last one", "", ".")
	c.expect("250 2.0.0 Ok: queued as {id}")
	c.expect("421 4.3.2 Server shutting down")
	c.expectClosed()
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	checkServeClosed(t, ts)
	if _, _, n := ts.spool.state(); n != 1 {
		t.Errorf("%d messages committed, want 1", n)
	}
}

// TestShutdownDeadline: a session that does not finish before the
// Shutdown context ends is cut off, its message dropped.
func TestShutdownDeadline(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.greet()
	c.send("MAIL FROM:<bob@example.org>", "RCPT TO:<alice@example.com>", "DATA")
	c.expect("250 2.1.0 Ok")
	c.expect("250 2.1.5 Ok")
	c.expect("354 End data with <CR><LF>.<CR><LF>")
	c.send("Subject: never ends")
	done := shutdownAsync(ts, 300*time.Millisecond)
	c.expectClosed()
	if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown returned %v, want context.DeadlineExceeded", err)
	}
	checkServeClosed(t, ts)
	open, aborted, committed := ts.spool.state()
	if open != 0 || aborted != 1 || committed != 0 {
		t.Errorf("spool: %d open, %d aborted, %d committed; want 0, 1, 0", open, aborted, committed)
	}
}

// TestReceivedGolden compares the Received field (RFC 5321 4.4) with the
// files in testdata/received: the protocol name by greeting, SMTPUTF8 and
// TLS (RFC 3848, RFC 6531 3.7.3), and "for" only with one recipient.
// Run with -update to rewrite them.
func TestReceivedGolden(t *testing.T) {
	cases := []struct {
		name   string
		listen string
		tls    bool
		helo   string
		mail   string
		rcpts  []string
	}{
		{"helo", "127.0.0.1:0", false, "HELO", "MAIL FROM:<bob@example.org>", []string{"alice@example.com"}},
		{"ehlo", "127.0.0.1:0", false, "EHLO", "MAIL FROM:<bob@example.org>", []string{"alice@example.com"}},
		{"ehlo-ipv6", "[::1]:0", false, "EHLO", "MAIL FROM:<bob@example.org>", []string{"alice@example.com"}},
		{"ehlo-smtputf8", "127.0.0.1:0", false, "EHLO", "MAIL FROM:<jörg@exämple.org> SMTPUTF8", []string{"alice@example.com"}},
		{"ehlo-two-rcpts", "127.0.0.1:0", false, "EHLO", "MAIL FROM:<bob@example.org>", []string{"alice@example.com", "theboss@example.com"}},
		{"tls-ehlo", "127.0.0.1:0", true, "EHLO", "MAIL FROM:<bob@example.org>", []string{"alice+box@example.com"}},
		{"tls-helo", "127.0.0.1:0", true, "HELO", "MAIL FROM:<bob@example.org>", []string{"alice@example.com"}},
		{"tls-smtputf8", "127.0.0.1:0", true, "EHLO", "MAIL FROM:<jörg@exämple.org> SMTPUTF8", []string{"alice@example.com", "theboss@example.com"}},
	}
	const content = "Subject: golden\r\n\r\nbody\r\n"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, err := net.Listen("tcp", tc.listen)
			if err != nil && tc.listen == "[::1]:0" {
				t.Skipf("no IPv6 loopback here (%v); TestReceivedAddressLiteral covers the format", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			ts := startServerOn(t, l, func(o *Options) {
				o.Spooler = SpoolerFunc(o.Spooler.Create) // the adapter, once
				if tc.tls {
					o.TLSConfig = testTLS(t)
				}
			})
			c := dial(t, ts.addr)
			c.expect("220 mx.example.com ESMTP Posthorn")
			if tc.tls {
				c.send("EHLO c.example.org")
				c.reply()
				c.send("STARTTLS")
				c.expect("220 2.0.0 Ready to start TLS")
				c.starttls(true)
			}
			c.send(tc.helo + " c.example.org")
			c.reply()
			c.send(tc.mail)
			c.expect("250 {*}")
			for _, r := range tc.rcpts {
				c.send("RCPT TO:<" + r + ">")
				c.expect("250 {*}")
			}
			c.send("DATA")
			c.expect("354 End data with <CR><LF>.<CR><LF>")
			c.queueRaw(content + ".\r\n")
			c.expect("250 {*}queued as {id}")
			c.send("QUIT")
			c.expect("221 {*}Bye")
			ts.stop(t)
			msgs := ts.spool.messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages, want 1", len(msgs))
			}
			data := string(msgs[0].data)
			header, ok := strings.CutSuffix(data, content)
			if !ok {
				t.Fatalf("message does not end with the client's content:\n%s", data)
			}
			if strings.Count(header, "\n") != strings.Count(header, "\r\n") || !strings.HasSuffix(header, "\r\n") {
				t.Errorf("Received field has a line not ended by CRLF: %q", header)
			}
			got := strings.ReplaceAll(header, "\r\n", "\n")
			path := filepath.Join("testdata", "received", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("Received field differs from %s\n got:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}

// TestReceivedAddressLiteral: the client IP in the Received field is an
// RFC 5321 4.1.3 address literal, with the "IPv6:" tag for IPv6.
func TestReceivedAddressLiteral(t *testing.T) {
	for ip, want := range map[string]string{
		"192.0.2.7":   "Received: from c.example.org ([192.0.2.7])\r\n",
		"2001:db8::7": "Received: from c.example.org ([IPv6:2001:db8::7])\r\n",
	} {
		s := &session{srv: &Server{opts: Options{Hostname: testHostname}}, ip: ip, helo: "c.example.org", esmtp: true}
		if got := s.receivedHeader("Q1", fixedNow); !strings.HasPrefix(got, want) {
			t.Errorf("client %s: got %q, want it to start with %q", ip, got, want)
		}
	}
}

// TestRefusedDuringShutdown: a connection accepted just as Shutdown began
// is told so, not that there are too many connections.
func TestRefusedDuringShutdown(t *testing.T) {
	spool, logs := &fakeSpool{}, &syncBuffer{}
	srv := New(baseOptions(t, spool, logs))
	srv.shutdown.Store(true)
	cs, ss := net.Pipe()
	defer cs.Close()
	srv.wg.Add(1)
	go srv.handle(ss)
	c := &client{tb: t, raw: cs, conn: cs, br: bufio.NewReader(cs)}
	c.expect("421 4.3.2 mx.example.com Server shutting down")
	c.expectClosed()
	srv.wg.Wait()
}
