package smtpclient

import (
	"bufio"
	"errors"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		in       string
		enhanced bool
		code     int
		enh      string
		text     string
	}{
		{"250 ok\r\n", false, 250, "2.0.0", "ok"},
		{"250\r\n", true, 250, "2.0.0", ""},
		{"550 5.1.1 no\r\n", false, 550, "5.0.0", "5.1.1 no"},
		{"550 5.1.1 no\r\n", true, 550, "5.1.1", "no"},
		{"550 5.1.10 null MX\r\n", true, 550, "5.1.10", "null MX"},
		{"550 5.1.1\r\n", true, 550, "5.1.1", ""},
		// The class must match the reply's; detail of 1 to 3 digits.
		{"550 4.1.1 odd\r\n", true, 550, "5.0.0", "4.1.1 odd"},
		{"550 5.1.1000 long\r\n", true, 550, "5.0.0", "5.1.1000 long"},
		{"550 5.1.1x no\r\n", true, 550, "5.0.0", "5.1.1x no"},
		{"451-4.3.0 a\r\n451-b\r\n451 4.3.0 c\r\n", true, 451, "4.3.0", "a b c"},
		// 354 has no enhanced code; bare LF is tolerated.
		{"354 go ahead\n", true, 354, "", "go ahead"},
		// Control characters and bad UTF-8 are not passed on.
		{"550 bad\x01\x1b[31m\xff\r\n", false, 550, "5.0.0", "bad??[31m?"},
	}
	for _, tt := range tests {
		r, err := readReply(bufio.NewReader(strings.NewReader(tt.in)), tt.enhanced)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if r.code != tt.code || r.enh != tt.enh || r.text() != tt.text {
			t.Errorf("%q: got %d %q %q, want %d %q %q", tt.in, r.code, r.enh, r.text(), tt.code, tt.enh, tt.text)
		}
	}
}

func TestReadReplyMalformed(t *testing.T) {
	for _, in := range []string{
		"", "2\r\n", "250x\r\n", "650 no\r\n", "260 no\r\n", "abc\r\n",
		"250-a\r\n", // ends before the last line
		"250-a\r\n550 b\r\n",
		strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 x\r\n",
		"250 " + strings.Repeat("x", maxReplyLine) + "\r\n",
	} {
		if r, err := readReply(bufio.NewReader(strings.NewReader(in)), true); err == nil {
			t.Errorf("%.40q: got reply %+v, want an error", in, r)
		} else if in != "" && in != "250-a\r\n" && !errors.Is(err, ErrMalformedReply) {
			t.Errorf("%.40q: %v, want ErrMalformedReply", in, err)
		}
	}
}
