package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// afterData is what the client sends after the end of data; a DotReader
// must leave it unread.
const afterData = "QUIT\r\n"

// dotResult is everything a DotReader run produced.
type dotResult struct {
	out  string // message bytes returned
	err  error  // the error that ended the reading (io.EOF on success)
	size int64  // DotReader.Size at the end
	left string // bytes left in the bufio.Reader
}

// readDot runs a DotReader with limit max over wire, reading into buffers
// of bufSize bytes; wrap (if not nil) wraps the source to vary how the
// bufio.Reader gets its bytes. It reads until the first error, then once
// more to check that the error is sticky, and collects what is left.
func readDot(tb testing.TB, wire string, max int64, bufSize int, wrap func(io.Reader) io.Reader) dotResult {
	tb.Helper()
	var src io.Reader = strings.NewReader(wire)
	if wrap != nil {
		src = wrap(src)
	}
	br := bufio.NewReaderSize(src, 16) // the smallest, to cross refills often
	dr := NewDotReader(br, max)
	buf := make([]byte, bufSize)
	var out bytes.Buffer
	var err error
	// Each Read consumes at least one byte or ends, so this bounds the loop.
	for i := 0; i <= 2*len(wire)+2; i++ {
		var n int
		n, err = dr.Read(buf)
		if n < 0 || n > len(buf) {
			tb.Fatalf("Read returned n=%d for a buffer of %d", n, len(buf))
		}
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if err == nil {
		tb.Fatalf("DotReader never finished on %q", wire)
	}
	if n, err2 := dr.Read(buf); n != 0 || err2 != err {
		tb.Fatalf("Read after the end = %d, %v; want 0, %v", n, err2, err)
	}
	left, rerr := io.ReadAll(br)
	if rerr != nil {
		tb.Fatalf("reading the rest: %v", rerr)
	}
	return dotResult{out: out.String(), err: err, size: dr.Size(), left: string(left)}
}

// Smuggling variants: an end-of-data look-alike made with a bare CR or LF.
// Each must be refused and must not end the data.
var smugglingVariants = []string{
	"\n.\n",
	"\r.\r\n",
	"\n.\r\n",
	"\r\n.\n",
	"\r\n.\rX",
	"\r\n.\r\r\n",
	"\r.\r",
	"\n.\r",
}

func TestDotReader(t *testing.T) {
	tests := []struct {
		name string
		wire string // the DATA stream up to and including the end of data
		max  int64
		out  string
		err  error
	}{
		{name: "plain", wire: "Subject: hi\r\n\r\nHello\r\n.\r\n", out: "Subject: hi\r\n\r\nHello\r\n", err: io.EOF},
		{name: "empty message", wire: ".\r\n", out: "", err: io.EOF},
		{name: "one empty line", wire: "\r\n.\r\n", out: "\r\n", err: io.EOF},
		{name: "unstuff", wire: "..x\r\n.\r\n", out: ".x\r\n", err: io.EOF},
		{name: "unstuff lone dot", wire: "a\r\n..\r\nb\r\n.\r\n", out: "a\r\n.\r\nb\r\n", err: io.EOF},
		{name: "unstuff dots", wire: "...\r\n.\r\n", out: "..\r\n", err: io.EOF},
		{name: "unstuff dot space", wire: ". x\r\n.\r\n", out: " x\r\n", err: io.EOF},
		{name: "dot inside line", wire: "a.b.\r\n.\r\n", out: "a.b.\r\n", err: io.EOF},
		{name: "dot not followed by CRLF", wire: "a\r\n.b\r\n.\r\n", out: "a\r\nb\r\n", err: io.EOF},
		{name: "blank lines", wire: "\r\n\r\nx\r\n\r\n.\r\n", out: "\r\n\r\nx\r\n\r\n", err: io.EOF},
		{name: "8-bit and NUL", wire: "caf\xc3\xa9\x00\xff\r\n.\r\n", out: "caf\xc3\xa9\x00\xff\r\n", err: io.EOF},

		// Bare line endings: refused, but only at the real end.
		{name: "bare LF", wire: "a\nb\r\n.\r\n", err: ErrBareLineEnding},
		{name: "bare CR", wire: "a\rb\r\n.\r\n", err: ErrBareLineEnding},
		{name: "bare CR before CRLF", wire: "a\r\r\n.\r\n", err: ErrBareLineEnding},
		{name: "bare LF first", wire: "\n.\r\n.\r\n", err: ErrBareLineEnding},
		{name: "dot bare LF first", wire: ".\n\r\n.\r\n", err: ErrBareLineEnding},
		{name: "dot bare CR first", wire: ".\rX\r\n.\r\n", err: ErrBareLineEnding},
		{name: "LF CR", wire: "a\n\r\n.\r\n", err: ErrBareLineEnding},

		// Size limit (RFC 1870): refused after reading to the end.
		{name: "at limit", wire: "12345678\r\n.\r\n", max: 10, out: "12345678\r\n", err: io.EOF},
		{name: "over limit by one", wire: "123456789\r\n.\r\n", max: 10, err: ErrTooBig},
		{name: "far over limit", wire: strings.Repeat("0123456789\r\n", 100) + ".\r\n", max: 10, err: ErrTooBig},
		{name: "stuffed dot within limit", wire: "..\r\n.\r\n", max: 3, out: ".\r\n", err: io.EOF},
		{name: "bare and too big", wire: strings.Repeat("x", 20) + "\n\r\n.\r\n", max: 10, err: ErrBareLineEnding},
	}
	for _, v := range smugglingVariants {
		tests = append(tests, struct {
			name string
			wire string
			max  int64
			out  string
			err  error
		}{
			name: "smuggling " + strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(v),
			wire: "From: a@example.org\r\n\r\nhello" + v + "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nevil\r\n.\r\n",
			err:  ErrBareLineEnding,
		})
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", nil},
		{"one byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first *dotResult
			for _, rd := range readers {
				for _, bufSize := range []int{1, 2, 3, 7, 4096} {
					r := readDot(t, tt.wire+afterData, tt.max, bufSize, rd.wrap)
					if r.err != tt.err {
						t.Fatalf("%s reader, buffer %d: error %v, want %v", rd.name, bufSize, r.err, tt.err)
					}
					// The end of data is consumed and nothing after it.
					if r.left != afterData {
						t.Fatalf("%s reader, buffer %d: left %q unread, want %q", rd.name, bufSize, r.left, afterData)
					}
					if tt.err == io.EOF {
						if r.out != tt.out {
							t.Fatalf("%s reader, buffer %d: read %q, want %q", rd.name, bufSize, r.out, tt.out)
						}
						if r.size != int64(len(tt.out)) {
							t.Fatalf("%s reader, buffer %d: Size() = %d, want %d", rd.name, bufSize, r.size, len(tt.out))
						}
					}
					if tt.max > 0 && int64(len(r.out)) > tt.max {
						t.Fatalf("%s reader, buffer %d: returned %d bytes past the limit %d", rd.name, bufSize, len(r.out), tt.max)
					}
					if strings.Contains(r.out, "MAIL FROM") {
						t.Fatalf("%s reader, buffer %d: returned the smuggled commands: %q", rd.name, bufSize, r.out)
					}
					// Tiny buffers go through the pending-CRLF path; the
					// result must not depend on the buffer.
					if first == nil {
						first = &r
					} else if r != *first {
						t.Fatalf("%s reader, buffer %d: %+v differs from %+v", rd.name, bufSize, r, *first)
					}
				}
			}
		})
	}
}

func TestDotReaderUnexpectedEOF(t *testing.T) {
	for _, wire := range []string{
		"",
		"abc",
		"abc\r\n",
		"abc\r",
		"abc\r\n.",
		"abc\r\n.\r",
		"abc\r\n..\r\n",
		"abc\n.\n",
		"abc\r\n.\n",
	} {
		for _, bufSize := range []int{1, 2, 4096} {
			r := readDot(t, wire, 0, bufSize, nil)
			if r.err != io.ErrUnexpectedEOF {
				t.Errorf("DotReader(%q), buffer %d: error %v, want io.ErrUnexpectedEOF", wire, bufSize, r.err)
			}
		}
	}
}

// errAfterReader returns its data, then err.
type errAfterReader struct {
	data string
	err  error
}

func (e *errAfterReader) Read(p []byte) (int, error) {
	if e.data == "" {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

func TestDotReaderPassesReadErrors(t *testing.T) {
	timeout := errors.New("i/o timeout")
	br := bufio.NewReader(&errAfterReader{data: "partial\r\n", err: timeout})
	got, err := io.ReadAll(NewDotReader(br, 0))
	if !errors.Is(err, timeout) {
		t.Fatalf("error %v, want %v", err, timeout)
	}
	if string(got) != "partial\r\n" {
		t.Fatalf("read %q before the error", got)
	}
}

func TestDotReaderZeroLengthRead(t *testing.T) {
	dr := NewDotReader(bufio.NewReader(strings.NewReader("ab\r\n.\r\n")), 0)
	if n, err := dr.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v before the end; want 0, nil", n, err)
	}
	got, err := io.ReadAll(dr)
	if err != nil || string(got) != "ab\r\n" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
}

func writeDot(tb testing.TB, chunks ...string) string {
	tb.Helper()
	var b bytes.Buffer
	w := NewDotWriter(&b)
	for _, c := range chunks {
		n, err := w.Write([]byte(c))
		if err != nil || n != len(c) {
			tb.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatalf("Close: %v", err)
	}
	return b.String()
}

func TestDotWriter(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", ".\r\n"},
		{"one line", "hello\r\n", "hello\r\n.\r\n"},
		{"no final CRLF", "hello", "hello\r\n.\r\n"},
		{"leading dot", ".hidden\r\n", "..hidden\r\n.\r\n"},
		{"lone dot line", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"dot at end without CRLF", "a\r\n.", "a\r\n..\r\n.\r\n"},
		{"dots inside lines", "a.b\r\nc.\r\n", "a.b\r\nc.\r\n.\r\n"},
		{"several dots", "...\r\n", "....\r\n.\r\n"},
		// RFC 5321 2.3.8: bare CR and LF go out as CRLF, so that no
		// receiver can read an end of data into them.
		{"bare LF", "a\nb\r\n", "a\r\nb\r\n.\r\n"},
		{"bare LF dot", "a\n.\r\nMAIL FROM:<x@y>\r\n", "a\r\n..\r\nMAIL FROM:<x@y>\r\n.\r\n"},
		{"bare LF dot LF", "a\n.\nb", "a\r\n..\r\nb\r\n.\r\n"},
		{"bare CR dot", "a\r.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"CRLF dot bare CR", "a\r\n.\rb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"bare CR at end", "a\r", "a\r\n.\r\n"},
		{"bare LF at end", "a\n", "a\r\n.\r\n"},
		{"CR CR LF", "a\r\r\n", "a\r\n\r\n.\r\n"},
		{"LF first", "\n.", "\r\n..\r\n.\r\n"},
	}
	for _, tt := range tests {
		if got := writeDot(t, tt.in); got != tt.want {
			t.Errorf("%s: DotWriter(%q) wrote %q, want %q", tt.name, tt.in, got, tt.want)
		}
		// Split into single bytes: line state must carry across Writes.
		var bytesIn []string
		for i := range len(tt.in) {
			bytesIn = append(bytesIn, tt.in[i:i+1])
		}
		if got := writeDot(t, bytesIn...); got != tt.want {
			t.Errorf("%s: DotWriter(%q) byte by byte wrote %q, want %q", tt.name, tt.in, got, tt.want)
		}
		// Whatever the input, the output is accepted by DotReader.
		r := readDot(t, tt.want+afterData, 0, 4096, nil)
		if r.err != io.EOF || r.left != afterData {
			t.Errorf("%s: DotReader on %q: %v, left %q", tt.name, tt.want, r.err, r.left)
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestDotWriterErrors(t *testing.T) {
	broken := errors.New("broken pipe")
	w := NewDotWriter(failWriter{broken})
	if _, err := w.Write([]byte("x\r\n")); !errors.Is(err, broken) {
		t.Errorf("Write error = %v, want %v", err, broken)
	}
	if err := w.Close(); !errors.Is(err, broken) {
		t.Errorf("Close error = %v, want %v", err, broken)
	}
}

// randomCRLFText returns text made of lines ending in CRLF, with dots,
// spaces and 8-bit bytes where they matter most: at the start of lines.
func randomCRLFText(rng *rand.Rand) string {
	const alphabet = "..ab .\t\x00\xc3\xa9x"
	var b strings.Builder
	for range rng.IntN(12) {
		for range rng.IntN(6) {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		b.WriteString("\r\n")
	}
	return b.String()
}

// TestDotRoundTrip checks DotReader(DotWriter(x)) == x for text with CRLF
// line endings, whatever way it is cut into Writes and Reads.
func TestDotRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		x := randomCRLFText(rng)
		// Cut x into random chunks for the writer.
		var chunks []string
		for rest := x; rest != ""; {
			n := 1 + rng.IntN(len(rest))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		wire := writeDot(t, chunks...)
		r := readDot(t, wire+afterData, 0, 1+rng.IntN(8), nil)
		if r.err != io.EOF || r.out != x || r.left != afterData {
			t.Fatalf("case %d: %q -> %q -> %q, %v, left %q", i, x, wire, r.out, r.err, r.left)
		}
	}
	// An unterminated last line comes back with the CRLF Close added.
	r := readDot(t, writeDot(t, "a\r\n.b")+afterData, 0, 4096, nil)
	if r.err != io.EOF || r.out != "a\r\n.b\r\n" {
		t.Fatalf("unterminated: %q, %v", r.out, r.err)
	}
}
