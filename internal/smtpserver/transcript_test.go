package smtpserver

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Transcript tests: each testdata/transcripts/*.txt file is one SMTP
// session against a fresh test server (see harness_test.go). Format, one
// item per line:
//
//	# comment (and blank lines) are ignored
//	!set KEY[=VALUE] ...  server options, before the first exchange line:
//	                      size=N recipients=N received=N errors=N tls
//	                      command-timeout=DUR data-timeout=DUR
//	C: TEXT               the client sends TEXT and CRLF ("C:" alone: an empty line)
//	B: "QUOTED"           the client sends the bytes of a Go string literal as they are
//	S: PATTERN            the server sends one line matching PATTERN (literal text;
//	                      {id} is a queue ID, {*} any text)
//	S: <EOF>              the server closes the connection; every transcript ends so,
//	                      which also proves no reply came that was not expected
//	!starttls [tls12]     the client does the TLS handshake
//	!spool-fail MODE      the fake spool starts failing: create, header, write,
//	                      commit, or none
//	!message              the next committed message, in order; after it:
//	E: LINE               its envelope, as rendered by envelopeLines
//	M: PATTERN            its content, line by line (CRLF appended); {id} is its ID;
//	                      a last line ending in {noeol} has no CRLF
//
// Client lines are collected and sent in one write when the transcript next
// reads from the server or runs a directive, so consecutive C:/B: lines are
// a pipelined group.
//
// After the session the committed messages must be exactly the !message
// blocks (none when there are none), and the IDs in the replies that
// matched {id} must be their IDs, in order.

type transcriptStep struct {
	line int
	kind string // "C", "B", "S", "!"
	text string
}

type expectedMessage struct {
	line int
	env  []string
	body []string
}

type transcript struct {
	name     string
	set      map[string]string
	steps    []transcriptStep
	messages []*expectedMessage
}

func parseTranscript(tb testing.TB, path string) *transcript {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	tr := &transcript{name: filepath.Base(path), set: map[string]string{}}
	var msg *expectedMessage
	for i, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		n := i + 1
		fail := func(format string, args ...any) {
			tb.Helper()
			tb.Fatalf("%s:%d: %s", path, n, fmt.Sprintf(format, args...))
		}
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if d, ok := strings.CutPrefix(l, "!"); ok {
			f := strings.Fields(d)
			switch {
			case len(f) == 0:
				fail("empty directive")
			case f[0] == "set":
				if len(tr.steps) > 0 {
					fail("!set after the exchange began")
				}
				for _, kv := range f[1:] {
					k, v, _ := strings.Cut(kv, "=")
					tr.set[k] = v
				}
			case f[0] == "message":
				msg = &expectedMessage{line: n}
				tr.messages = append(tr.messages, msg)
			case f[0] == "starttls", f[0] == "spool-fail":
				tr.steps = append(tr.steps, transcriptStep{n, "!", d})
			default:
				fail("unknown directive %q", l)
			}
			continue
		}
		kind, text, ok := strings.Cut(l, ":")
		if !ok || len(kind) != 1 {
			fail("no KIND: prefix in %q", l)
		}
		if msg != nil && kind != "E" && kind != "M" {
			fail("%s: after the first !message; the exchange must come first", kind)
		}
		// One space after the colon separates it from the text.
		text = strings.TrimPrefix(text, " ")
		switch kind {
		case "C", "S":
			tr.steps = append(tr.steps, transcriptStep{n, kind, text})
		case "B":
			raw, err := strconv.Unquote(text)
			if err != nil {
				fail("B: needs a Go string literal: %v", err)
			}
			tr.steps = append(tr.steps, transcriptStep{n, kind, raw})
		case "E", "M":
			if msg == nil {
				fail("%s: outside a !message block", kind)
			}
			if kind == "E" {
				msg.env = append(msg.env, text)
			} else {
				msg.body = append(msg.body, text)
			}
		default:
			fail("unknown line kind %q", kind)
		}
	}
	if n := len(tr.steps); n == 0 || tr.steps[n-1].kind != "S" || tr.steps[n-1].text != "<EOF>" {
		tb.Fatalf("%s: the exchange must end with S: <EOF>", path)
	}
	return tr
}

// options applies the transcript's !set line.
func (tr *transcript) options(tb testing.TB, o *Options) {
	tb.Helper()
	for k, v := range tr.set {
		num := func() int {
			n, err := strconv.Atoi(v)
			if err != nil {
				tb.Fatalf("%s: !set %s=%q: %v", tr.name, k, v, err)
			}
			return n
		}
		dur := func() time.Duration {
			d, err := time.ParseDuration(v)
			if err != nil {
				tb.Fatalf("%s: !set %s=%q: %v", tr.name, k, v, err)
			}
			return d
		}
		switch k {
		case "size":
			o.MaxMessageSize = int64(num())
		case "recipients":
			o.MaxRecipients = num()
		case "received":
			o.MaxReceivedHeaders = num()
		case "errors":
			o.MaxErrors = num()
		case "tls":
			o.TLSConfig = testTLS(tb)
		case "command-timeout":
			o.CommandTimeout = dur()
		case "data-timeout":
			o.DataTimeout = dur()
		default:
			tb.Fatalf("%s: unknown !set key %q", tr.name, k)
		}
	}
}

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/transcripts/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no transcripts in testdata/transcripts")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			t.Parallel()
			runTranscript(t, parseTranscript(t, f))
		})
	}
}

func runTranscript(t testing.TB, tr *transcript) {
	t.Helper()
	ts := startServer(t, func(o *Options) { tr.options(t, o) })
	c := dial(t, ts.addr)
	var ids []string
	for _, st := range tr.steps {
		at := fmt.Sprintf("%s:%d", tr.name, st.line)
		switch st.kind {
		case "C":
			c.queue(st.text)
		case "B":
			c.queueRaw(st.text)
		case "S":
			if st.text == "<EOF>" {
				if err := c.expectClosedErr(); err != nil {
					t.Fatalf("%s: %v", at, err)
				}
				continue
			}
			id, err := c.expectErr(st.text)
			if err != nil {
				t.Fatalf("%s: %v", at, err)
			}
			if id != "" {
				ids = append(ids, id)
			}
		case "!":
			c.flush()
			f := strings.Fields(st.text)
			switch f[0] {
			case "starttls":
				c.starttls(len(f) > 1 && f[1] == "tls12")
			case "spool-fail":
				mode := f[1]
				if mode == "none" {
					mode = failNone
				}
				ts.spool.setFail(mode)
			}
		}
	}
	// The session is over; Shutdown waits for the server side to finish.
	ts.stop(t)
	checkMessages(t, tr, ts.spool.messages(), ids)
}

func checkMessages(t testing.TB, tr *transcript, got []spooled, ids []string) {
	t.Helper()
	if len(got) != len(tr.messages) {
		t.Errorf("%s: %d messages committed, want %d", tr.name, len(got), len(tr.messages))
		for _, m := range got {
			t.Logf("committed %s:\n%s", m.env.ID, m.data)
		}
		return
	}
	gotIDs := make([]string, len(got))
	for i, m := range got {
		gotIDs[i] = m.env.ID
	}
	if strings.Join(ids, " ") != strings.Join(gotIDs, " ") {
		t.Errorf("%s: queue IDs in the replies %q, committed %q", tr.name, ids, gotIDs)
	}
	for i, want := range tr.messages {
		m := got[i]
		at := fmt.Sprintf("%s:%d", tr.name, want.line)
		if !m.env.Received.Equal(fixedNow) {
			t.Errorf("%s: envelope received %v, want the server clock %v", at, m.env.Received, fixedNow)
		}
		if gotEnv := envelopeLines(m.env); strings.Join(gotEnv, "\n") != strings.Join(want.env, "\n") {
			t.Errorf("%s: envelope\n got: %q\nwant: %q", at, gotEnv, want.env)
		}
		var re strings.Builder
		re.WriteString(`\A`)
		for _, l := range want.body {
			l, noEOL := strings.CutSuffix(l, "{noeol}")
			re.WriteString(patternRE(l, m.env.ID))
			if !noEOL {
				re.WriteString(`\r\n`)
			}
		}
		re.WriteString(`\z`)
		if !regexp.MustCompile(re.String()).Match(m.data) {
			t.Errorf("%s: message %s content\n got:\n%s\nwant (patterns):\n%s", at, m.env.ID, m.data, strings.Join(want.body, "\n"))
		}
	}
}
