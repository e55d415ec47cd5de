package smtpclient

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/smtp"
)

// Tests against a scripted fake server: the replies real servers give and
// Posthorn's server never does.

func TestFakeHELOFallback(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.send("220 old.example.org SMTP")
		p.expect("EHLO " + ourHostname)
		p.send("502 Command not implemented")
		p.expect("HELO " + ourHostname)
		p.send("250 old.example.org")
		// No PIPELINING: one command, one reply. A client that does not
		// wait for each reply would have its next line read here early,
		// which the exact sequence below would not notice, so each reply
		// is sent only after the line is checked.
		p.expect("MAIL FROM:<a@example.org>")
		p.send("250 ok")
		p.expect("RCPT TO:<b@example.net>")
		p.send("250 ok")
		p.expect("DATA")
		p.send("354 go ahead")
		if got := p.data(); got != "hello\r\n" {
			t.Errorf("data %q", got)
		}
		p.send("250 queued")
		p.expect("QUIT")
		p.send("221 bye")
		p.expectEOF()
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Extensions()) != 0 {
		t.Errorf("extensions after HELO: %v", c.Extensions())
	}
	// Size is not sent without SIZE, and the ASCII message needs nothing.
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Size: 7, Body: strings.NewReader("hello\r\n")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("Send: %v %+v", err, res)
	}
	// Without ENHANCEDSTATUSCODES the code is derived from the class.
	if res[0].Reply != "250 2.0.0 queued" {
		t.Errorf("reply %q", res[0].Reply)
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
	wait()
}

func TestFakePipelinedRcpt4xx(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("PIPELINING", "ENHANCEDSTATUSCODES", "SIZE 1000", "8BITMIME")
		// All four commands must arrive before any reply: the client
		// pipelines (RFC 2920). If it waited for a reply, this script
		// would wait for its next line and the test would time out.
		p.expect("MAIL FROM:<> SIZE=20 BODY=8BITMIME")
		p.expect("RCPT TO:<one@example.net>")
		p.expect("RCPT TO:<two@example.net>")
		p.expect("RCPT TO:<three@example.net>")
		p.expect("DATA")
		p.send("250 2.1.0 ok",
			"250 2.1.5 ok",
			"451-4.3.0 try",
			"451 4.3.0 again later",
			"550-5.1.1 no such",
			"550-user here",
			"550 5.1.1 at all",
			"354 go")
		p.data()
		p.send("250 2.0.0 done")
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(ctx, Message{To: []string{"one@example.net", "two@example.net", "three@example.net"}, Size: 20, Body8Bit: true, Body: strings.NewReader("x\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[0].Reply != "250 2.0.0 done" {
		t.Errorf("one: %+v", res[0])
	}
	want1 := &smtp.Error{Code: 451, Enhanced: "4.3.0", Message: "try again later"}
	if e := res[1].Err; e == nil || *e != *want1 || !e.Temporary() {
		t.Errorf("two: %+v, want %v", e, want1)
	}
	// The enhanced code comes off every line that has it, not others.
	want2 := &smtp.Error{Code: 550, Enhanced: "5.1.1", Message: "no such user here at all"}
	if e := res[2].Err; e == nil || *e != *want2 || e.Temporary() {
		t.Errorf("three: %+v, want %v", e, want2)
	}
	wait()
}

func TestFakeEndOfData5xx(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("PIPELINING")
		p.expect("MAIL FROM:<a@example.org>")
		p.expect("RCPT TO:<one@example.net>")
		p.expect("RCPT TO:<two@example.net>")
		p.expect("RCPT TO:<three@example.net>")
		p.expect("DATA")
		p.send("250 ok", "250 ok", "550 no", "250 ok", "354 go")
		p.data()
		p.send("554 5.7.1 spam, go away")
		// The transaction ended with the reply: no RSET needed.
		p.expect("MAIL FROM:<a@example.org>")
		p.expect("RCPT TO:<one@example.net>")
		p.expect("DATA")
		p.send("250 ok", "250 ok", "354 go")
		p.data()
		p.send("250 fine this time")
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"one@example.net", "two@example.net", "three@example.net"}, Body: strings.NewReader("x\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		// No ENHANCEDSTATUSCODES: "5.7.1" stays text, the code is derived.
		if e := res[i].Err; e == nil || e.Code != 554 || e.Enhanced != "5.0.0" || e.Message != "5.7.1 spam, go away" {
			t.Errorf("%s: %+v", res[i].Addr, e)
		}
	}
	if e := res[1].Err; e == nil || e.Code != 550 || e.Message != "no" {
		t.Errorf("two: %+v", e)
	}
	res, err = c.Send(ctx, Message{From: "a@example.org", To: []string{"one@example.net"}, Body: strings.NewReader("y\r\n")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("second Send: %v %+v", err, res)
	}
	wait()
}

func TestFakeAllRcptsRefusedThenRset(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("PIPELINING")
		p.expect("MAIL FROM:<a@example.org>")
		p.expect("RCPT TO:<one@example.net>")
		p.expect("DATA")
		// A broken server that says 354 with no recipient: RFC 2920 3.1
		// wants an empty message sent.
		p.send("250 ok", "550 no", "354 go")
		if got := p.data(); got != "" {
			t.Errorf("data %q, want empty", got)
		}
		p.send("554 no valid recipients")
		p.expect("MAIL FROM:<a@example.org>")
		p.expect("RCPT TO:<two@example.net>")
		p.expect("DATA")
		p.send("250 ok", "550 no", "554 no valid recipients")
		// MAIL was accepted: the next transaction starts with RSET.
		p.expect("RSET")
		p.expect("MAIL FROM:<a@example.org>")
		p.expect("RCPT TO:<three@example.net>")
		p.expect("DATA")
		p.send("250 ok", "250 ok", "250 ok", "354 go")
		p.data()
		p.send("250 done")
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, to := range []string{"one@example.net", "two@example.net"} {
		res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{to}, Body: strings.NewReader("x\r\n")})
		if err != nil {
			t.Fatal(err)
		}
		if e := res[0].Err; e == nil || e.Code != 550 {
			t.Errorf("%s: %+v, want the 550", to, res[0])
		}
	}
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"three@example.net"}, Body: strings.NewReader("x\r\n")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("third Send: %v %+v", err, res)
	}
	wait()
}

func TestFakeGreeting554(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.send("554-5.7.1 no service", "554 for you")
		// RFC 5321 3.1: the client says QUIT.
		p.expect("QUIT")
		p.send("221 bye")
		p.expectEOF()
	})
	_, err := Dial(testCtx(t), addr, opts())
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 554 || se.Temporary() || se.Message != "5.7.1 no service for you" {
		t.Fatalf("Dial: %v, want the 554", err)
	}
	wait()
}

func TestFakeClosedMidData(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("PIPELINING", "ENHANCEDSTATUSCODES")
		p.expect("MAIL")
		p.expect("RCPT")
		p.expect("DATA")
		p.send("250 ok", "250 ok", "354 go")
		p.expect("Subject: first line")
		p.conn.Close()
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	// A body much larger than the socket buffers, so that writing fails,
	// or else reading the final reply does.
	body := "Subject: first line\r\n\r\n" + strings.Repeat(strings.Repeat("x", 998)+"\r\n", 8000)
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Body: strings.NewReader(body)})
	if err == nil || res != nil {
		t.Fatalf("Send: %v %+v, want a connection error and no results", err, res)
	}
	if _, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Body: strings.NewReader("x")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after failure: %v, want ErrClosed", err)
	}
	if err := c.Reset(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Reset after failure: %v, want ErrClosed", err)
	}
	wait()
}

func TestFakeServer421(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo()
		p.expect("MAIL")
		p.send("250 ok")
		p.expect("RCPT")
		p.send("421 4.3.2 shutting down")
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Body: strings.NewReader("x")})
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 421 {
		t.Fatalf("Send: %v, want a connection error with the 421", err)
	}
	wait()
}

func TestFakeNeverAnswers(t *testing.T) {
	release := make(chan struct{})
	addr, wait := fakeServer(t, func(p *peer) {
		<-release // accept, then say nothing
	})
	o := opts()
	o.Timeouts.Greeting = 200 * time.Millisecond
	start := time.Now()
	_, err := Dial(testCtx(t), addr, o)
	close(release)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Dial: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v with a 200ms greeting timeout", d)
	}
	wait()
}

func TestFakeSilentAtEndOfData(t *testing.T) {
	release := make(chan struct{})
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("PIPELINING")
		p.expect("MAIL")
		p.expect("RCPT")
		p.expect("DATA")
		p.send("250 ok", "250 ok", "354 go")
		p.data()
		<-release
	})
	o := opts()
	o.Timeouts.DataEnd = 200 * time.Millisecond
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Body: strings.NewReader("x\r\n")})
	close(release)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Send: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send took %v with a 200ms end-of-data timeout", d)
	}
	wait()
}

func TestFakeContextCancel(t *testing.T) {
	release := make(chan struct{})
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo()
		p.expect("MAIL")
		<-release
	})
	c, err := Dial(testCtx(t), addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	// The default 5-minute MAIL timeout must not be what ends this.
	_, err = c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Body: strings.NewReader("x")})
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Send: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Send took %v after cancellation", d)
	}
	wait()
}

// refusedLocally runs a Send that must be refused before any command and
// returns the result of its single recipient.
func refusedLocally(t *testing.T, m Message, exts ...string) RcptResult {
	t.Helper()
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo(exts...)
		// The next command must be QUIT: nothing of the message was sent.
		p.expect("QUIT")
		p.send("221 bye")
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Send(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
	wait()
	if len(res) != 1 {
		t.Fatalf("results %+v", res)
	}
	if res[0].Reply != "" {
		t.Errorf("Reply %q for a refusal made locally", res[0].Reply)
	}
	return res[0]
}

func TestFakeSizeTooSmall(t *testing.T) {
	r := refusedLocally(t, Message{From: "a@example.org", To: []string{"b@example.net"}, Size: 1001, Body: strings.NewReader("x")},
		"PIPELINING", "SIZE 1000")
	if r.Err == nil || r.Err.Code != smtp.CodeExceededStorage || r.Err.Enhanced != smtp.EMsgTooBig || r.Err.Temporary() {
		t.Errorf("result %+v, want permanent 552 5.3.4", r)
	}
}

func TestFakeSMTPUTF8Missing(t *testing.T) {
	for _, m := range []Message{
		{From: "a@example.org", To: []string{"b@example.net"}, SMTPUTF8: true},
		// Not flagged, but the address cannot go without SMTPUTF8.
		{From: "a@example.org", To: []string{"jörg@example.net"}},
	} {
		r := refusedLocally(t, m, "PIPELINING", "8BITMIME")
		if r.Err == nil || r.Err.Enhanced != smtp.ENeedsSMTPUTF8 || r.Err.Temporary() {
			t.Errorf("result %+v, want permanent 5.6.7", r)
		}
	}
}

func TestFake8BitWithout8BITMIME(t *testing.T) {
	r := refusedLocally(t, Message{From: "a@example.org", To: []string{"b@example.net"}, Body8Bit: true}, "PIPELINING")
	if r.Err == nil || r.Err.Enhanced != "5.6.3" || r.Err.Temporary() {
		t.Errorf("result %+v, want permanent 5.6.3", r)
	}
}

func TestFakeBadAddresses(t *testing.T) {
	r := refusedLocally(t, Message{From: "a@example.org", To: []string{"b@exa mple.net>\r\nRSET"}}, "PIPELINING")
	if r.Err == nil || r.Err.Enhanced != smtp.EBadDestSyntax {
		t.Errorf("result %+v, want 5.1.3", r)
	}
	r = refusedLocally(t, Message{From: "a@b@", To: []string{"b@example.net"}}, "PIPELINING")
	if r.Err == nil || r.Err.Enhanced != smtp.EBadSenderSyntax {
		t.Errorf("result %+v, want 5.1.7", r)
	}
}

func TestFakeSMTPUTF8Sent(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("SMTPUTF8", "8BITMIME")
		p.expect("MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8")
		p.send("250 ok")
		p.expect("RCPT TO:<jörg@xn--mnchen-3ya.example>")
		p.send("250 ok")
		p.expect("DATA")
		p.send("354 go")
		p.data()
		p.send("250 ok")
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"jörg@münchen.example"}, Body8Bit: true, Body: strings.NewReader("x")})
	if err != nil || res[0].Err != nil {
		t.Fatalf("Send: %v %+v", err, res)
	}
	wait()
}

func TestFakeMalformedReplies(t *testing.T) {
	for name, bad := range map[string][]string{
		"long line":    {"250 " + strings.Repeat("x", maxReplyLine)},
		"bad code":     {"25O ok"},
		"1xx code":     {"150 ok"},
		"no separator": {"250ok"},
		"mixed codes":  {"250-one", "251 two"},
	} {
		t.Run(name, func(t *testing.T) {
			addr, wait := fakeServer(t, func(p *peer) {
				p.send("220 fake")
				p.expect("EHLO")
				p.send(bad...)
				p.expectEOF()
			})
			_, err := Dial(testCtx(t), addr, opts())
			if !errors.Is(err, ErrMalformedReply) {
				t.Errorf("Dial: %v, want ErrMalformedReply", err)
			}
			wait()
		})
	}
}

func TestFakeReplyLineLimit(t *testing.T) {
	// A line of exactly the limit, CRLF included, is fine.
	addr, wait := fakeServer(t, func(p *peer) {
		p.send("220 " + strings.Repeat("y", maxReplyLine-6))
		p.expect("EHLO")
		p.send("250 ok")
	})
	c, err := Dial(testCtx(t), addr, opts())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	wait()
}

func TestFakeReadErrorOfBody(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("PIPELINING")
		p.expect("MAIL")
		p.expect("RCPT")
		p.expect("DATA")
		p.send("250 ok", "250 ok", "354 go")
		// The truncated message must never be ended with ".".
		for {
			l, ok := p.line()
			if !ok {
				return
			}
			if l == "." {
				t.Error("client ended a message it could not read")
			}
		}
	})
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	diskErr := errors.New("disk on fire")
	body := io.MultiReader(strings.NewReader("Subject: x\r\n\r\npart\r\n"), errReader{diskErr})
	if _, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"b@example.net"}, Body: body}); !errors.Is(err, diskErr) {
		t.Errorf("Send: %v, want the read error", err)
	}
	wait()
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestFakeSTARTTLSAndAuth(t *testing.T) {
	cred := base64.StdEncoding.EncodeToString([]byte("\x00user@example.org\x00s3cret"))
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("STARTTLS", "AUTH PLAIN LOGIN")
		p.expect("STARTTLS")
		p.send("220 go ahead")
		p.startTLS()
		p.expect("EHLO " + ourHostname)
		p.send("250-fake.example.org", "250-AUTH=LOGIN", "250-AUTH LOGIN PLAIN", "250 ENHANCEDSTATUSCODES")
		p.expect("AUTH PLAIN " + cred)
		p.send("235 2.7.0 ok")
		p.expect("QUIT")
		p.send("221 bye")
	})
	o := opts()
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	o.Auth = &PlainAuth{Username: "user@example.org", Password: "s3cret"}
	c, err := Dial(testCtx(t), addr, o)
	if err != nil {
		t.Fatal(err)
	}
	if !c.TLS() || c.Extensions()["AUTH"] != "LOGIN PLAIN" {
		t.Errorf("TLS %v, extensions %v", c.TLS(), c.Extensions())
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
	wait()
}

func TestFakeAuthFailure(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("STARTTLS")
		p.expect("STARTTLS")
		p.send("220 go ahead")
		p.startTLS()
		p.expect("EHLO")
		p.send("250-fake.example.org", "250-ENHANCEDSTATUSCODES", "250 AUTH PLAIN")
		p.expect("AUTH PLAIN ")
		p.send("535 5.7.8 bad credentials")
		p.expect("QUIT")
	})
	o := opts()
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	o.Auth = &PlainAuth{Username: "u", Password: "wrong"}
	_, err := Dial(testCtx(t), addr, o)
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 535 || se.Enhanced != "5.7.8" {
		t.Errorf("Dial: %v, want the 535", err)
	}
	wait()
}

func TestFakeNoAuthWithoutTLS(t *testing.T) {
	for name, exts := range map[string][]string{
		"no STARTTLS offered": {"AUTH PLAIN"},
		"STARTTLS refused":    {"AUTH PLAIN", "STARTTLS"},
	} {
		t.Run(name, func(t *testing.T) {
			addr, wait := fakeServer(t, func(p *peer) {
				p.greetAndEhlo(exts...)
				if slices.Contains(exts, "STARTTLS") {
					p.expect("STARTTLS")
					p.send("454 4.7.0 TLS not available")
				}
				// Never AUTH: the password must not travel in clear text.
				p.expect("QUIT")
			})
			o := opts()
			o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
			o.Auth = &PlainAuth{Username: "u", Password: "p"}
			if _, err := Dial(testCtx(t), addr, o); !errors.Is(err, ErrAuthNeedsTLS) {
				t.Errorf("Dial: %v, want ErrAuthNeedsTLS", err)
			}
			wait()
		})
	}
}

func TestFakeSTARTTLSRefusedOpportunistic(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("STARTTLS", "PIPELINING")
		p.expect("STARTTLS")
		p.send("454 4.7.0 TLS not available")
		p.expect("QUIT")
		p.send("221 bye")
	})
	o := opts()
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	c, err := Dial(testCtx(t), addr, o)
	if err != nil {
		t.Fatalf("Dial: %v (opportunistic TLS goes on in plain text)", err)
	}
	if c.TLS() {
		t.Error("TLS() true")
	}
	if err := c.Quit(); err != nil {
		t.Error(err)
	}
	wait()
}

func TestFakeDataInjectedBeforeTLS(t *testing.T) {
	addr, wait := fakeServer(t, func(p *peer) {
		p.greetAndEhlo("STARTTLS")
		p.expect("STARTTLS")
		// A man in the middle appends a reply to the 220, hoping it is
		// read as if it came through TLS.
		p.send("220 go ahead", "250 injected")
		p.expectEOF()
	})
	o := opts()
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	if _, err := Dial(testCtx(t), addr, o); err == nil {
		t.Error("Dial succeeded although data came before the TLS handshake")
	}
	wait()
}

func TestDialOptionErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"no hostname":       {},
		"CRLF in hostname":  {Hostname: "a\r\nRSET"},
		"RequireTLS no TLS": {Hostname: ourHostname, RequireTLS: true},
	} {
		dialled := false
		o.Dialer = func(context.Context, string, string) (net.Conn, error) {
			dialled = true
			return nil, errors.New("not reached")
		}
		if _, err := Dial(context.Background(), "127.0.0.1:1", o); err == nil || dialled {
			t.Errorf("%s: err %v, dialled %v", name, err, dialled)
		}
	}
}
