package smtp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/address"
)

// The seed corpora live in testdata/fuzz/<target>/; crashers found by
// fuzzing are added there as regression seeds.

func FuzzParseCommand(f *testing.F) {
	f.Fuzz(func(t *testing.T, line string) {
		cmd := ParseCommand(line)
		verb, _, _ := strings.Cut(line, " ")
		if cmd.Verb != strings.ToUpper(verb) {
			t.Fatalf("ParseCommand(%q).Verb = %q, want %q", line, cmd.Verb, strings.ToUpper(verb))
		}
		if cmd.Arg != strings.Trim(cmd.Arg, " \t") {
			t.Fatalf("ParseCommand(%q).Arg = %q has surrounding blanks", line, cmd.Arg)
		}
		if !strings.Contains(line, cmd.Arg) {
			t.Fatalf("ParseCommand(%q).Arg = %q is not from the line", line, cmd.Arg)
		}
		switch cmd.Verb {
		case "MAIL":
			checkPathArg(t, cmd.Arg, "FROM:", false)
		case "RCPT":
			checkPathArg(t, cmd.Arg, "TO:", false)
			checkPathArg(t, cmd.Arg, "TO:", true)
		case "BDAT":
			if size, _, err := ParseBDAT(cmd.Arg); err == nil && size < 0 {
				t.Fatalf("ParseBDAT(%q) = negative size %d", cmd.Arg, size)
			} else if err != nil && err.Code != CodeParamSyntax {
				t.Fatalf("ParseBDAT(%q) error %v, want a %d", cmd.Arg, err, CodeParamSyntax)
			}
		}
	})
}

func FuzzParsePathArg(f *testing.F) {
	f.Fuzz(func(t *testing.T, arg string, rcpt, utf8ok bool) {
		prefix := "FROM:"
		if rcpt {
			prefix = "TO:"
		}
		checkPathArg(t, arg, prefix, utf8ok)
	})
}

// checkPathArg parses arg and checks the properties of the result: errors
// are 501 or 553; a parsed path re-serialises with Addr.String and the
// parameters and parses back to the same thing.
func checkPathArg(t *testing.T, arg, prefix string, utf8ok bool) {
	t.Helper()
	pa, err := ParsePathArg(arg, prefix, utf8ok)
	if err != nil {
		if err.Code != CodeParamSyntax && err.Code != CodeMailboxNotAllowed {
			t.Fatalf("ParsePathArg(%q, %q) error %v: want a %d or %d", arg, prefix, err, CodeParamSyntax, CodeMailboxNotAllowed)
		}
		if err.Enhanced == "" || err.Message == "" {
			t.Fatalf("ParsePathArg(%q, %q) error %#v lacks wire text", arg, prefix, err)
		}
		return
	}
	for _, p := range pa.Params {
		if p.Key != strings.ToUpper(p.Key) || p.Key == "" || (p.Set && p.Value == "") || (!p.Set && p.Value != "") {
			t.Fatalf("ParsePathArg(%q, %q) gave parameter %#v", arg, prefix, p)
		}
	}
	_, smtputf8 := pa.Params.Get("SMTPUTF8")
	utf8ok = utf8ok || (prefix == "FROM:" && smtputf8)
	if !utf8ok && !pa.Addr.IsASCII() {
		t.Fatalf("ParsePathArg(%q, %q) accepted a UTF-8 address without SMTPUTF8: %#v", arg, prefix, pa.Addr)
	}

	s := pa.Addr.String()
	var b strings.Builder
	b.WriteString(prefix + "<" + s + ">")
	for _, p := range pa.Params {
		b.WriteString(" " + p.Key)
		if p.Set {
			b.WriteString("=" + p.Value)
		}
	}
	again, err := ParsePathArg(b.String(), prefix, utf8ok)
	if err != nil {
		// The path limit counts octets as sent; normalising (A-labels,
		// IPv6 text form) can lengthen an address past it.
		if errors.Is(err, address.ErrTooLong) && len(s)+2 > address.MaxPathLen {
			return
		}
		t.Fatalf("ParsePathArg(%q) = %#v; its re-serialisation %q fails: %v", arg, pa, b.String(), err)
	}
	if again.Addr != pa.Addr || !equalParams(again.Params, pa.Params) {
		t.Fatalf("ParsePathArg(%q) = %#v, but %q gives %#v", arg, pa, b.String(), again)
	}
	if !pa.Addr.IsNull() {
		// Parse has no path limit: the canonical form always parses back.
		back, err := address.Parse(s)
		if err != nil || back != pa.Addr {
			t.Fatalf("address.Parse(%q) = %#v, %v; want %#v", s, back, err, pa.Addr)
		}
	}
}

// dotOracle describes, independently of DotReader's state machine, how a
// DATA stream must be read. The stream starts at the beginning of a line,
// so it ends at a leading ".\r\n" or at the first "\r\n.\r\n".
type dotOracle struct {
	end  int    // bytes the reader must consume; -1 if the data never ends
	body []byte // the lines before the end, CRLFs included, still stuffed
	bare bool   // body has a CR or LF outside a CRLF pair
	want []byte // body with dot-stuffing removed
}

func newDotOracle(data []byte) dotOracle {
	o := dotOracle{end: -1}
	switch i := bytes.Index(data, []byte("\r\n.\r\n")); {
	case bytes.HasPrefix(data, []byte(".\r\n")):
		o.end, o.body = 3, data[:0]
	case i >= 0:
		o.end, o.body = i+5, data[:i+2]
	default:
		return o
	}
	for i, c := range o.body {
		if c == '\r' && (i+1 == len(o.body) || o.body[i+1] != '\n') ||
			c == '\n' && (i == 0 || o.body[i-1] != '\r') {
			o.bare = true
		}
	}
	if !o.bare {
		// Every line ends in CRLF here; drop one leading dot per line.
		for _, line := range bytes.SplitAfter(o.body, []byte("\r\n")) {
			o.want = append(o.want, bytes.TrimPrefix(line, []byte("."))...)
		}
	}
	return o
}

func FuzzDotReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, bufSize uint8, max uint16) {
		o := newDotOracle(data)
		r := readDot(t, string(data), int64(max), 1+int(bufSize)%16, nil)
		if len(r.out) > len(data) {
			t.Fatalf("returned %d bytes from %d of input", len(r.out), len(data))
		}
		if max > 0 && len(r.out) > int(max) {
			t.Fatalf("returned %d bytes past the limit %d", len(r.out), max)
		}
		if o.end < 0 {
			if r.err != io.ErrUnexpectedEOF || r.left != "" {
				t.Fatalf("no end of data in %q: error %v, left %q; want io.ErrUnexpectedEOF", data, r.err, r.left)
			}
			return
		}
		if r.left != string(data[o.end:]) {
			t.Fatalf("%q: left %q unread, want %q", data, r.left, data[o.end:])
		}
		switch {
		case o.bare:
			if r.err != ErrBareLineEnding {
				t.Fatalf("%q: error %v, want ErrBareLineEnding", data, r.err)
			}
		case max > 0 && len(o.want) > int(max):
			if r.err != ErrTooBig {
				t.Fatalf("%q: %d bytes, limit %d: error %v, want ErrTooBig", data, len(o.want), max, r.err)
			}
		default:
			if r.err != io.EOF || r.out != string(o.want) || r.size != int64(len(o.want)) {
				t.Fatalf("%q: read %q (size %d), %v; want %q, EOF", data, r.out, r.size, r.err, o.want)
			}
		}
		// The size of the Reads must not matter.
		if big := readDot(t, string(data), int64(max), 4096, nil); big != r {
			t.Fatalf("%q: buffer %d gives %+v, buffer 4096 gives %+v", data, 1+int(bufSize)%16, r, big)
		}
	})
}

// canonLines turns every CR or LF outside a CRLF pair into CRLF and ends
// a non-empty text with a line ending: what DotWriter sends.
func canonLines(x []byte) []byte {
	var out []byte
	for i := 0; i < len(x); i++ {
		switch c := x[i]; {
		case c == '\r' && i+1 < len(x) && x[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case c == '\r' || c == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

func FuzzDotRoundTrip(f *testing.F) {
	f.Fuzz(func(t *testing.T, x []byte, cut uint8) {
		// Write x in chunks of 1+cut bytes.
		var chunks []string
		step := 1 + int(cut)
		for i := 0; i < len(x); i += step {
			chunks = append(chunks, string(x[i:min(i+step, len(x))]))
		}
		wire := writeDot(t, chunks...)
		want := canonLines(x)

		// The end of data appears once, at the end, and nothing is bare.
		o := newDotOracle([]byte(wire + afterData))
		if o.end != len(wire) || o.bare {
			t.Fatalf("DotWriter(%q) = %q: end of data at %d, bare %v", x, wire, o.end, o.bare)
		}
		r := readDot(t, wire+afterData, 0, 1+int(cut)%8, nil)
		if r.err != io.EOF || r.out != string(want) || r.left != afterData {
			t.Fatalf("DotReader(DotWriter(%q)) = %q, %v, left %q; want %q", x, r.out, r.err, r.left, want)
		}
		// For CRLF-clean text that ends its last line, the round trip is
		// the identity.
		if !bytes.ContainsAny(bytes.ReplaceAll(x, []byte("\r\n"), nil), "\r\n") &&
			(len(x) == 0 || bytes.HasSuffix(x, []byte("\r\n"))) && r.out != string(x) {
			t.Fatalf("clean %q came back as %q", x, r.out)
		}
	})
}
