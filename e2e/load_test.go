package e2e

import (
	"fmt"
	"net"
	"net/smtp"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// TestConcurrentClients opens 200 connections at once (Go's net/smtp
// client, one goroutine each), holds them all open until every one has
// been greeted, then sends one message per connection to alice and
// theboss. Every message must be in each mailbox exactly once: nothing
// lost under concurrent commits, nothing delivered twice.
func TestConcurrentClients(t *testing.T) {
	const clients = 200
	p := testutil.StartPosthorn(t, baseConfig) // max_connections_per_ip = 300
	start := time.Now()

	var greeted, done sync.WaitGroup
	release := make(chan struct{})
	errs := make(chan error, clients)
	greeted.Add(clients)
	done.Add(clients)
	for i := 0; i < clients; i++ {
		go func() {
			defer done.Done()
			err := concurrentClient(p.Addr, i, &greeted, release)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
			}
		}()
	}
	greeted.Wait()
	close(release) // all 200 sessions are open now
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	sent := time.Since(start)

	idRe := regexp.MustCompile(`(?m)^Message-ID: <(load-\d+@example\.org)>$`)
	for _, u := range []string{"alice", "theboss"} {
		testutil.WaitMaildir(t, p.DataDir, "example.com", u, clients, 30*time.Second)
	}
	waitIdle(t, p)
	for _, u := range []string{"alice", "theboss"} {
		seen := map[string]int{}
		msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", u)
		for _, m := range msgs {
			ids := idRe.FindAllStringSubmatch(m, -1)
			if len(ids) != 1 {
				t.Errorf("%s: message with %d Message-IDs:\n%s", u, len(ids), m)
				continue
			}
			seen[ids[0][1]]++
		}
		for i := 0; i < clients; i++ {
			id := fmt.Sprintf("load-%d@example.org", i)
			if seen[id] != 1 {
				t.Errorf("%s has %s %d times, want once", u, id, seen[id])
			}
		}
		if len(msgs) != clients {
			t.Errorf("%s has %d messages, want %d", u, len(msgs), clients)
		}
	}
	if strings.Contains(p.Log(), "connection refused: limit") {
		t.Error("the server refused connections below its limits")
	}
	t.Logf("%d clients: sent in %v, all delivered in %v", clients, sent.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// concurrentClient connects, waits for the greeting, signals greeted, waits
// for release, then sends message number i.
func concurrentClient(addr string, i int, greeted *sync.WaitGroup, release <-chan struct{}) error {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		greeted.Done()
		return err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	c, err := smtp.NewClient(conn, "127.0.0.1") // reads the 220 greeting
	greeted.Done()
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	<-release
	if err := c.Hello(fmt.Sprintf("client%d.example.org", i)); err != nil {
		return err
	}
	if err := c.Mail("bob@example.org"); err != nil {
		return err
	}
	for _, r := range []string{"alice@example.com", "theboss@example.com"} {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: bob@example.org\r\nMessage-ID: <load-%d@example.org>\r\nSubject: load %d\r\n\r\nmessage %d\r\n", i, i, i)
	if err := w.Close(); err != nil { // the reply to the end of data
		return err
	}
	return c.Quit()
}

// TestPostfixSmtpSource drives the server with Postfix's smtp-source: 100
// messages over 10 parallel sessions, each session sending message after
// message on one connection (RSET-free MAIL after MAIL). All 100 arrive,
// each once, by Message-Id.
func TestPostfixSmtpSource(t *testing.T) {
	bin := testutil.RequireTool(t, "smtp-source")
	p := testutil.StartPosthorn(t, baseConfig)
	const messages = 100
	out, code := runTool(t, bin, "-d", "-m", fmt.Sprint(messages), "-s", "10", "-l", "2000", "-S", "smtp-source test",
		"-M", "relay.example.org", "-f", "bob@example.org", "-t", "theboss@example.com", p.Addr)
	if code != 0 {
		t.Fatalf("smtp-source exited %d:\n%s", code, out)
	}
	testutil.WaitMaildir(t, p.DataDir, "example.com", "theboss", messages, deliveryTimeout)
	waitIdle(t, p)
	idRe := regexp.MustCompile(`(?m)^Message-Id: (<[^>]+>)$`)
	seen := map[string]int{}
	msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", "theboss")
	for _, m := range msgs {
		d := splitDelivered(t, m)
		checkReceived(t, d.Received, "relay.example.org", "SMTP", "")
		if !strings.Contains(d.Rest, "\nSubject: smtp-source test\n\n") {
			t.Errorf("message without the expected header:\n%s", abbrev(d.Rest))
		}
		if ids := idRe.FindAllStringSubmatch(d.Rest, -1); len(ids) == 1 {
			seen[ids[0][1]]++
		} else {
			t.Errorf("message with %d Message-Ids:\n%s", len(ids), abbrev(d.Rest))
		}
	}
	if len(msgs) != messages || len(seen) != messages {
		t.Errorf("theboss has %d messages with %d distinct Message-Ids, want %d", len(msgs), len(seen), messages)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

// TestShutdownUnderLoad stops the server with SIGTERM while 20 clients
// send as fast as they can, then starts it again. The server must exit
// with status 0, and every message it acknowledged with 250 must be in
// both mailboxes exactly once after the restart; a message it did not
// acknowledge may be missing but never doubled.
func TestShutdownUnderLoad(t *testing.T) {
	const clients = 20
	p := testutil.StartPosthorn(t, baseConfig)
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		sent  int
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("load-%d-%d@example.org", c, n)
				mu.Lock()
				sent++
				mu.Unlock()
				if err := sendOne(p.Addr, id); err != nil {
					return // the server is going away
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	// Let the load build up, then stop the server under it.
	deadline := time.Now().Add(ioTimeout)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d messages acknowledged in %v", n, ioTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("posthorn under load, after SIGTERM: %v", err)
	}
	close(stop)
	wg.Wait()
	p.Restart()
	waitIdle(t, p)

	idRe := regexp.MustCompile(`(?m)^Message-ID: <(load-\d+-\d+@example\.org)>$`)
	for _, u := range []string{"alice", "theboss"} {
		seen := map[string]int{}
		for _, m := range testutil.ReadMaildir(t, p.DataDir, "example.com", u) {
			if ids := idRe.FindStringSubmatch(m); ids != nil {
				seen[ids[1]]++
			}
		}
		for id, n := range seen {
			if n > 1 {
				t.Errorf("%s: %s delivered %d times", u, id, n)
			}
		}
		for id := range acked {
			if seen[id] != 1 {
				t.Errorf("%s: acknowledged %s delivered %d times, want once", u, id, seen[id])
			}
		}
	}
	t.Logf("%d messages attempted, %d acknowledged before and during shutdown", sent, len(acked))
}

// sendOne sends one message with Message-ID <id> to alice and theboss
// with net/smtp; nil means the server acknowledged it with 250.
func sendOne(addr, id string) error {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(ioTimeout))
	c, err := smtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("loader.example.org"); err != nil {
		return err
	}
	if err := c.Mail("bob@example.org"); err != nil {
		return err
	}
	for _, r := range []string{"alice@example.com", "theboss@example.com"} {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Message-ID: <%s>\r\nSubject: under load\r\n\r\nbody\r\n", id)
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit() // the 250 is what counts; QUIT may meet a server shutting down
	return nil
}
