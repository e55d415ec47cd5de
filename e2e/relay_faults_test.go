package e2e

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// faultyMX is a scripted SMTP server for relay tests. Each DATA is
// handled as behave(n) says, n counting transactions from 1: "accept",
// "tempfail" (451 after the data) or "drop" (close the connection in the
// middle of DATA).
type faultyMX struct {
	l        net.Listener
	mu       sync.Mutex
	txs      int
	accepted []string // message bodies accepted
	behave   func(n int) string
}

func startFaultyMX(t *testing.T, behave func(n int) string) *faultyMX {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFaultyMX(t, l, behave)
}

// serveFaultyMX serves a faulty MX on l until the test ends.
func serveFaultyMX(t *testing.T, l net.Listener, behave func(n int) string) *faultyMX {
	t.Helper()
	f := &faultyMX{l: l, behave: behave}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *faultyMX) port() int { return f.l.Addr().(*net.TCPAddr).Port }

func (f *faultyMX) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "220 faulty.example.net ESMTP\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			fmt.Fprintf(c, "250-faulty.example.net\r\n250 8BITMIME\r\n")
		case "HELO", "MAIL", "RCPT", "RSET", "NOOP":
			fmt.Fprintf(c, "250 ok\r\n")
		case "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		case "DATA":
			f.mu.Lock()
			f.txs++
			mode := f.behave(f.txs)
			f.mu.Unlock()
			fmt.Fprintf(c, "354 go ahead\r\n")
			var body strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				if mode == "drop" && body.Len() > 0 {
					return // the connection dies in the middle of the data
				}
				body.WriteString(l)
			}
			if mode == "tempfail" {
				fmt.Fprintf(c, "451 4.3.0 try again later\r\n")
				continue
			}
			f.mu.Lock()
			f.accepted = append(f.accepted, body.String())
			f.mu.Unlock()
			fmt.Fprintf(c, "250 ok queued\r\n")
		default:
			fmt.Fprintf(c, "502 what\r\n")
		}
	}
}

func (f *faultyMX) bodies() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.accepted...)
}

// relayVia starts a relaying Posthorn whose DNS says example.net's MX is
// 127.0.0.1, delivering to port (the faulty MX), retrying every 300 ms;
// extra goes into its [delivery] table.
func relayVia(t *testing.T, port int, extra string) *testutil.Posthorn {
	t.Helper()
	dns := startDNS(t, "--mx-host=example.net,mx.example.net,10", "--host-record=mx.example.net,127.0.0.1")
	return relayingPosthorn(t, port, dns, extra)
}

// relayingPosthorn starts mx.example.com (user alice, relaying for
// 127.0.0.0/8, retrying every 300 ms) that resolves through dns and
// delivers to port; extra goes into its [delivery] table.
func relayingPosthorn(t *testing.T, port int, dns, extra string) *testutil.Posthorn {
	t.Helper()
	return testutil.StartPosthorn(t, fmt.Sprintf(`hostname = "mx.example.com"
[smtp]
relay_from = ["127.0.0.0/8"]
[domains."example.com"]
users = ["alice"]
[queue]
retry_intervals = ["300ms"]
[delivery]
port = %d
%s
[dns]
servers = [%q]
`, port, extra, dns))
}

// waitBodies waits until the faulty MX accepted n messages.
func waitBodies(t *testing.T, f *faultyMX, n int) []string {
	t.Helper()
	deadline := time.Now().Add(deliveryTimeout)
	for len(f.bodies()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("remote accepted %d messages, want %d", len(f.bodies()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return f.bodies()
}

// TestRelayTempFailThenAccept: the remote answers 451 to the first
// attempt; the message is retried and delivered exactly once.
func TestRelayTempFailThenAccept(t *testing.T) {
	f := startFaultyMX(t, func(n int) string {
		if n == 1 {
			return "tempfail"
		}
		return "accept"
	})
	p := relayVia(t, f.port(), "")
	sendMail(t, p.Addr, "alice@example.com", []string{"dave@example.net"}, crlf("Subject: second time lucky", "", "body"))
	got := waitBodies(t, f, 1)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	time.Sleep(700 * time.Millisecond) // two more retry intervals: nothing else may arrive
	if n := len(f.bodies()); n != 1 || !strings.Contains(got[0], "Subject: second time lucky") {
		t.Errorf("remote got %d messages, want the one exactly once", n)
	}
	if !strings.Contains(p.Log(), "451 4.3.0 try again later") {
		t.Error("the temporary failure was not logged")
	}
}

// TestRelayDisconnectMidData: the remote drops the connection in the middle
// of DATA; the message is not lost: it is retried and delivered whole.
func TestRelayDisconnectMidData(t *testing.T) {
	f := startFaultyMX(t, func(n int) string {
		if n == 1 {
			return "drop"
		}
		return "accept"
	})
	p := relayVia(t, f.port(), "")
	body := crlf("Subject: interrupted", "", "line one", "line two", "line three")
	sendMail(t, p.Addr, "alice@example.com", []string{"dave@example.net"}, body)
	got := waitBodies(t, f, 1)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	if !strings.HasSuffix(got[0], body) {
		t.Errorf("remote got a damaged message:\n%s", got[0])
	}
}

// TestRelayLoopToOurselves: the MX of a domain we do not serve points back
// at our own listener: a permanent failure (5.4.6) and a bounce, never a
// loop of deliveries to ourselves.
func TestRelayLoopToOurselves(t *testing.T) {
	dns := startDNS(t, "--mx-host=loop.example,mx.example.com,10", "--host-record=mx.example.com,127.0.0.1")
	dir := t.TempDir()
	port := testutil.FreePort(t)
	cfg := fmt.Sprintf(`hostname = "mx.example.com"
data_dir = %q
[smtp]
listen = ["127.0.0.1:%d"]
relay_from = ["127.0.0.0/8"]
[domains."example.com"]
users = ["alice"]
[delivery]
port = %d
[dns]
servers = [%q]
`, filepath.Join(dir, "data"), port, port, dns)
	cfgPath := writeFile(t, "posthorn.toml", cfg)
	p := testutil.ServePosthorn(t, dir, "serve", "--config", cfgPath)
	sendMail(t, p.Addr, "alice@example.com", []string{"someone@loop.example"}, crlf("Subject: loop", "", "body"))
	dataDir := filepath.Join(dir, "data")
	testutil.WaitMaildir(t, dataDir, "example.com", "alice", 1, deliveryTimeout)
	got := testutil.ReadMaildir(t, dataDir, "example.com", "alice")
	checkBounce(t, got[0], "someone@loop.example", "5.4.6", "loop")
	// Only the client's message came in over SMTP: we never connected to
	// ourselves (the bounce is made inside the server).
	if n := strings.Count(p.Log(), "msg=accepted"); n != 1 {
		t.Errorf("%d messages accepted over SMTP, want 1: a delivery to ourselves?", n)
	}
}

// TestRelayNullMX: a domain that publishes a null MX (RFC 7505) takes no
// mail: the recipient fails at once (5.1.10) and the sender gets a bounce,
// without any connection attempt or retry.
func TestRelayNullMX(t *testing.T) {
	f := startFaultyMX(t, func(int) string { return "accept" })
	dns := startDNS(t, "--mx-host=nullmx.example,.,0")
	p := relayingPosthorn(t, f.port(), dns, "")
	sendMail(t, p.Addr, "alice@example.com", []string{"anyone@nullmx.example"}, crlf("Subject: null mx", "", "body"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	got := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	checkBounce(t, got[0], "anyone@nullmx.example", "5.1.10", "null mx")
	if n := len(f.bodies()); n != 0 {
		t.Errorf("%d messages reached a server", n)
	}
}

// TestRelayMXFallback: the preferred MX (127.0.0.2, where nothing listens)
// refuses the connection, so the next MX gets the mail; a domain without MX
// records gets it at its own address (RFC 5321 5.1 implicit MX).
func TestRelayMXFallback(t *testing.T) {
	f := startFaultyMX(t, func(int) string { return "accept" })
	dns := startDNS(t,
		"--mx-host=example.net,mx1.example.net,10", "--host-record=mx1.example.net,127.0.0.2",
		"--mx-host=example.net,mx2.example.net,20", "--host-record=mx2.example.net,127.0.0.1",
		"--host-record=nomx.example,127.0.0.1", "--local=/nomx.example/") // --local: NODATA for its MX, not REFUSED
	p := relayingPosthorn(t, f.port(), dns, "")
	sendMail(t, p.Addr, "alice@example.com", []string{"dave@example.net"}, crlf("Subject: via backup", "", "body"))
	sendMail(t, p.Addr, "alice@example.com", []string{"erin@nomx.example"}, crlf("Subject: via A", "", "body"))
	got := waitBodies(t, f, 2)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	joined := strings.Join(got, "\n")
	for _, want := range []string{"Subject: via backup", "Subject: via A"} {
		if !strings.Contains(joined, want) {
			t.Errorf("the remote did not get %q", want)
		}
	}
}

// TestRelaySilentRemote: the remote accepts the connection and never says a
// word. After delivery.command_timeout the attempt is given up and retried;
// the message stays queued, not lost, and goes out once the remote answers.
func TestRelaySilentRemote(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	var mu sync.Mutex
	var held []net.Conn
	silent := true
	f := &faultyMX{l: l, behave: func(int) string { return "accept" }}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			s := silent
			if s {
				held = append(held, c) // accepted, never answered
			}
			mu.Unlock()
			if !s {
				go f.serve(c)
			}
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	p := relayVia(t, port, "command_timeout = \"300ms\"\n")
	sendMail(t, p.Addr, "alice@example.com", []string{"dave@example.net"}, crlf("Subject: anyone there", "", "body"))
	p.WaitLog("delivery deferred", deliveryTimeout)
	if left := testutil.SpoolEntries(t, p.DataDir, "queue"); len(left) == 0 {
		t.Fatal("the message left the queue although the remote never answered")
	}
	mu.Lock()
	silent = false
	mu.Unlock()
	got := waitBodies(t, f, 1)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	if !strings.Contains(got[0], "Subject: anyone there") {
		t.Errorf("remote got %q", got[0])
	}
}
