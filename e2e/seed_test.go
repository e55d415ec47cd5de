package e2e

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// The seed session (testdata/seed-session.txt) is the classic example of
// an SMTP exchange: bob@example.org sends one message to alice and theboss
// at example.com. Its "S:" lines are the replies of the server it was
// recorded from; Posthorn must give the same reply codes.

// step is one line of the transcript.
type step struct {
	client bool   // a line the client sends (else a reply to expect)
	text   string // without the "C: " / "S: " label
	closed bool   // "{The server closes the connection}"
}

func loadTranscript(t testing.TB) []step {
	t.Helper()
	b, err := os.ReadFile("testdata/seed-session.txt")
	if err != nil {
		t.Fatal(err)
	}
	var steps []step
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		switch {
		case line == "C:":
			steps = append(steps, step{client: true}) // the empty line after the header
		case strings.HasPrefix(line, "C: "):
			steps = append(steps, step{client: true, text: line[3:]})
		case strings.HasPrefix(line, "S: "):
			steps = append(steps, step{text: line[3:]})
		case line == "{The server closes the connection}":
			steps = append(steps, step{closed: true})
		default:
			t.Fatalf("transcript line %q", line)
		}
	}
	return steps
}

// seedMessage returns the lines the client sends between DATA's 354 and
// the final ".".
func seedMessage(t testing.TB) []string {
	t.Helper()
	var lines []string
	inData := false
	for _, s := range loadTranscript(t) {
		switch {
		case !s.client && strings.HasPrefix(s.text, "354"):
			inData = true
		case inData && s.client && s.text == ".":
			return lines
		case inData && s.client:
			lines = append(lines, s.text)
		}
	}
	t.Fatal("transcript has no message")
	return nil
}

var queuedRe = regexp.MustCompile(`^Ok: queued as ([0-9A-Z]+)$`)

// checkSeedDelivery checks that alice and theboss each got exactly one
// copy of the seed message: the client's 5 header fields and 4 body lines
// unchanged (LF line endings, as Maildir readers expect), under a
// Return-Path with the envelope sender and a Received field.
func checkSeedDelivery(t *testing.T, p *testutil.Posthorn, helo, proto, id string) {
	t.Helper()
	for _, user := range []string{"alice", "theboss"} {
		testutil.WaitMaildir(t, p.DataDir, "example.com", user, 1, deliveryTimeout)
	}
	waitIdle(t, p)
	want := lf(seedMessage(t)...)
	for _, user := range []string{"alice", "theboss"} {
		msgs := testutil.ReadMaildirFiles(t, p.DataDir, "example.com", user)
		if len(msgs) != 1 {
			t.Errorf("%s has %d messages, want 1", user, len(msgs))
			continue
		}
		if id != "" && !strings.Contains(msgs[0].Name, ".M"+id+"I") {
			t.Errorf("%s: file name %s does not carry queue ID %s", user, msgs[0].Name, id)
		}
		d := splitDelivered(t, msgs[0].Data)
		if d.ReturnPath != "bob@example.org" {
			t.Errorf("%s: Return-Path <%s>, want <bob@example.org>", user, d.ReturnPath)
		}
		checkReceived(t, d.Received, helo, proto, id)
		// With two recipients the Received field must not name either: the
		// copy for one would reveal the other (a Bcc, say).
		if strings.Contains(d.Received, " for <") {
			t.Errorf("%s: Received %q names a recipient of a two-recipient message", user, d.Received)
		}
		if d.Rest != want {
			t.Errorf("%s: message after the trace fields:\n%q\nwant:\n%q", user, d.Rest, want)
		}
	}
}

// TestSeedSessionRawSocket replays the seed transcript verbatim over a TCP
// socket, checking each reply as it comes, then the two mailboxes.
func TestSeedSessionRawSocket(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	c := dialSMTP(t, p.Addr)
	id := ""
	for _, s := range loadTranscript(t) {
		switch {
		case s.closed:
			c.expectClosed()
		case s.client:
			c.send(s.text + "\r\n")
		default:
			want := s.text[:3]
			r := c.readReply()
			if strconv.Itoa(r.Code) != want {
				t.Fatalf("transcript %q: got reply %v", s.text, r)
			}
			// HELO, not EHLO: no enhanced status codes in the text.
			switch r.Code {
			case smtp.CodeReady:
				if r.Text() != hostname+" ESMTP Posthorn" {
					t.Errorf("greeting %q, want %q", r.Text(), hostname+" ESMTP Posthorn")
				}
			case smtp.CodeStartData:
				if r.Text() != "End data with <CR><LF>.<CR><LF>" {
					t.Errorf("354 text %q", r.Text())
				}
			case smtp.CodeOK:
				if strings.Contains(s.text, "queued as") {
					m := queuedRe.FindStringSubmatch(r.Text())
					if m == nil {
						t.Fatalf("reply to end of data %v, want \"250 Ok: queued as <ID>\"", r)
					}
					id = m[1]
				}
			}
			if len(r.Lines) != 1 {
				t.Errorf("reply %v has %d lines, want 1", r, len(r.Lines))
			}
		}
	}
	if id == "" {
		t.Fatal("no queue ID seen")
	}
	checkSeedDelivery(t, p, "relay.example.org", "SMTP", id)
}

// TestSeedSessionSwaks sends the seed message with swaks (EHLO, its own
// dot-stuffing and end of data).
func TestSeedSessionSwaks(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	p := testutil.StartPosthorn(t, baseConfig)
	// No newline at the end: swaks adds the CRLF before its ".".
	file := writeFile(t, "seed.eml", strings.Join(seedMessage(t), "\n"))
	out, code := swaks(t, p.Addr, "--helo", "relay.example.org", "-f", "bob@example.org",
		"-t", "alice@example.com,theboss@example.com", "--data", "@"+file)
	if code != 0 {
		t.Fatalf("swaks exited %d:\n%s", code, out)
	}
	m := regexp.MustCompile(`<-  250 2\.0\.0 Ok: queued as ([0-9A-Z]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("swaks output has no \"250 2.0.0 Ok: queued as\":\n%s", out)
	}
	checkSeedDelivery(t, p, "relay.example.org", "ESMTP", m[1])
}

// TestSeedSessionSmtplib sends the seed message with Python's smtplib,
// which, like the transcript, says HELO.
func TestSeedSessionSmtplib(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	res := pythonSend(t, p, pySend{Helo: "relay.example.org", From: "bob@example.org",
		To: []string{"alice@example.com", "theboss@example.com"}}, []byte(crlf(seedMessage(t)...)))
	if !res.OK || len(res.Refused) != 0 {
		t.Fatalf("smtplib: %+v", res)
	}
	checkSeedDelivery(t, p, "relay.example.org", "SMTP", "")
}
