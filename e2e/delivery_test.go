package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// aliasConfig has aliases to one and to several users.
const aliasConfig = `hostname = "mx.example.com"
[domains."example.com"]
users = ["alice", "theboss"]
[aliases]
"postmaster@example.com" = ["theboss@example.com"]
"team@example.com" = ["alice@example.com", "theboss@example.com"]
`

// TestRecipientsConverge sends one message to several addresses that all
// lead to alice and theboss (aliases, +detail, upper case): each mailbox
// gets one copy, not one per address.
func TestRecipientsConverge(t *testing.T) {
	p := testutil.StartPosthorn(t, aliasConfig)
	sendMail(t, p.Addr, "bob@example.org",
		[]string{"team@example.com", "alice+lists@example.com", "ALICE@Example.COM", "postmaster@example.com", "theboss@example.com"},
		crlf("Subject: to everyone", "", "once each"))
	waitMailboxes(t, p, 1, "alice", "theboss")
	for _, u := range []string{"alice", "theboss"} {
		msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", u)
		if len(msgs) != 1 {
			t.Errorf("%s has %d copies, want 1", u, len(msgs))
		}
	}
	// One recipient through an alias: Received names the address the
	// client gave, not where it led.
	sendMail(t, p.Addr, "bob@example.org", []string{"postmaster@example.com"}, crlf("Subject: abuse", "", "report"))
	msgs := testutil.WaitMaildir(t, p.DataDir, "example.com", "theboss", 2, deliveryTimeout)
	waitIdle(t, p)
	var found bool
	for _, m := range msgs {
		d := splitDelivered(t, m)
		if d.Rest == lf("Subject: abuse", "", "report") {
			found = true
			if !strings.Contains(d.Received, " for <postmaster@example.com>;") {
				t.Errorf("Received %q does not name postmaster@example.com", d.Received)
			}
		}
	}
	if !found {
		t.Error("theboss did not get the message to postmaster")
	}
}

// TestReturnPathReplaced: Return-Path is added at final delivery from the
// envelope (RFC 5321 4.4); one that came with the message, in any case and
// folded, is dropped, while the same text in the body stays.
func TestReturnPathReplaced(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	sendMail(t, p.Addr, "", []string{"alice@example.com"}, crlf(
		"Return-Path: <forged@evil.example.net>",
		"Subject: bounce",
		"return-path:",
		"  <also-forged@evil.example.net>",
		"X-Kept: yes",
		"",
		"Return-Path: <in-the-body@example.org>"))
	d := checkOnlyMessage(t, p, "alice", lf("Subject: bounce", "X-Kept: yes", "", "Return-Path: <in-the-body@example.org>"))
	if d.ReturnPath != "" {
		t.Errorf("Return-Path <%s> for a null sender, want <>", d.ReturnPath)
	}
}

// TestLargeMessage sends 5 MB of text with many dot-leading lines and
// checks it arrives intact: the streaming paths (DATA reader, spool,
// Maildir writer) cross many buffer boundaries.
func TestLargeMessage(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	rng := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	b.WriteString("Subject: large\r\n\r\n")
	for i := 0; b.Len() < 5<<20; i++ {
		n := rng.IntN(998)
		line := make([]byte, n)
		for j := range line {
			line[j] = byte('!' + rng.IntN(94))
		}
		if i%7 == 0 {
			line = append([]byte("."), line...)
		}
		b.Write(line)
		b.WriteString("\r\n")
	}
	msg := b.String()
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, msg)
	checkOnlyMessage(t, p, "alice", strings.ReplaceAll(msg, "\r\n", "\n"))
}

// TestMailLoop: a message that already carries more Received fields than
// max_received_headers (default 100) is refused with 554 5.4.6 (RFC 5321
// 6.3); one at the limit is accepted.
func TestMailLoop(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	trace := func(n int) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "Received: from hop%d.example.org by hop%d.example.org;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n", i, i+1)
		}
		return b.String()
	}
	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	c.send(trace(101) + "Subject: looping\r\n\r\nround and round\r\n.\r\n")
	c.expectEnh(smtp.CodeTransactionFailed, smtp.ELoopDetected)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	c.send(trace(100) + "Subject: long way\r\n\r\nstill fine\r\n.\r\n")
	c.expectEnh(smtp.CodeOK, smtp.ESuccess)
	c.cmd("QUIT", smtp.CodeClosing)
	checkOnlyMessage(t, p, "alice", strings.ReplaceAll(trace(100)+"Subject: long way\r\n\r\nstill fine\r\n", "\r\n", "\n"))
}

// TestDeferredDeliverySurvivesRestart: when a mailbox cannot be written
// (here its path is taken by a file), the recipient is deferred while the
// other is delivered. The server is then stopped, the problem fixed, and
// the server started again: the recovered queue delivers the deferred
// copy, and the copy already delivered is not delivered again.
func TestDeferredDeliverySurvivesRestart(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+`[queue]
retry_intervals = ["2s"]
`)
	blocker := testutil.MaildirPath(p.DataDir, "example.com", "alice")
	if err := os.MkdirAll(filepath.Dir(blocker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com", "theboss@example.com"},
		crlf("Subject: eventually", "", "delivered"))
	p.WaitLog("delivery deferred", deliveryTimeout)
	testutil.WaitMaildir(t, p.DataDir, "example.com", "theboss", 1, deliveryTimeout)
	if err := p.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if q := testutil.SpoolEntries(t, p.DataDir, "queue"); !containsPrefix(q, id) {
		t.Fatalf("deferred message %s is not in the queue after shutdown: %v", id, q)
	}
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	p.Restart()
	p.WaitLog("queue: recovered spool", ioTimeout)
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	waitIdle(t, p)
	for _, u := range []string{"alice", "theboss"} {
		msgs := testutil.ReadMaildirFiles(t, p.DataDir, "example.com", u)
		if len(msgs) != 1 {
			t.Errorf("%s has %d copies, want 1", u, len(msgs))
			continue
		}
		if !strings.Contains(msgs[0].Name, ".M"+id+"I") {
			t.Errorf("%s: file %s is not message %s", u, msgs[0].Name, id)
		}
		if d := splitDelivered(t, msgs[0].Data); d.Rest != lf("Subject: eventually", "", "delivered") {
			t.Errorf("%s got %q", u, d.Rest)
		}
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// TestGracefulShutdown sends SIGTERM while one client is idle and another
// is in the middle of DATA. The idle one is told 421 4.3.2 and
// disconnected; the one in DATA may finish its message, which is accepted
// (250) and then delivered, before or after a restart; the process exits
// with status 0.
func TestGracefulShutdown(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	idle := dialSMTP(t, p.Addr)
	idle.expect(smtp.CodeReady)
	idle.cmd("EHLO idle.example.org", smtp.CodeOK)
	busy := openData(t, p.Addr)
	busy.send("Subject: in flight\r\n\r\nfirst half\r\n")

	stopped := make(chan error, 1)
	go func() { stopped <- p.Stop() }()
	idle.expectEnh(smtp.CodeServiceNotAvailable, "4.3.2")
	idle.expectClosed()
	// The server is shutting down now; the message in flight completes.
	busy.send("second half\r\n.\r\n")
	id := queueID(t, busy.expectEnh(smtp.CodeOK, smtp.ESuccess))
	busy.expectEnh(smtp.CodeServiceNotAvailable, "4.3.2")
	busy.expectClosed()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("posthorn after SIGTERM: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("posthorn did not exit after SIGTERM")
	}
	if len(testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")) == 0 {
		// Accepted but not yet delivered at exit: it must be in the queue
		// and go out after a restart.
		p.Restart()
		testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	}
	waitIdle(t, p)
	msgs := testutil.ReadMaildirFiles(t, p.DataDir, "example.com", "alice")
	if len(msgs) != 1 || !strings.Contains(msgs[0].Name, ".M"+id+"I") {
		t.Fatalf("alice has %d messages, want just %s", len(msgs), id)
	}
	if d := splitDelivered(t, msgs[0].Data); d.Rest != lf("Subject: in flight", "", "first half", "second half") {
		t.Errorf("alice got %q", d.Rest)
	}
}

// TestMailboxRecreatedAfterRemoval: a Maildir removed while the server
// runs (a user's mailbox reset by an administrator, say) is created again
// on the next delivery, as on the first one. The server must not trust a
// memory of having created it: here the retry interval is 1 s, so even
// a first failed attempt leaves ample time for a retry to succeed.
func TestMailboxRecreatedAfterRemoval(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+`[queue]
retry_intervals = ["1s"]
`)
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, crlf("Subject: first", "", "1"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	waitIdle(t, p)
	if err := os.RemoveAll(testutil.MaildirPath(p.DataDir, "example.com", "alice")); err != nil {
		t.Fatal(err)
	}
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, crlf("Subject: second", "", "2"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, 10*time.Second)
	waitIdle(t, p)
	checkOnlyMessage(t, p, "alice", lf("Subject: second", "", "2"))
}
