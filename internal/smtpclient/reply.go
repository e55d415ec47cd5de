package smtpclient

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/posthorn/posthorn/internal/smtp"
)

// Limits on what we read from a server. RFC 5321 4.5.3.1.5 sets 512 octets
// for a reply line; like the server's command lines (smtp.MaxCommandLine)
// we allow four times that, and refuse the rest as a broken or hostile peer.
const (
	maxReplyLine  = 4 * 512
	maxReplyLines = 512 // a long EHLO reply has a few dozen
)

// ErrMalformedReply is wrapped by the error returned when a server's reply
// is not SMTP: a bad reply code, a line too long, lines of one reply with
// different codes. The connection is closed.
var ErrMalformedReply = errors.New("malformed SMTP reply")

// reply is one SMTP reply (RFC 5321 4.2), possibly of several lines.
type reply struct {
	code  int
	enh   string   // enhanced status code: the server's, or derived from the class
	lines []string // text of each line, the enhanced code removed
}

// text joins the lines of the reply with spaces.
func (r *reply) text() string { return strings.Join(r.lines, " ") }

// positive reports a 2xx reply.
func (r *reply) positive() bool { return r.code/100 == 2 }

// failure reports a 4xx or 5xx reply: the server refused.
func (r *reply) failure() bool { return r.code/100 == 4 || r.code/100 == 5 }

// err returns the reply as an *smtp.Error.
func (r *reply) err() *smtp.Error {
	return &smtp.Error{Code: r.code, Enhanced: r.enh, Message: r.text()}
}

// String is the reply as a single line, for results and logs.
func (r *reply) String() string {
	if r.enh == "" {
		return fmt.Sprintf("%d %s", r.code, r.text())
	}
	return fmt.Sprintf("%d %s %s", r.code, r.enh, r.text())
}

// readReply reads one reply from br. enhanced says whether the server
// offered ENHANCEDSTATUSCODES (RFC 2034), so that the codes it puts at the
// start of the text are taken from there.
func readReply(br *bufio.Reader, enhanced bool) (*reply, error) {
	r := &reply{}
	for {
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		code, last, text, ok := parseReplyLine(line)
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrMalformedReply, clip(line))
		}
		// RFC 5321 4.2.1: every line of a multiline reply has the same code.
		if r.code != 0 && code != r.code {
			return nil, fmt.Errorf("%w: code %d inside a %d reply", ErrMalformedReply, code, r.code)
		}
		r.code = code
		r.lines = append(r.lines, text)
		if last {
			break
		}
		if len(r.lines) >= maxReplyLines {
			return nil, fmt.Errorf("%w: more than %d lines", ErrMalformedReply, maxReplyLines)
		}
	}
	class := r.code / 100
	if class == 2 || class == 4 || class == 5 {
		// RFC 3463 2: the class of the enhanced code repeats the class of
		// the reply. One that disagrees is ignored, not trusted.
		if e, ok := enhancedPrefix(r.lines[0], class); enhanced && ok {
			r.enh = e
			for i, l := range r.lines {
				if e2, ok := enhancedPrefix(l, class); ok {
					r.lines[i] = strings.TrimLeft(l[len(e2):], " ")
				}
			}
		} else {
			r.enh = fmt.Sprintf("%d.0.0", class)
		}
	}
	return r, nil
}

// readLine reads one line of at most maxReplyLine octets and returns it
// without its line ending. A bare LF ends a line too: being lenient in
// what we read costs nothing here, since nothing is forwarded raw.
func readLine(br *bufio.Reader) (string, error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > maxReplyLine {
			return "", fmt.Errorf("%w: line longer than %d octets", ErrMalformedReply, maxReplyLine)
		}
		if err == bufio.ErrBufferFull {
			buf = append(buf, frag...)
			continue
		}
		if err != nil {
			return "", err
		}
		if buf != nil {
			frag = append(buf, frag...)
		}
		frag = bytes.TrimSuffix(frag[:len(frag)-1], []byte{'\r'})
		return string(frag), nil
	}
}

// parseReplyLine splits a reply line (RFC 5321 4.2: Reply-code [ SP
// textstring ] or Reply-code "-" [ textstring ]) and reports whether it is
// the last line of its reply.
func parseReplyLine(line string) (code int, last bool, text string, ok bool) {
	if len(line) < 3 {
		return 0, false, "", false
	}
	// Reply codes are 2yz to 5yz, y in 0-5 (RFC 5321 4.2.1).
	d0, d1, d2 := line[0], line[1], line[2]
	if d0 < '2' || d0 > '5' || d1 < '0' || d1 > '5' || d2 < '0' || d2 > '9' {
		return 0, false, "", false
	}
	code = int(d0-'0')*100 + int(d1-'0')*10 + int(d2-'0')
	switch {
	case len(line) == 3:
		return code, true, "", true
	case line[3] == ' ':
		return code, true, sanitize(line[4:]), true
	case line[3] == '-':
		return code, false, sanitize(line[4:]), true
	}
	return 0, false, "", false
}

// enhancedPrefix returns the enhanced status code (RFC 3463 2: class
// "." subject "." detail, subject and detail of 1 to 3 digits) at the
// start of text, followed by a space or the end, when its class is class.
func enhancedPrefix(text string, class int) (string, bool) {
	if len(text) < 5 || int(text[0]-'0') != class || text[1] != '.' {
		return "", false
	}
	i := 2
	for part := 0; part < 2; part++ {
		n := 0
		for i < len(text) && text[i] >= '0' && text[i] <= '9' {
			i++
			n++
		}
		if n < 1 || n > 3 {
			return "", false
		}
		if part == 0 {
			if i >= len(text) || text[i] != '.' {
				return "", false
			}
			i++
		}
	}
	if i < len(text) && text[i] != ' ' {
		return "", false
	}
	return text[:i], true
}

// sanitize makes reply text safe to log and to quote in a delivery status
// notification: valid UTF-8 without control characters. What the remote
// server says is not ours to trust.
func sanitize(s string) string {
	clean := utf8.ValidString(s)
	for i := 0; i < len(s) && clean; i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			clean = false
		}
	}
	if clean {
		return s
	}
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// clip shortens a bad line for an error message.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return sanitize(s)
}
