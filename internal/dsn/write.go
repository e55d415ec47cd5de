package dsn

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// Line lengths, RFC 5322 2.1.1: a line SHOULD stay within 78 octets and
// MUST NOT exceed 998, both without the CRLF.
const (
	softLineLen = 78
	hardLineLen = 998
	// maxWord leaves room on a folded line for the leading space and any
	// indentation of the text part.
	maxWord = hardLineLen - 20
)

// writeField writes the header field "name: value" to w, folded.
func writeField(w *bytes.Buffer, name, value string) {
	w.WriteString(fieldString(name, value))
	w.WriteString("\r\n")
}

// fieldString returns "name: value" folded before spaces (RFC 5322 2.2.3)
// so that lines stay within softLineLen where the words allow. A word too
// long for even a line of its own is cut at hardLineLen's margin, which
// only hostile data (a remote reply) can need. The value must not contain
// CR or LF; callers pass it through clean or build it themselves.
func fieldString(name, value string) string {
	var out strings.Builder
	out.WriteString(name + ":")
	lineLen := len(name) + 1
	wrote := false
	for _, word := range strings.Split(value, " ") {
		word = cutWord(word)
		// Fold only before a non-empty word, so that no line is made of
		// whitespace alone (RFC 5322 3.2.2), and never before the first.
		if wrote && word != "" && lineLen+1+len(word) > softLineLen {
			out.WriteString("\r\n")
			lineLen = 0
		}
		out.WriteString(" " + word)
		lineLen += 1 + len(word)
		wrote = true
	}
	return out.String()
}

// cutWord shortens a word beyond maxWord octets at a character boundary.
func cutWord(w string) string {
	if len(w) <= maxWord {
		return w
	}
	end := maxWord - 3
	for end > 0 && !utf8.RuneStart(w[end]) {
		end--
	}
	return w[:end] + "..."
}

// textWriter builds the text/plain part: CRLF lines, wrapped at spaces.
type textWriter struct {
	buf bytes.Buffer
}

func (t *textWriter) line(s string) {
	t.buf.WriteString(s)
	t.buf.WriteString("\r\n")
}

// wrap writes s as lines of at most softLineLen octets (where the words
// allow), each starting with indent.
func (t *textWriter) wrap(indent, s string) {
	cur := indent
	for _, word := range strings.Fields(s) {
		word = cutWord(word)
		if len(cur) > len(indent) && len(cur)+1+len(word) > softLineLen {
			t.line(cur)
			cur = indent
		}
		if len(cur) > len(indent) {
			cur += " "
		}
		cur += word
	}
	t.line(cur)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// hasControl reports whether s holds an ASCII control character; an
// address with one would break the fields it is written into.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7F })
}
