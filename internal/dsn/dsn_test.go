package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/envelope"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

var (
	testNow     = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	testArrival = testNow.Add(-26 * time.Hour)
)

func testOptions() Options {
	return Options{ReportingMTA: "mx.example.com", Postmaster: "postmaster@mx.example.com", Now: testNow}
}

func testEnvelope(rcpts ...string) *envelope.Envelope {
	env := &envelope.Envelope{ID: "0630A1B2C3D4E00042", Sender: "bob@example.org", Received: testArrival}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: r})
	}
	return env
}

const smallMessage = "Received: from client.example.org ([127.0.0.1])\r\n" +
	"\tby mx.example.com with ESMTP id 0630A1B2C3D4E00042\r\n" +
	"From: Bob <bob@example.org>\r\n" +
	"To: Carol <carol@example.net>\r\n" +
	"Subject: Lunch on Friday\r\n" +
	"Date: Thu, 13 Mar 2025 13:09:26 +0000\r\n" +
	"Message-ID: <lunch-1@example.org>\r\n" +
	"\r\n" +
	"Shall we meet at noon?\r\n" +
	"-- \r\n" +
	"Bob\r\n"

// headerOf returns the header section of a test message, as Build should
// return it for RET=HDRS: the fields with their final CRLF.
func headerOf(msg string) string {
	return msg[:strings.Index(msg, "\r\n\r\n")+2]
}

// expect is what a golden case's output must mean, checked by parsing it.
type expect struct {
	subject    string
	types      []string // content types of the parts, in order
	origFull   bool     // the third part is the whole original, else its header section
	tooBig     bool     // the text part says the message was too large
	envID      string
	senderUTF8 bool
}

type goldenCase struct {
	name string
	opts Options
	req  Request
	msg  string // the original, also given as req.Original
	want expect
}

func goldenCases() []goldenCase {
	failed := Recipient{
		Addr: "carol@example.net", Action: Failure, Status: "5.1.1",
		RemoteMTA:      "mx.example.net",
		DiagnosticCode: "smtp; 550 5.1.1 <carol@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
		LastAttempt:    testNow.Add(-time.Minute),
	}
	delayed := Recipient{
		Addr: "dave@example.info", Action: Delay, Status: "4.4.1",
		DiagnosticCode: "connect to mx.example.info: connection refused",
		LastAttempt:    testNow.Add(-10 * time.Minute),
		WillRetryUntil: testArrival.Add(5 * 24 * time.Hour),
	}
	greylisted := Recipient{
		Addr: "erin@example.net", Action: Delay, Status: "4.7.1",
		RemoteMTA:      "mx.example.net",
		DiagnosticCode: "451 4.7.1 Greylisted, please try again later",
		LastAttempt:    testNow.Add(-5 * time.Minute),
		WillRetryUntil: testArrival.Add(5 * 24 * time.Hour),
	}
	big := smallMessage + strings.Repeat("All work and no play makes Jack a dull boy.\r\n", 40)
	capped := testOptions()
	capped.MaxOriginal = 512
	utf8Msg := "From: Bob <bob@example.org>\r\n" +
		"To: Jörg <jörg@xn--bcher-kva.example>\r\n" +
		"Subject: Grüße aus Köln\r\n" +
		"Message-ID: <gruss@example.org>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Bis bald, Bob.\r\n"
	utf8Env := testEnvelope("jörg@xn--bcher-kva.example")
	utf8Env.SMTPUTF8 = true

	return []goldenCase{
		{
			name: "hdrs_one_failed",
			opts: testOptions(),
			req:  Request{Env: testEnvelope(failed.Addr), Recipients: []Recipient{failed}},
			msg:  smallMessage,
			want: expect{
				subject: "Undelivered Mail Returned to Sender",
				types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
			},
		},
		{
			name: "mixed_failed_delayed",
			opts: testOptions(),
			req: Request{
				Env:        testEnvelope(failed.Addr, delayed.Addr),
				Recipients: []Recipient{failed, delayed},
				Return:     "HDRS",
			},
			msg: smallMessage,
			want: expect{
				subject: "Undelivered Mail Returned to Sender",
				types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
			},
		},
		{
			name: "delay_only",
			opts: testOptions(),
			req:  Request{Env: testEnvelope(greylisted.Addr), Recipients: []Recipient{greylisted}},
			msg:  smallMessage,
			want: expect{
				subject: "Delayed Mail (still being retried)",
				types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
			},
		},
		{
			name: "full_small",
			opts: testOptions(),
			req:  Request{Env: testEnvelope(failed.Addr), Recipients: []Recipient{failed}, Return: "FULL"},
			msg:  smallMessage,
			want: expect{
				subject:  "Undelivered Mail Returned to Sender",
				types:    []string{"text/plain", "message/delivery-status", "message/rfc822"},
				origFull: true,
			},
		},
		{
			name: "full_over_cap",
			opts: capped,
			req:  Request{Env: testEnvelope(failed.Addr), Recipients: []Recipient{failed}, Return: "full"},
			msg:  big,
			want: expect{
				subject: "Undelivered Mail Returned to Sender",
				types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
				tooBig:  true,
			},
		},
		{
			name: "envid_orcpt",
			opts: testOptions(),
			req: Request{
				Env: testEnvelope("alice@example.com"),
				Recipients: []Recipient{{
					Addr: "alice@example.com", Orig: "rfc822;Sales@Example.com", Action: Failure,
					Status: "5.2.2", RemoteMTA: "mx.example.com",
					DiagnosticCode: "smtp; 552 5.2.2 Mailbox full",
				}},
				EnvID: "QQ314159",
			},
			msg: smallMessage,
			want: expect{
				subject: "Undelivered Mail Returned to Sender",
				types:   []string{"text/plain", "message/delivery-status", "text/rfc822-headers"},
				envID:   "QQ314159",
			},
		},
		{
			name: "utf8_recipient",
			opts: testOptions(),
			req: Request{
				Env: utf8Env,
				Recipients: []Recipient{{
					Addr: "jörg@xn--bcher-kva.example", Orig: "jörg+news@xn--bcher-kva.example",
					Action: Failure, Status: "5.1.1", RemoteMTA: "mx.xn--bcher-kva.example",
					DiagnosticCode: "smtp; 550 5.1.1 Unbekannter Empfänger",
				}},
			},
			msg: utf8Msg,
			want: expect{
				subject: "Undelivered Mail Returned to Sender",
				types:   []string{"text/plain", "message/global-delivery-status", "message/global-headers"},
			},
		},
	}
}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			req.Original = strings.NewReader(c.msg)
			got, err := Build(c.opts, req)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			checkGolden(t, c.name, got)
			checkMeaning(t, got, c)
		})
	}
}

func checkGolden(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/dsn -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s: line %d differs\n got: %q\nwant: %q\n(run go test ./internal/dsn -update if the change is intended)", path, i+1, g, w)
			}
		}
	}
}

// checkLines asserts the transport rules: CRLF only, lines ≤ 998 octets.
func checkLines(t testing.TB, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Errorf("message does not end with CRLF")
	}
	for i, line := range bytes.Split(msg, []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > hardLineLen {
			t.Errorf("line %d is %d octets long", i+1, len(line))
		}
	}
}

// parsed is a notification taken apart with the standard library.
type parsed struct {
	header  mail.Header
	types   []string
	params  []map[string]string
	headers []textproto.MIMEHeader
	bodies  [][]byte
	perMsg  textproto.MIMEHeader
	perRcpt []textproto.MIMEHeader
}

func parse(t testing.TB, msg []byte) *parsed {
	t.Helper()
	checkLines(t, msg)
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatalf("net/mail cannot read the notification: %v", err)
	}
	p := &parsed{header: m.Header}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type: %v", err)
	}
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %s %v, want multipart/report; report-type=delivery-status", mt, params)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		body, err := io.ReadAll(part)
		if err != nil {
			t.Fatalf("reading part %d: %v", len(p.types)+1, err)
		}
		pt, pp, err := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("part %d Content-Type: %v", len(p.types)+1, err)
		}
		p.types = append(p.types, pt)
		p.params = append(p.params, pp)
		p.headers = append(p.headers, part.Header)
		p.bodies = append(p.bodies, body)
	}
	if len(p.types) < 2 || !strings.HasSuffix(p.types[1], "delivery-status") {
		t.Fatalf("parts %v: the second is not a delivery-status", p.types)
	}
	// RFC 3464 2.1: per-message fields, then groups of per-recipient
	// fields, each group after a blank line.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(p.bodies[1])))
	for {
		h, err := tp.ReadMIMEHeader()
		if len(h) > 0 {
			if p.perMsg == nil {
				p.perMsg = h
			} else {
				p.perRcpt = append(p.perRcpt, h)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("delivery-status part: %v", err)
		}
	}
	return p
}

var messageIDRe = regexp.MustCompile(`^<[0-9a-f]{24}\.dsn@mx\.example\.com>$`)

func checkMeaning(t *testing.T, msg []byte, c goldenCase) {
	t.Helper()
	p := parse(t, msg)
	h := p.header

	from, err := mail.ParseAddress(h.Get("From"))
	if err != nil || from.Address != c.opts.Postmaster || from.Name != "Mail Delivery System" {
		t.Errorf("From = %q (%v), want Mail Delivery System <%s>", h.Get("From"), err, c.opts.Postmaster)
	}
	to, err := mail.ParseAddress(h.Get("To"))
	if err != nil || to.Address != c.req.Env.Sender {
		t.Errorf("To = %q (%v), want <%s>", h.Get("To"), err, c.req.Env.Sender)
	}
	if got := h.Get("Subject"); got != c.want.subject {
		t.Errorf("Subject = %q, want %q", got, c.want.subject)
	}
	if d, err := h.Date(); err != nil || !d.Equal(c.opts.Now) {
		t.Errorf("Date = %q (%v), want %v", h.Get("Date"), err, c.opts.Now)
	}
	if id := h.Get("Message-ID"); !messageIDRe.MatchString(id) {
		t.Errorf("Message-ID = %q, want %v", id, messageIDRe)
	}
	if got := h.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q, want auto-replied", got)
	}
	if got := h.Get("MIME-Version"); got != "1.0" {
		t.Errorf("MIME-Version = %q", got)
	}

	if strings.Join(p.types, " ") != strings.Join(c.want.types, " ") {
		t.Fatalf("parts are %v, want %v", p.types, c.want.types)
	}

	// The text part names every recipient, its status and the reply.
	text := string(p.bodies[0])
	for _, r := range c.req.Recipients {
		for _, s := range []string{"<" + r.Addr + ">", r.Status, r.RemoteMTA} {
			if !strings.Contains(text, s) {
				t.Errorf("text part does not mention %q:\n%s", s, text)
			}
		}
		_, diag := splitType(r.DiagnosticCode)
		if !strings.Contains(strings.Join(strings.Fields(text), " "), diag) {
			t.Errorf("text part does not quote the diagnostic %q:\n%s", diag, text)
		}
	}
	if said := strings.Contains(text, "larger than"); said != c.want.tooBig {
		t.Errorf("text part mentions the size cap: %v, want %v:\n%s", said, c.want.tooBig, text)
	}
	if strings.Contains(text, "/") {
		t.Errorf("text part contains a slash, as in a file path:\n%s", text)
	}

	// The report: per-message fields, then one group per recipient.
	if got := p.perMsg.Get("Reporting-MTA"); got != "dns; "+c.opts.ReportingMTA {
		t.Errorf("Reporting-MTA = %q", got)
	}
	if got := p.perMsg.Get("Original-Envelope-Id"); got != c.want.envID {
		t.Errorf("Original-Envelope-Id = %q, want %q", got, c.want.envID)
	}
	if d, err := mail.ParseDate(p.perMsg.Get("Arrival-Date")); err != nil || !d.Equal(c.req.Env.Received) {
		t.Errorf("Arrival-Date = %q (%v), want %v", p.perMsg.Get("Arrival-Date"), err, c.req.Env.Received)
	}
	if len(p.perRcpt) != len(c.req.Recipients) {
		t.Fatalf("%d per-recipient groups, want %d:\n%s", len(p.perRcpt), len(c.req.Recipients), p.bodies[1])
	}
	for i, r := range c.req.Recipients {
		g := p.perRcpt[i]
		if got := decodeAddressField(t, g.Get("Final-Recipient")); got != r.Addr {
			t.Errorf("group %d: Final-Recipient %q decodes to %q, want %q", i, g.Get("Final-Recipient"), got, r.Addr)
		}
		if r.Orig != "" {
			if got := decodeAddressField(t, g.Get("Original-Recipient")); got != origAddress(r.Orig) {
				t.Errorf("group %d: Original-Recipient %q decodes to %q, want %q", i, g.Get("Original-Recipient"), got, origAddress(r.Orig))
			}
		} else if _, ok := g["Original-Recipient"]; ok {
			t.Errorf("group %d: Original-Recipient present without Orig", i)
		}
		if got := g.Get("Action"); got != r.Action.String() {
			t.Errorf("group %d: Action = %q, want %q", i, got, r.Action)
		}
		if got := g.Get("Status"); got != r.Status {
			t.Errorf("group %d: Status = %q, want %q", i, got, r.Status)
		}
		if r.RemoteMTA != "" && g.Get("Remote-MTA") != "dns; "+r.RemoteMTA {
			t.Errorf("group %d: Remote-MTA = %q", i, g.Get("Remote-MTA"))
		}
		typ, diag := splitType(r.DiagnosticCode)
		if got := g.Get("Diagnostic-Code"); got != typ+"; "+diag {
			t.Errorf("group %d: Diagnostic-Code = %q, want %q", i, got, typ+"; "+diag)
		}
		if d, err := mail.ParseDate(g.Get("Last-Attempt-Date")); r.LastAttempt.IsZero() != (err != nil) || (err == nil && !d.Equal(r.LastAttempt)) {
			t.Errorf("group %d: Last-Attempt-Date = %q, want %v", i, g.Get("Last-Attempt-Date"), r.LastAttempt)
		}
		wantRetry := r.Action == Delay && !r.WillRetryUntil.IsZero()
		if d, err := mail.ParseDate(g.Get("Will-Retry-Until")); wantRetry != (err == nil) || (err == nil && !d.Equal(r.WillRetryUntil)) {
			t.Errorf("group %d: Will-Retry-Until = %q, want %v (present: %v)", i, g.Get("Will-Retry-Until"), r.WillRetryUntil, wantRetry)
		}
	}

	// The original, whole or its header section, byte for byte.
	orig := p.bodies[2]
	want := headerOf(c.msg)
	if c.want.origFull {
		want = c.msg
		m, err := mail.ReadMessage(bytes.NewReader(orig))
		if err != nil || m.Header.Get("Message-ID") == "" {
			t.Errorf("returned message does not parse: %v", err)
		}
	}
	// The CRLF before the boundary belongs to the delimiter (RFC 2046
	// 5.1.1); multipart keeps it for raw parts except at the very end.
	if got := strings.TrimSuffix(string(orig), "\r\n"); got != strings.TrimSuffix(want, "\r\n") {
		t.Errorf("third part:\n%q\nwant:\n%q", orig, want)
	}
	if !isASCII(string(orig)) && p.headers[2].Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("third part holds 8-bit octets but says Content-Transfer-Encoding %q", p.headers[2].Get("Content-Transfer-Encoding"))
	}
}

// decodeAddressField reads an RFC 3464 address field, "type; address",
// undoing the utf-8-addr-unitext escapes of RFC 6533 3 (independently of
// the code under test, with a regexp).
func decodeAddressField(t testing.TB, v string) string {
	t.Helper()
	typ, addr, ok := strings.Cut(v, ";")
	if !ok {
		t.Errorf("address field %q has no type", v)
		return v
	}
	addr = strings.TrimSpace(addr)
	switch strings.ToLower(strings.TrimSpace(typ)) {
	case "rfc822":
		if !isASCII(addr) {
			t.Errorf("rfc822 address %q is not ASCII", addr)
		}
		return addr
	case "utf-8":
		if strings.ContainsAny(addr, " +=") {
			t.Errorf("utf-8 address %q holds a character QUCHAR excludes", addr)
		}
		return unitextRe.ReplaceAllStringFunc(addr, func(esc string) string {
			n, _ := strconv.ParseUint(esc[3:len(esc)-1], 16, 32)
			return string(rune(n))
		})
	}
	t.Errorf("address type %q", typ)
	return addr
}

var unitextRe = regexp.MustCompile(`\\x\{[0-9A-F]{2,6}\}`)

func TestNeeds(t *testing.T) {
	for _, c := range goldenCases() {
		req := c.req
		req.Original = strings.NewReader(c.msg)
		msg, err := Build(c.opts, req)
		if err != nil {
			t.Fatal(err)
		}
		eight, smtputf8 := Needs(msg)
		if want := c.name == "utf8_recipient"; eight != want {
			t.Errorf("%s: Needs eightBit = %v, want %v", c.name, eight, want)
		}
		if smtputf8 {
			t.Errorf("%s: Needs smtputf8 for an ASCII sender", c.name)
		}
	}
}

func TestUTF8SenderNeedsSMTPUTF8(t *testing.T) {
	env := testEnvelope("carol@example.net")
	env.Sender = "björn@example.org"
	env.SMTPUTF8 = true
	msg, err := Build(testOptions(), Request{
		Env:        env,
		Recipients: []Recipient{{Addr: "carol@example.net", Action: Failure, Status: "5.1.1"}},
		Original:   strings.NewReader(smallMessage),
	})
	if err != nil {
		t.Fatal(err)
	}
	if eight, smtputf8 := Needs(msg); !eight || !smtputf8 {
		t.Errorf("Needs = %v, %v; want true, true for a UTF-8 To:", eight, smtputf8)
	}
	p := parse(t, msg)
	if !strings.Contains(p.header.Get("To"), "björn@example.org") {
		t.Errorf("To = %q", p.header.Get("To"))
	}
	if p.types[1] != "message/global-delivery-status" || p.types[2] != "message/global-headers" {
		t.Errorf("parts %v, want the RFC 6533 types for an SMTPUTF8 message", p.types)
	}
}

// A UTF-8 recipient of a message that was not SMTPUTF8 (an alias that
// points to one) needs the global report, but the original stays an
// ordinary message.
func TestUTF8RecipientOfASCIIMessage(t *testing.T) {
	msg, err := Build(testOptions(), Request{
		Env:        testEnvelope("zoë@example.net"),
		Recipients: []Recipient{{Addr: "zoë@example.net", Orig: "zoe@example.com", Action: Failure, Status: "5.1.1"}},
		Original:   strings.NewReader(smallMessage),
		Return:     "FULL",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	if want := "text/plain message/global-delivery-status message/rfc822"; strings.Join(p.types, " ") != want {
		t.Errorf("parts %v, want %s", p.types, want)
	}
	if got := p.perRcpt[0].Get("Final-Recipient"); got != "utf-8; zoë@example.net" {
		t.Errorf("Final-Recipient = %q", got)
	}
	if got := p.perRcpt[0].Get("Original-Recipient"); got != "rfc822; zoe@example.com" {
		t.Errorf("Original-Recipient = %q", got)
	}
}

func TestUnitext(t *testing.T) {
	for in, want := range map[string]string{
		"jörg@example.com":      "jörg@example.com",
		"jörg+tag@example.com":  `jörg\x{2B}tag@example.com`,
		`"a b=c\\d"@例え.jp`:      `"a\x{20}b\x{3D}c\x{5C}\x{5C}d"@例え.jp`,
		"plain.ascii@localhost": "plain.ascii@localhost",
	} {
		if got := unitext(in); got != want {
			t.Errorf("unitext(%q) = %q, want %q", in, got, want)
		}
	}
}

func failedRecipient() Recipient {
	return Recipient{Addr: "carol@example.net", Action: Failure, Status: "5.1.1", DiagnosticCode: "550 5.1.1 no such user"}
}

func TestBuildRefuses(t *testing.T) {
	good := func() (Options, Request) {
		return testOptions(), Request{Env: testEnvelope("carol@example.net"), Recipients: []Recipient{failedRecipient()}}
	}
	cases := []struct {
		name   string
		change func(*Options, *Request)
		is     error
	}{
		{"null sender", func(o *Options, r *Request) { r.Env.Sender = "" }, ErrNullSender},
		{"no recipients", func(o *Options, r *Request) { r.Recipients = nil }, ErrNoRecipients},
		{"no envelope", func(o *Options, r *Request) { r.Env = nil }, nil},
		{"bad sender", func(o *Options, r *Request) { r.Env.Sender = "bob@example.org\r\nBcc: x@y" }, nil},
		{"no time", func(o *Options, r *Request) { o.Now = time.Time{} }, nil},
		{"bad host", func(o *Options, r *Request) { o.ReportingMTA = "mx example.com" }, nil},
		{"bad postmaster", func(o *Options, r *Request) { o.Postmaster = "postmaster" }, nil},
		{"bad RET", func(o *Options, r *Request) { r.Return = "BODY" }, nil},
		{"zero action", func(o *Options, r *Request) { r.Recipients[0].Action = 0 }, nil},
		{"bad recipient", func(o *Options, r *Request) { r.Recipients[0].Addr = "carol" }, nil},
		{"status syntax", func(o *Options, r *Request) { r.Recipients[0].Status = "5.1" }, nil},
		{"status class", func(o *Options, r *Request) { r.Recipients[0].Status = "3.1.1" }, nil},
		{"status digits", func(o *Options, r *Request) { r.Recipients[0].Status = "5.1000.1" }, nil},
		{"delay with 5xx", func(o *Options, r *Request) { r.Recipients[0].Action = Delay }, nil},
		{"failure with 2xx", func(o *Options, r *Request) { r.Recipients[0].Status = "2.0.0" }, nil},
	}
	for _, c := range cases {
		o, r := good()
		c.change(&o, &r)
		_, err := Build(o, r)
		if err == nil {
			t.Errorf("%s: Build succeeded", c.name)
		} else if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.is)
		}
	}
	// The unchanged request is fine, so each case fails for its change.
	o, r := good()
	if _, err := Build(o, r); err != nil {
		t.Fatalf("the base request fails: %v", err)
	}
}

func TestDefaultStatusAndExpiredFailure(t *testing.T) {
	rcpts := []Recipient{
		{Addr: "a@example.net", Action: Failure},
		{Addr: "b@example.net", Action: Delay},
		{Addr: "c@example.net", Action: Failure, Status: "4.4.7", DiagnosticCode: "delivery time expired"},
	}
	msg, err := Build(testOptions(), Request{Env: testEnvelope(), Recipients: rcpts})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	for i, want := range []string{"5.0.0", "4.0.0", "4.4.7"} {
		if got := p.perRcpt[i].Get("Status"); got != want {
			t.Errorf("recipient %d: Status = %q, want %q", i, got, want)
		}
	}
	if got := p.perRcpt[2].Get("Diagnostic-Code"); got != "X-Posthorn; delivery time expired" {
		t.Errorf("Diagnostic-Code = %q", got)
	}
}

// A remote reply is hostile input: it must not add fields, break lines or
// make a line longer than 998 octets.
func TestHostileDiagnostic(t *testing.T) {
	long := strings.Repeat("word ", 700) + strings.Repeat("x", 2500)
	rcpts := []Recipient{
		{Addr: "a@example.net", Action: Failure, Status: "5.0.0", RemoteMTA: "mx.example.net\r\nX-Injected: yes",
			DiagnosticCode: "smtp; 550 nope\r\nX-Injected: yes\r\n\r\nFinal-Recipient: rfc822; evil@example.com"},
		{Addr: "b@example.net", Action: Failure, Status: "5.0.0", DiagnosticCode: "550 " + long},
		{Addr: "c@example.net", Action: Failure, Status: "5.0.0", DiagnosticCode: "550 caf\xc3\xa9 \xff\x00bell\x07"},
	}
	msg, err := Build(testOptions(), Request{Env: testEnvelope(), Recipients: rcpts, Original: strings.NewReader(smallMessage)})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg) // checks CRLF and line lengths
	if len(p.perRcpt) != 3 {
		t.Fatalf("%d recipient groups, want 3:\n%s", len(p.perRcpt), p.bodies[1])
	}
	for i, g := range p.perRcpt {
		if _, ok := g["X-Injected"]; ok {
			t.Errorf("group %d has an injected field", i)
		}
		if got := g.Get("Final-Recipient"); got != "rfc822; "+rcpts[i].Addr {
			t.Errorf("group %d: Final-Recipient = %q", i, got)
		}
	}
	if got := p.perRcpt[0].Get("Diagnostic-Code"); got != "smtp; 550 nope  X-Injected: yes    Final-Recipient: rfc822; evil@example.com" {
		t.Errorf("Diagnostic-Code = %q", got)
	}
	d := p.perRcpt[1].Get("Diagnostic-Code")
	if !strings.HasPrefix(d, "smtp; 550 word word") || !strings.HasSuffix(d, "xxx...") {
		t.Errorf("long Diagnostic-Code = %.60q ... %q", d, d[max(0, len(d)-20):])
	}
	// An ASCII report carries no 8-bit octets from a reply.
	if got := p.perRcpt[2].Get("Diagnostic-Code"); got != "smtp; 550 caf? ? bell" {
		t.Errorf("Diagnostic-Code = %q", got)
	}
	if !isASCII(string(p.bodies[0])) || !isASCII(string(p.bodies[1])) {
		t.Errorf("the text or the report holds 8-bit octets")
	}
}

// The boundary is derived from the queue ID, so a message could contain
// it; Build must then pick another.
func TestBoundaryAvoidsContent(t *testing.T) {
	env := testEnvelope("carol@example.net")
	first := chooseBoundary(env.ID, nil)
	evil := headerOf(smallMessage) + "\r\n--" + first + "\r\nContent-Type: text/plain\r\n\r\nfake part\r\n--" + first + "--\r\n"
	msg, err := Build(testOptions(), Request{
		Env: env, Recipients: []Recipient{failedRecipient()}, Original: strings.NewReader(evil), Return: "FULL",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	if len(p.types) != 3 {
		t.Fatalf("parts %v, want 3", p.types)
	}
	if strings.Contains(p.header.Get("Content-Type"), first) {
		t.Errorf("the boundary %s occurs in the original and was used anyway", first)
	}
	if got := strings.TrimSuffix(string(p.bodies[2]), "\r\n"); got != strings.TrimSuffix(evil, "\r\n") {
		t.Errorf("the original did not come back intact:\n%q", p.bodies[2])
	}
}

func TestDeterministic(t *testing.T) {
	build := func(id string, now time.Time) []byte {
		t.Helper()
		env := testEnvelope("carol@example.net")
		env.ID = id
		o := testOptions()
		o.Now = now
		msg, err := Build(o, Request{Env: env, Recipients: []Recipient{failedRecipient()}, Original: strings.NewReader(smallMessage)})
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	a, b := build("A1", testNow), build("A1", testNow)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of one request differ")
	}
	pa, pLater, pOther := parse(t, a), parse(t, build("A1", testNow.Add(time.Second))), parse(t, build("B2", testNow))
	if pa.header.Get("Message-ID") == pLater.header.Get("Message-ID") {
		t.Error("reports at different times share a Message-ID")
	}
	if pa.header.Get("Message-ID") == pOther.header.Get("Message-ID") {
		t.Error("reports on different messages share a Message-ID")
	}
	if pa.header.Get("Content-Type") == pOther.header.Get("Content-Type") {
		t.Error("reports on different messages share a boundary")
	}
}

func TestNoOriginal(t *testing.T) {
	msg, err := Build(testOptions(), Request{Env: testEnvelope(), Recipients: []Recipient{failedRecipient()}, Return: "FULL"})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	if len(p.types) != 2 {
		t.Errorf("parts %v, want text and report only", p.types)
	}
	if strings.Contains(string(p.bodies[0]), "returned below") {
		t.Errorf("the text promises a returned message:\n%s", p.bodies[0])
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestOriginalReadError(t *testing.T) {
	_, err := Build(testOptions(), Request{Env: testEnvelope(), Recipients: []Recipient{failedRecipient()}, Original: failingReader{}})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("Build = %v, want the read error", err)
	}
}

// A header section beyond MaxHeaderSection is cut after a whole field.
func TestLongHeaderSectionIsCut(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < MaxHeaderSection+5000; i++ {
		fmt.Fprintf(&b, "X-Filler-%d: %s\r\n\tcontinued %d\r\n", i, strings.Repeat("f", 60), i)
	}
	orig := b.String() + "Subject: last\r\n\r\nbody\r\n"
	msg, err := Build(testOptions(), Request{Env: testEnvelope(), Recipients: []Recipient{failedRecipient()}, Original: strings.NewReader(orig)})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	hdr := string(p.bodies[2])
	if len(hdr) > MaxHeaderSection+2 || len(hdr) < MaxHeaderSection-200 {
		t.Errorf("returned header section is %d octets, want just under %d", len(hdr), MaxHeaderSection)
	}
	if !strings.HasPrefix(orig, strings.TrimSuffix(hdr, "\r\n")) {
		t.Errorf("returned header section is not a prefix of the original")
	}
	if !strings.HasSuffix(strings.TrimSuffix(hdr, "\r\n"), "\r\n\tcontinued "+strconv.Itoa(strings.Count(hdr, "X-Filler-")-1)) {
		t.Errorf("header section not cut after a whole field: ends %q", hdr[len(hdr)-40:])
	}
	if !strings.Contains(strings.Join(strings.Fields(string(p.bodies[0])), " "), "has been shortened") {
		t.Errorf("text part does not say the header section was shortened:\n%s", p.bodies[0])
	}
}

// The spool holds CRLF, but Build keeps its promise whatever it gets.
func TestBareLineEndingsInOriginal(t *testing.T) {
	orig := "From: bob@example.org\nSubject: unix\r\nX-Odd: cr\rhere\n\nbody\n"
	msg, err := Build(testOptions(), Request{
		Env: testEnvelope(), Recipients: []Recipient{failedRecipient()}, Original: strings.NewReader(orig), Return: "FULL",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := parse(t, msg)
	want := "From: bob@example.org\r\nSubject: unix\r\nX-Odd: cr\r\nhere\r\n\r\nbody"
	if got := strings.TrimSuffix(string(p.bodies[2]), "\r\n"); got != want {
		t.Errorf("original = %q, want %q", got, want)
	}
}

func TestHeaderSectionEdges(t *testing.T) {
	for _, c := range []struct{ msg, want string }{
		{"\r\nbody only\r\n", ""},
		{"Subject: no body", "Subject: no body\r\n"},
		{"Subject: x\r\n\r\n\r\nbody\r\n", "Subject: x\r\n"},
	} {
		got, cut := headerSection([]byte(c.msg), true)
		if string(got) != c.want || cut {
			t.Errorf("headerSection(%q) = %q, %v; want %q, false", c.msg, got, cut, c.want)
		}
	}
}

func TestFieldFolding(t *testing.T) {
	v := strings.Repeat("abc ", 40) + `"quoted  two spaces"@example.com`
	f := fieldString("Diagnostic-Code", v)
	for _, line := range strings.Split(f, "\r\n") {
		if len(line) > softLineLen {
			t.Errorf("line of %d octets: %q", len(line), line)
		}
		if strings.TrimSpace(line) == "" {
			t.Errorf("a folded line holds only white space")
		}
	}
	// Unfolding (RFC 5322 2.2.3) gives the value back exactly.
	if got := strings.ReplaceAll(f, "\r\n", ""); got != "Diagnostic-Code: "+v {
		t.Errorf("unfolded = %q", got)
	}
}
