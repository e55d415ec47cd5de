package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchMessage builds a dot-stuffed DATA stream of about size bytes of
// message: header lines, then body lines of 76 characters, some starting
// with a (stuffed) dot, then the end-of-data line.
func benchMessage(tb testing.TB, size int) (wire []byte, plain int) {
	tb.Helper()
	var b strings.Builder
	b.WriteString("From: bob@example.org\r\nTo: alice@example.com\r\nSubject: benchmark\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		line := fmt.Sprintf("%04d %s", i, strings.Repeat("abcdefghij", 7))
		if i%10 == 0 {
			line = "." + line[1:]
		}
		b.WriteString(line + "\r\n")
	}
	msg := b.String()
	var w bytes.Buffer
	dw := NewDotWriter(&w)
	if _, err := io.WriteString(dw, msg); err != nil {
		tb.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		tb.Fatal(err)
	}
	return w.Bytes(), len(msg)
}

func BenchmarkDotReader(b *testing.B) {
	wire, plain := benchMessage(b, 4096)
	src := bytes.NewReader(wire)
	br := bufio.NewReaderSize(src, 4096)
	buf := make([]byte, 32*1024)
	b.SetBytes(int64(plain))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(wire)
		br.Reset(src)
		dr := NewDotReader(br, 0)
		total := 0
		for {
			n, err := dr.Read(buf)
			total += n
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if total != plain {
			b.Fatalf("read %d bytes, want %d", total, plain)
		}
	}
}
