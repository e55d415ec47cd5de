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
