package config

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Error is one problem in a configuration, located as precisely as the
// file allows. Parse and Validate return every problem they find, joined
// with errors.Join, one per line; errors.As finds the first.
type Error struct {
	// File is the name given to Parse, or "" for a Config built in code.
	File string
	// Line is the 1-based line of the key in the file, or 0 when the key
	// is not in the file (its value is a default).
	Line int
	// Key is the dotted TOML key, such as smtp.max_message_size or
	// domains."example.com".users[1]; "" for a syntax error.
	Key string
	// Msg says what is wrong and, where it helps, what would be right.
	Msg string
}

// Error formats e as file:line: key: message, leaving out what is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxErrors bounds the report: past a screenful, more lines help nobody,
// and a generated file with thousands of bad entries should not produce a
// megabyte of error text.
const maxErrors = 20

// joinErrors orders errs by line, so that the report reads like the file,
// with problems of default values (line 0) last, and joins them.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		li, lj := errs[i].Line, errs[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
	n := min(len(errs), maxErrors)
	list := make([]error, 0, n+1)
	for _, e := range errs[:n] {
		list = append(list, e)
	}
	if len(errs) > n {
		list = append(list, fmt.Errorf("... and %d more problems", len(errs)-n))
	}
	return errors.Join(list...)
}

// joinKey writes a key path the way it would appear in a TOML file, quoting
// the parts that are not bare keys: domains."example.com".users.
func joinKey(parts []string) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(keyPart(p))
	}
	return b.String()
}

// keyPart quotes p unless it is a TOML bare key (A-Z a-z 0-9 _ -).
func keyPart(p string) string {
	if p == "" {
		return `""`
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return strconv.Quote(p)
		}
	}
	return p
}

// index appends an array index to a key path: smtp.listen[0].
func index(key string, i int) string {
	return key + "[" + strconv.Itoa(i) + "]"
}
