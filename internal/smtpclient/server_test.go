package smtpclient

import (
	"bytes"
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/smtp"
)

// Tests against Posthorn's own SMTP server.

// checkBody checks that the server stored exactly body after its
// Received field.
func checkBody(t *testing.T, got []byte, body string) {
	t.Helper()
	rest, ok := bytes.CutPrefix(got, []byte("Received: "))
	if !ok {
		t.Fatalf("stored message does not start with Received:\n%q", got)
	}
	// The Received field ends at the first line that is not a continuation.
	i := 0
	for {
		j := bytes.Index(rest[i:], []byte("\r\n"))
		if j < 0 {
			t.Fatalf("no end of Received field in %q", got)
		}
		i += j + 2
		if i >= len(rest) || (rest[i] != '\t' && rest[i] != ' ') {
			break
		}
	}
	if string(rest[i:]) != body {
		t.Errorf("stored body differs:\n got %q\nwant %q", rest[i:], body)
	}
}

func TestServerPipelinedMixedRecipients(t *testing.T) {
	addr, sp := startServer(t, false, 1<<20)
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ext := c.Extensions()
	for _, k := range []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"} {
		if _, ok := ext[k]; !ok {
			t.Errorf("extension %s not parsed from EHLO: %v", k, ext)
		}
	}
	if ext["SIZE"] != "1048576" {
		t.Errorf("SIZE = %q, want 1048576", ext["SIZE"])
	}
	if c.TLS() {
		t.Error("TLS() true without STARTTLS")
	}

	// Lines that need stuffing: a lone dot, dots at line starts, a line
	// that is only "..", and an empty line before a dot line.
	body := "Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nmiddle . dot\r\n\r\n. \r\nend\r\n"
	res, err := c.Send(ctx, Message{
		From: "sender@example.org",
		To:   []string{"alice@example.com", "nobody@example.com", "bob@example.com", "someone@elsewhere.org", "not an address"},
		Size: int64(len(body)),
		Body: strings.NewReader(body),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		code int
		enh  string
	}{{0, ""}, {smtp.CodeMailboxUnavailable, smtp.EBadDestMailbox}, {0, ""}, {smtp.CodeTransactionFailed, smtp.ERelayDenied}, {smtp.CodeMailboxNotAllowed, smtp.EBadDestSyntax}}
	if len(res) != len(want) {
		t.Fatalf("got %d results, want %d", len(res), len(want))
	}
	for i, w := range want {
		r := res[i]
		switch {
		case w.code == 0 && r.Err != nil:
			t.Errorf("%s: %v, want accepted", r.Addr, r.Err)
		case w.code == 0 && !strings.HasPrefix(r.Reply, "250 2.0.0 "):
			t.Errorf("%s: reply %q, want the 250 of the end of data", r.Addr, r.Reply)
		case w.code != 0 && (r.Err == nil || r.Err.Code != w.code || r.Err.Enhanced != w.enh):
			t.Errorf("%s: err %v, want %d %s", r.Addr, r.Err, w.code, w.enh)
		}
	}
	if res[1].Err != nil && res[1].Err.Temporary() {
		t.Error("550 reported as temporary")
	}
	msgs := sp.messages()
	if len(msgs) != 1 {
		t.Fatalf("server stored %d messages, want 1", len(msgs))
	}
	var rcpts []string
	for _, r := range msgs[0].env.Recipients {
		rcpts = append(rcpts, r.Addr)
	}
	if strings.Join(rcpts, ",") != "alice@example.com,bob@example.com" {
		t.Errorf("recipients %v", rcpts)
	}
	if msgs[0].env.Sender != "sender@example.org" {
		t.Errorf("sender %q", msgs[0].env.Sender)
	}
	checkBody(t, msgs[0].data, body)
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	if _, err := c.Send(ctx, Message{To: []string{"alice@example.com"}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Quit: %v, want ErrClosed", err)
	}
}

func TestServerSeveralMessagesOneConnection(t *testing.T) {
	addr, sp := startServer(t, false, 1<<20)
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	type msg struct {
		to     string
		body   string
		stored string // "" when refused
		eight  bool
	}
	// The second message has no accepted recipient: it leaves a
	// transaction open that the next Send must reset.
	msgs := []msg{
		{"alice@example.com", "Subject: one\r\n\r\nfirst\r\n", "Subject: one\r\n\r\nfirst\r\n", false},
		{"ghost@example.com", "Subject: lost\r\n\r\nnobody\r\n", "", false},
		{"bob@example.com", "Subject: two\r\n\r\nno final line ending", "Subject: two\r\n\r\nno final line ending\r\n", false},
		{"alice@example.com", "Subject: three\r\n\r\n8-bit: \xc3\xa4\r\n", "Subject: three\r\n\r\n8-bit: \xc3\xa4\r\n", true},
	}
	for i, m := range msgs {
		res, err := c.Send(ctx, Message{From: "", To: []string{m.to}, Body8Bit: m.eight, Body: strings.NewReader(m.body)})
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if (res[0].Err != nil) != (m.stored == "") {
			t.Errorf("message %d: result %v", i, res[0].Err)
		}
		if i == 0 {
			if err := c.Reset(ctx); err != nil {
				t.Fatalf("Reset: %v", err)
			}
		}
	}
	// The same connection also sends one without pipelining.
	delete(c.ext, "PIPELINING")
	res, err := c.Send(ctx, Message{From: "x@example.org", To: []string{"bob@example.com", "ghost@example.com"}, Body: strings.NewReader("lockstep\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[1].Err == nil || res[1].Err.Code != smtp.CodeMailboxUnavailable {
		t.Errorf("lockstep results %+v", res)
	}
	got := sp.messages()
	var want []msg
	for _, m := range msgs {
		if m.stored != "" {
			want = append(want, m)
		}
	}
	want = append(want, msg{"bob@example.com", "", "lockstep\r\n", false})
	if len(got) != len(want) {
		t.Fatalf("server stored %d messages, want %d", len(got), len(want))
	}
	for i, w := range want {
		checkBody(t, got[i].data, w.stored)
		if got[i].env.Recipients[0].Addr != w.to || got[i].env.Body8Bit != w.eight {
			t.Errorf("message %d: envelope %+v, want to %s, 8-bit %v", i, got[i].env, w.to, w.eight)
		}
	}
	if got[0].env.Sender != "" {
		t.Errorf("null sender stored as %q", got[0].env.Sender)
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
}

func TestServerSTARTTLS(t *testing.T) {
	addr, sp := startServer(t, true, 1<<20)
	ctx := testCtx(t)
	o := opts()
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	o.RequireTLS = true
	c, err := Dial(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.TLS() {
		t.Fatal("TLS() false after STARTTLS")
	}
	if _, ok := c.Extensions()["STARTTLS"]; ok {
		t.Error("extensions not from the EHLO after TLS: STARTTLS still listed")
	}
	body := "Subject: secret\r\n\r\nover TLS\r\n"
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"bob@example.com"}, SMTPUTF8: true, Body: strings.NewReader(body)})
	if err != nil || res[0].Err != nil {
		t.Fatalf("Send: %v %+v", err, res)
	}
	c.Quit()
	msgs := sp.messages()
	if len(msgs) != 1 || !msgs[0].env.TLS || !msgs[0].env.SMTPUTF8 {
		t.Fatalf("stored %+v, want one message received over TLS with SMTPUTF8", msgs)
	}
	checkBody(t, msgs[0].data, body)
}

func TestServerVerifiesCertificate(t *testing.T) {
	addr, _ := startServer(t, true, 1<<20)
	o := opts()
	o.TLSConfig = &tls.Config{ServerName: "mx.example.com"} // self-signed: not trusted
	_, err := Dial(testCtx(t), addr, o)
	if !errors.Is(err, ErrTLSHandshake) {
		t.Fatalf("Dial: %v, want ErrTLSHandshake", err)
	}
}

func TestServerRequireTLSWithoutSTARTTLS(t *testing.T) {
	addr, _ := startServer(t, false, 1<<20)
	o := opts()
	o.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	o.RequireTLS = true
	if _, err := Dial(testCtx(t), addr, o); !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("Dial: %v, want ErrTLSRequired", err)
	}
	// Without RequireTLS the same server is fine in plain text.
	o.RequireTLS = false
	c, err := Dial(testCtx(t), addr, o)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS() {
		t.Error("TLS() true")
	}
	c.Close()
}

func TestServerSizeLimit(t *testing.T) {
	addr, sp := startServer(t, false, 100)
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(ctx, Message{From: "a@example.org", To: []string{"alice@example.com"}, Size: 101, Body: strings.NewReader("x\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if e := res[0].Err; e == nil || e.Code != smtp.CodeExceededStorage || e.Enhanced != smtp.EMsgTooBig || res[0].Reply != "" {
		t.Errorf("result %+v, want a local 552 5.3.4", res[0])
	}
	// Size unknown: the server's own limit refuses at the end of data.
	big := strings.Repeat("0123456789\r\n", 20)
	res, err = c.Send(ctx, Message{From: "a@example.org", To: []string{"alice@example.com"}, Body: strings.NewReader(big)})
	if err != nil {
		t.Fatal(err)
	}
	if e := res[0].Err; e == nil || e.Code != smtp.CodeExceededStorage || !strings.HasPrefix(res[0].Reply, "552 5.3.4 ") {
		t.Errorf("result %+v, want the server's 552 5.3.4", res[0])
	}
	if n := len(sp.messages()); n != 0 {
		t.Errorf("server stored %d messages", n)
	}
}
