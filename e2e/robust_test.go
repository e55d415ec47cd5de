package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// openData runs a session up to the 354 reply to DATA.
func openData(t *testing.T, addr string) *rawClient {
	t.Helper()
	c := dialSMTP(t, addr)
	c.expect(smtp.CodeReady)
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	return c
}

// TestDisconnectDuringData: a client that goes away before the end of
// data never got a 250, so it still holds the message: nothing may be
// delivered, and nothing may stay behind in the spool. The cases include
// data cut right after a "." that is not yet followed by CRLF.
func TestDisconnectDuringData(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	cases := []struct{ name, data string }{
		{"mid-line", "Subject: cut\r\n\r\nhalf a li"},
		{"after CRLF", "Subject: cut\r\n\r\na whole line\r\n"},
		{"after CRLF.", "Subject: cut\r\n\r\nalmost done\r\n."},
		{"after CRLF.CR", "Subject: cut\r\n\r\nalmost done\r\n.\r"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := openData(t, p.Addr)
			c.send(tc.data)
			c.conn.Close()
			// The server logs the lost connection after throwing the
			// message away: wait for that rather than for a while.
			waitLogCount(t, p, "connection lost during DATA", i+1)
			if left := testutil.SpoolEntries(t, p.DataDir, "tmp"); len(left) != 0 {
				t.Errorf("spool tmp/ keeps %v after the client left", left)
			}
			if left := testutil.SpoolEntries(t, p.DataDir, "queue"); len(left) != 0 {
				t.Errorf("spool queue/ has %v after the client left", left)
			}
		})
	}
	// A message sent afterwards is delivered, and is the only one: once it
	// is there, anything queued before it would have been delivered too.
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, crlf("Subject: after", "", "complete"))
	checkOnlyMessage(t, p, "alice", lf("Subject: after", "", "complete"))
}

// waitLogCount waits until substr occurs n times in the server's log.
func waitLogCount(t *testing.T, p *testutil.Posthorn, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for strings.Count(p.Log(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("server logged %q %d times, want %d", substr, strings.Count(p.Log(), substr), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashDuringDataRestart kills the server (SIGKILL) while a client is
// in the middle of DATA: the half-received message is left in spool/tmp.
// On restart the spool must drop it (it was never acknowledged), deliver
// nothing of it, and take new mail as before.
func TestCrashDuringDataRestart(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	c := openData(t, p.Addr)
	c.send("Subject: interrupted\r\n\r\nthe server dies while reading this\r\n")
	// A small message is held in memory; past spool.MemLimit (64 KiB) it
	// goes to its file in tmp/, which is what a crash can leave behind.
	line := strings.Repeat("x", 998) + "\r\n"
	c.send(strings.Repeat(line, 80))
	// Wait until the spool file holds our bytes.
	deadline := time.Now().Add(ioTimeout)
	for len(testutil.SpoolEntries(t, p.DataDir, "tmp")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no file in spool tmp/ during DATA")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Kill()
	c.expectGone()
	if len(testutil.SpoolEntries(t, p.DataDir, "tmp")) == 0 {
		t.Fatal("the killed server left nothing in spool tmp/: the test no longer tests recovery")
	}
	p.Restart()
	if left := testutil.SpoolEntries(t, p.DataDir, "tmp"); len(left) != 0 {
		t.Errorf("spool tmp/ still holds %v after restart", left)
	}
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, crlf("Subject: after restart", "", "ok"))
	checkOnlyMessage(t, p, "alice", lf("Subject: after restart", "", "ok"))
}

// TestBDAT sends a message in BDAT chunks (RFC 3030) over a raw socket.
// Chunks are counted octets, not dot-stuffed text: a "." line, "..", a
// CRLF.CRLF and command-like lines inside a chunk are message content and
// arrive as they were sent.
func TestBDAT(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	ehlo := c.cmd("EHLO client.example.org", smtp.CodeOK)
	if !contains(ehlo.Lines, "CHUNKING") {
		t.Fatalf("EHLO %v does not offer CHUNKING", ehlo)
	}

	// BDAT outside a transaction is refused, and its chunk is read and
	// dropped, not taken for commands.
	bogus := "QUIT\r\n"
	c.send("BDAT " + strconv.Itoa(len(bogus)) + "\r\n" + bogus)
	c.expectEnh(smtp.CodeBadSequence, smtp.EInvalidCommand)
	c.cmd("NOOP", smtp.CodeOK)

	chunk1 := "From: bob@example.org\r\nSubject: chunked\r\n\r\nfirst chunk\r\n.\r\n..two dots\r\n"
	chunk2 := "MAIL FROM:<evil@example.net>\r\n.\r\nlast line\r\n"
	// Pipelined: MAIL, RCPT and the first chunk in one write (RFC 3030 4.2).
	c.send("MAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.com>\r\nRCPT TO:<theboss@example.com>\r\n" +
		"BDAT " + strconv.Itoa(len(chunk1)) + "\r\n" + chunk1)
	c.expectEnh(smtp.CodeOK, smtp.ESenderOK)
	c.expectEnh(smtp.CodeOK, smtp.EDestOK)
	c.expectEnh(smtp.CodeOK, smtp.EDestOK)
	r := c.expectEnh(smtp.CodeOK, smtp.ESuccess)
	if want := smtp.ESuccess + " " + strconv.Itoa(len(chunk1)) + " octets received"; r.Text() != want {
		t.Errorf("reply to the first chunk %q, want %q", r.Text(), want)
	}
	c.send("BDAT " + strconv.Itoa(len(chunk2)) + " LAST\r\n" + chunk2)
	id := queueID(t, c.expectEnh(smtp.CodeOK, smtp.ESuccess))
	// An empty last chunk ends a second message (RFC 3030 2: BDAT 0 LAST).
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	third := "Subject: zero\r\n\r\nthen an empty LAST\r\n"
	c.send("BDAT " + strconv.Itoa(len(third)) + "\r\n" + third)
	c.expect(smtp.CodeOK)
	c.send("BDAT 0 LAST\r\n")
	c.expectEnh(smtp.CodeOK, smtp.ESuccess)
	c.cmd("QUIT", smtp.CodeClosing)

	waitMailboxes(t, p, 1, "theboss")
	waitMailboxes(t, p, 2, "alice")
	want := strings.ReplaceAll(chunk1+chunk2, "\r\n", "\n")
	for _, u := range []string{"alice", "theboss"} {
		msgs := testutil.ReadMaildirFiles(t, p.DataDir, "example.com", u)
		var found bool
		for _, m := range msgs {
			if !strings.Contains(m.Name, ".M"+id+"I") {
				continue
			}
			found = true
			d := splitDelivered(t, m.Data)
			if d.Rest != want {
				t.Errorf("%s got:\n%q\nwant:\n%q", u, d.Rest, want)
			}
			checkReceived(t, d.Received, "client.example.org", "ESMTP", id)
		}
		if !found {
			t.Errorf("%s did not get message %s; has %d messages", u, id, len(msgs))
		}
	}
	alice := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	if len(alice) != 2 {
		t.Fatalf("alice has %d messages, want 2", len(alice))
	}
	var zero int
	for _, m := range alice {
		if d := splitDelivered(t, m); d.Rest == strings.ReplaceAll(third, "\r\n", "\n") {
			zero++
		}
	}
	if zero != 1 {
		t.Errorf("the message ended by BDAT 0 LAST arrived %d times, want once", zero)
	}
}

// TestBDATAbandoned: a BDAT message that is reset with RSET, or whose
// client disconnects between chunks or inside one, is never delivered and
// leaves nothing in the spool; one over max_message_size is refused with
// 552 5.3.4 with the connection kept in step.
func TestBDATAbandoned(t *testing.T) {
	p := testutil.StartPosthorn(t, sizeConfig)
	start := func() *rawClient {
		c := dialSMTP(t, p.Addr)
		c.expect(smtp.CodeReady)
		c.cmd("EHLO client.example.org", smtp.CodeOK)
		c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
		c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
		chunk := "Subject: abandoned\r\n\r\nfirst chunk\r\n"
		c.send("BDAT " + strconv.Itoa(len(chunk)) + "\r\n" + chunk)
		c.expectEnh(smtp.CodeOK, smtp.ESuccess)
		return c
	}

	c := start()
	c.cmd("RSET", smtp.CodeOK)
	c.send("BDAT 5 LAST\r\nhello")
	c.expectEnh(smtp.CodeBadSequence, smtp.EInvalidCommand) // the transaction is gone
	big := strings.Repeat("x", 2000)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.send("BDAT " + strconv.Itoa(len(big)) + " LAST\r\n" + big)
	c.expectEnh(smtp.CodeExceededStorage, smtp.EMsgTooBig)
	c.cmd("NOOP", smtp.CodeOK)
	c.cmd("QUIT", smtp.CodeClosing)

	c = start()
	c.conn.Close() // between chunks
	waitLogCount(t, p, "connection closed", 2)
	c = start()
	c.send("BDAT 100 LAST\r\nonly part of the chunk")
	c.conn.Close()
	waitLogCount(t, p, "connection lost during BDAT", 1)
	waitLogCount(t, p, "connection closed", 3)

	waitIdle(t, p)
	if msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice"); len(msgs) != 0 {
		t.Errorf("alice got %d messages from abandoned BDAT transfers:\n%s", len(msgs), strings.Join(msgs, "\n---\n"))
	}
}

// TestConnectionLimitPerIP: past max_connections_per_ip the server answers
// 421 4.7.0 and closes; once a connection ends, a new one is served.
func TestConnectionLimitPerIP(t *testing.T) {
	p := testutil.StartPosthorn(t, `hostname = "mx.example.com"
[smtp]
max_connections_per_ip = 2
[domains."example.com"]
users = ["alice"]
`)
	a := dialSMTP(t, p.Addr)
	a.expect(smtp.CodeReady)
	b := dialSMTP(t, p.Addr)
	b.expect(smtp.CodeReady)
	c := dialSMTP(t, p.Addr)
	r := c.expect(smtp.CodeServiceNotAvailable)
	if !strings.HasPrefix(r.Text(), "4.7.0 ") {
		t.Errorf("over the limit: %v, want 421 4.7.0", r)
	}
	c.expectClosed()
	a.cmd("QUIT", smtp.CodeClosing)
	a.expectClosed()
	// The server counts the connection as ended once its session returns;
	// a new one may race it, so allow a few tries.
	deadline := time.Now().Add(ioTimeout)
	for {
		d := dialSMTP(t, p.Addr)
		r := d.readReply()
		if r.Code == smtp.CodeReady {
			d.cmd("QUIT", smtp.CodeClosing)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection served after one ended: %v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.cmd("NOOP", smtp.CodeOK)
}

// TestTimeouts: an idle client is dropped after command_timeout, and a
// client trickling its message a byte at a time is dropped when the whole
// transfer exceeds data_timeout (a slow-loris defence), with nothing
// delivered.
func TestTimeouts(t *testing.T) {
	p := testutil.StartPosthorn(t, `hostname = "mx.example.com"
[smtp]
command_timeout = "1s"
data_timeout = "2s"
[domains."example.com"]
users = ["alice"]
`)
	idle := dialSMTP(t, p.Addr)
	idle.expect(smtp.CodeReady)
	begin := time.Now()
	waitDropped(t, idle)
	if d := time.Since(begin); d < 900*time.Millisecond || d > 10*time.Second {
		t.Errorf("idle client dropped after %v, want about 1s", d)
	}

	slow := openData(t, p.Addr)
	begin = time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		waitDropped(t, slow)
	}()
	msg := "Subject: slow\r\n\r\n" + strings.Repeat("trickle\r\n", 100)
trickle:
	for i := 0; i < len(msg); i++ {
		select {
		case <-closed:
			break trickle
		case <-time.After(100 * time.Millisecond):
		}
		slow.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
		if _, err := slow.conn.Write([]byte{msg[i]}); err != nil {
			break // the server has closed
		}
	}
	<-closed
	if d := time.Since(begin); d < 1900*time.Millisecond || d > 10*time.Second {
		t.Errorf("trickling client dropped after %v, want about 2s", d)
	}
	waitIdle(t, p)
	if msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice"); len(msgs) != 0 {
		t.Errorf("alice got %d messages", len(msgs))
	}
}

// waitDropped reads until the server ends the connection, allowing one
// 421 reply before it does.
func waitDropped(t *testing.T, c *rawClient) {
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return
		}
		if !strings.HasPrefix(line, "421") {
			t.Errorf("server sent %q before dropping the client", line)
		}
	}
}
