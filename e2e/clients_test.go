package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// TestSwaksPipelining sends with swaks --pipeline: swaks writes MAIL, both
// RCPTs and DATA before reading any reply, which it does only when the
// server offers PIPELINING (RFC 2920).
func TestSwaksPipelining(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	p := testutil.StartPosthorn(t, baseConfig)
	body := "Subject: pipelined\nMessage-ID: <pipe@example.org>\n\nsent in one go"
	out, code := swaks(t, p.Addr, "--pipeline", "--helo", "relay.example.org", "-f", "bob@example.org",
		"-t", "alice@example.com,theboss@example.com", "--data", "@"+writeFile(t, "m.eml", body))
	if code != 0 {
		t.Fatalf("swaks exited %d:\n%s", code, out)
	}
	// In swaks's transcript, "->" lines are sent and "<-" lines received:
	// pipelining shows as DATA sent before the reply to MAIL arrived.
	data := strings.Index(out, " -> DATA")
	mailOK := strings.Index(out, "<-  250 2.1.0")
	if data < 0 || mailOK < 0 || data > mailOK {
		t.Errorf("swaks did not pipeline MAIL..DATA:\n%s", out)
	}
	waitMailboxes(t, p, 1, "alice", "theboss")
	for _, u := range []string{"alice", "theboss"} {
		msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", u)
		if len(msgs) != 1 {
			t.Fatalf("%s has %d messages, want 1", u, len(msgs))
		}
		if d := splitDelivered(t, msgs[0]); d.Rest != body+"\n" {
			t.Errorf("%s got %q", u, d.Rest)
		}
	}
}

// TestRawPipelinedReplies writes a whole transaction, with a refused
// recipient in the middle, in one write: the replies must come back one
// per command, in order (RFC 2920 3.1), and the message go to the
// accepted recipients only.
func TestRawPipelinedReplies(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	c.send("EHLO client.example.org\r\nMAIL FROM:<bob@example.org>\r\nRCPT TO:<alice@example.com>\r\n" +
		"RCPT TO:<nobody@example.com>\r\nRCPT TO:<theboss@example.com>\r\nDATA\r\n")
	ehlo := c.expect(smtp.CodeOK)
	if !contains(ehlo.Lines, "PIPELINING") {
		t.Errorf("EHLO reply %v does not offer PIPELINING", ehlo)
	}
	c.expectEnh(smtp.CodeOK, smtp.ESenderOK)
	c.expectEnh(smtp.CodeOK, smtp.EDestOK)
	c.expectEnh(smtp.CodeMailboxUnavailable, smtp.EBadDestMailbox)
	c.expectEnh(smtp.CodeOK, smtp.EDestOK)
	c.expect(smtp.CodeStartData)
	c.send(crlf("Subject: pipelined", "", "body") + ".\r\nQUIT\r\n")
	c.expectEnh(smtp.CodeOK, smtp.ESuccess)
	c.expect(smtp.CodeClosing)
	c.expectClosed()
	waitMailboxes(t, p, 1, "alice", "theboss")
	for _, u := range []string{"alice", "theboss"} {
		if n := len(testutil.ReadMaildir(t, p.DataDir, "example.com", u)); n != 1 {
			t.Errorf("%s has %d messages, want 1", u, n)
		}
	}
	if _, err := os.Stat(testutil.MaildirPath(p.DataDir, "example.com", "nobody")); err == nil {
		t.Error("a mailbox was made for the refused recipient")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dotLines is a body whose lines start with dots: the client must stuff
// them and the server unstuff them, and the mailbox then has them as
// written.
var dotLines = []string{"Subject: dots", "", "before", ".", "..", ".hidden", "...", " .not first", "after ."}

// TestDotStuffingSwaks: swaks stuffs leading dots; the Maildir copy has
// the original lines.
func TestDotStuffingSwaks(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	p := testutil.StartPosthorn(t, baseConfig)
	out, code := swaks(t, p.Addr, "--helo", "relay.example.org", "-f", "bob@example.org",
		"-t", "alice@example.com", "--data", "@"+writeFile(t, "dots.eml", strings.Join(dotLines, "\n")))
	if code != 0 {
		t.Fatalf("swaks exited %d:\n%s", code, out)
	}
	// Make sure the test tests something: swaks did stuff.
	if !strings.Contains(out, " -> ..hidden") {
		t.Fatalf("swaks did not dot-stuff:\n%s", out)
	}
	checkOnlyMessage(t, p, "alice", lf(dotLines...))
}

// TestDotStuffingSmtplib: the same with smtplib.
func TestDotStuffingSmtplib(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	res := pythonSend(t, p, pySend{From: "bob@example.org", To: []string{"alice@example.com"}}, []byte(crlf(dotLines...)))
	if !res.OK {
		t.Fatalf("smtplib: %+v", res)
	}
	checkOnlyMessage(t, p, "alice", lf(dotLines...))
}

// TestDotUnstuffingRaw sends hand-stuffed data: a line "." in the mailbox
// must have come as "..", and a lone "." ends the data only after CRLF.
func TestDotUnstuffingRaw(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	c.send("Subject: raw dots\r\n\r\n..\r\n...\r\n..hidden\r\nx.\r\n.\r\n")
	c.expectEnh(smtp.CodeOK, smtp.ESuccess)
	c.cmd("QUIT", smtp.CodeClosing)
	checkOnlyMessage(t, p, "alice", lf("Subject: raw dots", "", ".", "..", ".hidden", "x."))
}

// checkOnlyMessage waits for delivery and checks that user@example.com has
// exactly one message, whose part after the trace fields is want.
func checkOnlyMessage(t *testing.T, p *testutil.Posthorn, user, want string) delivered {
	t.Helper()
	testutil.WaitMaildir(t, p.DataDir, "example.com", user, 1, deliveryTimeout)
	waitIdle(t, p)
	msgs := testutil.ReadMaildir(t, p.DataDir, "example.com", user)
	if len(msgs) != 1 {
		t.Fatalf("%s has %d messages, want 1", user, len(msgs))
	}
	d := splitDelivered(t, msgs[0])
	if d.Rest != want {
		t.Errorf("%s got:\n%q\nwant:\n%q", user, d.Rest, want)
	}
	return d
}

// sizeConfig limits messages to 1 KiB (the smallest limit allowed).
const sizeConfig = `hostname = "mx.example.com"
[smtp]
max_message_size = "1KiB"
[domains."example.com"]
users = ["alice", "theboss"]
`

// bodyOfSize returns a message of exactly n bytes (n >= 19; CRLF line
// endings, counted as on the wire before dot-stuffing).
func bodyOfSize(n int) string {
	var b strings.Builder
	b.WriteString("Subject: size\r\n\r\n")
	for b.Len() < n {
		line := 70
		if left := n - b.Len(); left <= 100 {
			line = left - 2 // the last line takes up the rest
		}
		b.WriteString(strings.Repeat("x", line) + "\r\n")
	}
	return b.String()
}

// TestMaxMessageSize: a message over max_message_size is refused with
// 552 5.3.4 (RFC 1870) whether the client announces its size or not, and
// nothing of it is delivered; one of exactly the limit is accepted.
func TestMaxMessageSize(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	for _, n := range []int{1024, 1025, 5000} {
		if got := len(bodyOfSize(n)); got != n {
			t.Fatalf("bodyOfSize(%d) has %d bytes", n, got)
		}
	}
	p := testutil.StartPosthorn(t, sizeConfig)

	// swaks does not send SIZE=: the server finds out while reading DATA
	// and must still read to the end before answering.
	big := strings.ReplaceAll(bodyOfSize(5000), "\r\n", "\n")
	out, code := swaks(t, p.Addr, "--helo", "relay.example.org", "-f", "bob@example.org",
		"-t", "alice@example.com", "--data", "@"+writeFile(t, "big.eml", strings.TrimSuffix(big, "\n")))
	if code != 26 { // swaks: "server did not accept mail following data"
		t.Errorf("swaks exited %d, want 26:\n%s", code, out)
	}
	if !strings.Contains(out, "<** 552 5.3.4 ") {
		t.Errorf("swaks output has no 552 5.3.4 after data:\n%s", out)
	}

	// smtplib announces SIZE= on MAIL: refused before any data is sent.
	res := pythonSend(t, p, pySend{From: "bob@example.org", To: []string{"alice@example.com"}}, []byte(bodyOfSize(5000)))
	if res.OK || res.Code != smtp.CodeExceededStorage {
		t.Errorf("smtplib with a 5000-byte message: %+v, want refused with 552", res)
	}

	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	ehlo := c.cmd("EHLO client.example.org", smtp.CodeOK)
	if !contains(ehlo.Lines, "SIZE 1024") {
		t.Errorf("EHLO %v does not announce SIZE 1024", ehlo)
	}
	c.send("MAIL FROM:<bob@example.org> SIZE=1025\r\n")
	c.expectEnh(smtp.CodeExceededStorage, smtp.EMsgTooBig)
	// One byte over the limit, without SIZE=.
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	c.send(bodyOfSize(1025) + ".\r\n")
	c.expectEnh(smtp.CodeExceededStorage, smtp.EMsgTooBig)
	// Exactly the limit.
	c.cmd("MAIL FROM:<bob@example.org> SIZE=1024", smtp.CodeOK)
	c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	c.send(bodyOfSize(1024) + ".\r\n")
	c.expectEnh(smtp.CodeOK, smtp.ESuccess)
	c.cmd("QUIT", smtp.CodeClosing)

	// Only the message of exactly 1024 bytes arrives.
	checkOnlyMessage(t, p, "alice", strings.ReplaceAll(bodyOfSize(1024), "\r\n", "\n"))
}

// TestUnknownUser: a recipient that is no user of a local domain is
// refused at RCPT with 550 5.1.1, and no mailbox appears for it.
func TestUnknownUser(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	p := testutil.StartPosthorn(t, baseConfig)
	out, code := swaks(t, p.Addr, "--helo", "relay.example.org", "-f", "bob@example.org", "-t", "nobody@example.com")
	if code != 24 { // swaks: "no RCPTs accepted"
		t.Errorf("swaks exited %d, want 24:\n%s", code, out)
	}
	if !strings.Contains(out, "<** 550 5.1.1 ") {
		t.Errorf("swaks output has no 550 5.1.1:\n%s", out)
	}
	waitIdle(t, p)
	if _, err := os.Stat(filepath.Join(p.DataDir, "mail", "example.com", "nobody")); err == nil {
		t.Error("a mailbox was made for an unknown user")
	}
	for _, u := range []string{"alice", "theboss"} {
		if n := len(testutil.ReadMaildir(t, p.DataDir, "example.com", u)); n != 0 {
			t.Errorf("%s has %d messages, want 0", u, n)
		}
	}
}

// TestRelayDenied: mail for a domain that is not local is refused with
// 554 5.7.1: Posthorn is no open relay.
func TestRelayDenied(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	p := testutil.StartPosthorn(t, baseConfig)
	out, code := swaks(t, p.Addr, "--helo", "relay.example.org", "-f", "bob@example.org", "-t", "victim@elsewhere.example.net")
	if code != 24 {
		t.Errorf("swaks exited %d, want 24:\n%s", code, out)
	}
	if !strings.Contains(out, "<** 554 5.7.1 ") {
		t.Errorf("swaks output has no 554 5.7.1:\n%s", out)
	}
	// With a local recipient too, the remote one is still refused and the
	// message goes to the local one only.
	out, code = swaks(t, p.Addr, "--helo", "relay.example.org", "-f", "bob@example.org",
		"-t", "victim@elsewhere.example.net,alice@example.com")
	if code != 0 || !strings.Contains(out, "<** 554 5.7.1 ") {
		t.Errorf("swaks exited %d, want 0 with one 554 5.7.1:\n%s", code, out)
	}
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	waitIdle(t, p)
	ents, err := os.ReadDir(filepath.Join(p.DataDir, "mail"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "example.com" {
			t.Errorf("mail directory for %s appeared", e.Name())
		}
	}
	if n := len(testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")); n != 1 {
		t.Errorf("alice has %d messages, want 1", n)
	}
}

// TestEightBitMIME: a BODY=8BITMIME message with UTF-8 and Latin-1 bytes
// (and every byte from 0x80 to 0xFF) arrives byte for byte, apart from
// CRLF becoming LF.
func TestEightBitMIME(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	var high []byte
	for b := 0x80; b <= 0xFF; b++ {
		high = append(high, byte(b))
	}
	msg := "Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\n" +
		"Grüße aus Köln, naïve café, ☃ \U0001F4EF\r\n" +
		"latin-1: caf\xe9 cr\xe8me br\xfbl\xe9e\r\n" +
		string(high) + "\r\n"
	res := pythonSend(t, p, pySend{From: "bob@example.org", To: []string{"alice@example.com"},
		MailOptions: []string{"BODY=8BITMIME"}}, []byte(msg))
	if !res.OK {
		t.Fatalf("smtplib: %+v", res)
	}
	d := checkOnlyMessage(t, p, "alice", strings.ReplaceAll(msg, "\r\n", "\n"))
	checkReceived(t, d.Received, "client.example.org", "ESMTP", "")
}

// utf8Config has an alias with a UTF-8 local part (RFC 6531); mailbox
// names themselves are restricted to [a-z0-9._-].
const utf8Config = `hostname = "mx.example.com"
[domains."example.com"]
users = ["alice", "theboss"]
[aliases]
"jörg@example.com" = ["alice@example.com"]
`

// TestSMTPUTF8 sends from and to UTF-8 addresses with smtplib and the
// SMTPUTF8 parameter: the alias jörg@example.com delivers to alice, with
// the UTF-8 sender in Return-Path and UTF8SMTP in Received (RFC 6531 3.7).
// Without SMTPUTF8 the same recipient is refused with 553 5.6.7.
func TestSMTPUTF8(t *testing.T) {
	p := testutil.StartPosthorn(t, utf8Config)
	msg := "From: Bjørn <bjørn@example.org>\r\nTo: Jörg <jörg@example.com>\r\nSubject: Grüße\r\n\r\nHej Jörg!\r\n"
	res := pythonSend(t, p, pySend{From: "bjørn@example.org", To: []string{"jörg@example.com"},
		MailOptions: []string{"SMTPUTF8", "BODY=8BITMIME"}}, []byte(msg))
	if !res.OK || len(res.Refused) != 0 {
		t.Fatalf("smtplib: %+v", res)
	}
	d := checkOnlyMessage(t, p, "alice", strings.ReplaceAll(msg, "\r\n", "\n"))
	if d.ReturnPath != "bjørn@example.org" {
		t.Errorf("Return-Path <%s>, want <bjørn@example.org>", d.ReturnPath)
	}
	checkReceived(t, d.Received, "client.example.org", "UTF8SMTP", "")
	if !strings.Contains(d.Received, " for <jörg@example.com>;") {
		t.Errorf("Received %q does not name the one recipient as given", d.Received)
	}

	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.send("RCPT TO:<jörg@example.com>\r\n")
	c.expectEnh(smtp.CodeMailboxNotAllowed, smtp.ENeedsSMTPUTF8)
	c.send("RSET\r\nMAIL FROM:<bjørn@example.org>\r\n")
	c.expect(smtp.CodeOK)
	c.expectEnh(smtp.CodeMailboxNotAllowed, smtp.ENeedsSMTPUTF8)
	c.cmd("QUIT", smtp.CodeClosing)
}

// idnConfig has a local domain written in Unicode.
const idnConfig = `hostname = "mx.example.com"
[domains."bücher.example"]
users = ["alice"]
`

// TestInternationalDomain: mail for alice@bücher.example (sent with
// SMTPUTF8) and for its A-label form alice@xn--bcher-kva.example (plain
// ASCII) lands in the same Maildir, named by the A-label.
func TestInternationalDomain(t *testing.T) {
	p := testutil.StartPosthorn(t, idnConfig)
	res := pythonSend(t, p, pySend{From: "bob@example.org", To: []string{"alice@bücher.example"},
		MailOptions: []string{"SMTPUTF8"}}, []byte(crlf("Subject: U-label", "", "one")))
	if !res.OK {
		t.Fatalf("smtplib: %+v", res)
	}
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@xn--bcher-kva.example"}, crlf("Subject: A-label", "", "two"))
	testutil.WaitMaildir(t, p.DataDir, "xn--bcher-kva.example", "alice", 2, deliveryTimeout)
	waitIdle(t, p)
	ents, err := os.ReadDir(filepath.Join(p.DataDir, "mail"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "xn--bcher-kva.example" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("mail/ holds %v, want only xn--bcher-kva.example", names)
	}
	if n := len(testutil.ReadMaildir(t, p.DataDir, "xn--bcher-kva.example", "alice")); n != 2 {
		t.Errorf("alice@bücher.example has %d messages, want 2", n)
	}
}

// TestAnyUserMailboxNames: with accept_any_user, the local part becomes a
// directory name, so only safe names may: upper case folds to lower,
// +detail is dropped, and local parts that would climb out of the mail
// directory or hide in it are refused with 550 5.1.1.
func TestAnyUserMailboxNames(t *testing.T) {
	p := testutil.StartPosthorn(t, `hostname = "mx.example.com"
[domains."example.com"]
accept_any_user = true
`)
	c := dialSMTP(t, p.Addr)
	c.expect(smtp.CodeReady)
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	for _, bad := range []string{`"../../etc"`, `".."`, `"a/b"`, `".hidden"`, `"x y"`, `"a\\b"`} {
		c.send("RCPT TO:<" + bad + "@example.com>\r\n")
		r := c.readReply()
		if r.Code/100 != 5 {
			t.Errorf("RCPT TO:<%s@example.com>: %v, want 5xx", bad, r)
		}
	}
	c.cmd("RCPT TO:<Carol.Smith+news@example.com>", smtp.CodeOK)
	c.cmd("DATA", smtp.CodeStartData)
	c.send(crlf("Subject: any user", "", "hi") + ".\r\n")
	c.expect(smtp.CodeOK)
	c.cmd("QUIT", smtp.CodeClosing)
	testutil.WaitMaildir(t, p.DataDir, "example.com", "carol.smith", 1, deliveryTimeout)
	waitIdle(t, p)
	ents, err := os.ReadDir(filepath.Join(p.DataDir, "mail", "example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "carol.smith" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("mailboxes %v, want only carol.smith", names)
	}
	// Nothing escaped the mail directory.
	top, err := os.ReadDir(p.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range top {
		if e.Name() != "mail" && e.Name() != "spool" && e.Name() != "control.sock" {
			t.Errorf("unexpected %s in the data directory", e.Name())
		}
	}
}
