package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// document is what Parse learns from the syntax tree besides the values: the
// line of every key, so that checks made after decoding can point at it.
// go-toml's decoder does not expose positions of keys that decoded fine, so
// we get them by walking the tree with its parser ourselves.
type document struct {
	// file is the name given to Parse, for error messages.
	file string
	// lines maps a key path as joinKey writes it, with [i] for array
	// elements, to the 1-based line where it is first set or opened.
	lines map[string]int
}

// line returns the line of key, or 0 when the key is not in the file (or
// there is no file).
func (d *document) line(key string) int {
	if d == nil {
		return 0
	}
	return d.lines[key]
}

// has reports whether the file sets or opens key.
func (d *document) has(key string) bool {
	return d.line(key) > 0
}

var (
	configType   = reflect.TypeFor[Config]()
	sizeType     = reflect.TypeFor[Size]()
	durationType = reflect.TypeFor[Duration]()
)

// scanner walks the syntax tree against the Go types of Config, the
// schema, so that each key is checked where it is written.
type scanner struct {
	file       string
	data       []byte
	lineStarts []int // offsets at which lines begin, for lineAt
	p          unstable.Parser
	doc        *document
	errs       []*Error
}

// scan parses data, reporting syntax errors, unknown keys and values of the
// wrong type, and returns the key positions for later checks.
func scan(data []byte, file string) (*document, []*Error) {
	s := &scanner{
		file:       file,
		data:       data,
		lineStarts: []int{0},
		doc:        &document{file: file, lines: map[string]int{}},
	}
	for i, c := range data {
		if c == '\n' {
			s.lineStarts = append(s.lineStarts, i+1)
		}
	}
	s.p.Reset(data)

	var table []string         // the path of the current [table]
	var tableType = configType // its Go type; nil after a bad header
	for s.p.NextExpression() {
		expr := s.p.Expression()
		switch expr.Kind {
		case unstable.KeyValue:
			if tableType != nil {
				s.keyValue(expr, table, tableType)
			}
		case unstable.Table:
			table = nil
			tableType = nil
			parts, lines := s.keyOf(expr)
			t, ok := s.resolve(nil, configType, parts, lines)
			if !ok {
				continue
			}
			if !isTable(t) {
				s.errorf(lines[len(lines)-1], joinKey(parts), "expected %s, got a table", describe(t))
				continue
			}
			table, tableType = parts, t
		case unstable.ArrayTable:
			// Nothing in the schema is an array of tables; say what the
			// key is instead.
			table, tableType = nil, nil
			parts, lines := s.keyOf(expr)
			t, ok := s.resolve(nil, configType, parts, lines)
			if !ok {
				continue
			}
			msg := fmt.Sprintf("expected %s, got an array of tables", describe(t))
			if isTable(t) {
				msg = fmt.Sprintf("is a table: write [%s], not [[%s]]", joinKey(parts), joinKey(parts))
			}
			s.errorf(lines[len(lines)-1], joinKey(parts), "%s", msg)
		}
		if len(s.errs) >= maxErrors {
			break
		}
	}
	if err := s.p.Error(); err != nil {
		line := 0
		msg := err.Error()
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			line = s.lineOfSlice(pe.Highlight)
			msg = pe.Message
		}
		s.errs = append(s.errs, &Error{File: file, Line: line, Msg: "syntax error: " + msg})
	}
	return s.doc, s.errs
}

// keyOf returns the parts of the key of a key-value or table expression and
// the line of each part (a dotted key may be split across lines only in
// theory, but it costs nothing to be exact).
func (s *scanner) keyOf(expr *unstable.Node) (parts []string, lines []int) {
	it := expr.Key()
	for it.Next() {
		n := it.Node()
		parts = append(parts, string(n.Data))
		lines = append(lines, s.lineAt(int(n.Raw.Offset)))
	}
	return parts, lines
}

// keyValue checks one key = value, relative to the current table.
func (s *scanner) keyValue(expr *unstable.Node, table []string, tableType reflect.Type) {
	parts, lines := s.keyOf(expr)
	t, ok := s.resolve(table, tableType, parts, lines)
	if !ok {
		return
	}
	full := append(append([]string(nil), table...), parts...)
	s.value(expr.Value(), t, full, joinKey(full), lines[len(lines)-1])
}

// resolve follows parts from the type t of the table at prefix, recording
// the line of each path on the way, and returns the type the last part
// names. An unknown part is reported with a suggestion when one is close.
func (s *scanner) resolve(prefix []string, t reflect.Type, parts []string, lines []int) (reflect.Type, bool) {
	path := append([]string(nil), prefix...)
	for i, part := range parts {
		if !isTable(t) {
			s.errorf(lines[i], joinKey(path), "expected %s, got a table", describe(t))
			return nil, false
		}
		path = append(path, part)
		key := joinKey(path)
		if _, seen := s.doc.lines[key]; !seen {
			s.doc.lines[key] = lines[i]
		}
		if t.Kind() == reflect.Map {
			t = t.Elem()
			continue
		}
		f, ok := fieldByTag(t, part)
		if !ok {
			msg := "unknown key"
			if hint := suggest(t, part); hint != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", hint)
			}
			s.errorf(lines[i], key, "%s", msg)
			return nil, false
		}
		t = f.Type
	}
	return t, true
}

// value checks that the TOML value n fits the Go type t, and records the
// lines of array elements and inline-table keys. path is the key as parts,
// for resolving the keys of an inline table; key is its written form, with
// an array index when n is an element; line is where the key (or the
// element) is written.
func (s *scanner) value(n *unstable.Node, t reflect.Type, path []string, key string, line int) {
	if _, seen := s.doc.lines[key]; !seen {
		s.doc.lines[key] = line
	}
	mismatch := func() {
		s.errorf(line, key, "expected %s, got %s", describe(t), s.describeValue(n))
	}
	switch {
	case t == sizeType:
		switch n.Kind {
		case unstable.Integer:
		case unstable.String:
			if _, err := ParseSize(string(n.Data)); err != nil {
				s.errorf(line, key, "%v", err)
			}
		default:
			mismatch()
		}
	case t == durationType:
		if n.Kind != unstable.String {
			mismatch()
		} else if _, err := ParseDuration(string(n.Data)); err != nil {
			s.errorf(line, key, "%v", err)
		}
	case t.Kind() == reflect.String:
		if n.Kind != unstable.String {
			mismatch()
		}
	case t.Kind() == reflect.Int:
		if n.Kind != unstable.Integer {
			mismatch()
		}
	case t.Kind() == reflect.Bool:
		if n.Kind != unstable.Bool {
			mismatch()
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != unstable.Array {
			mismatch()
			return
		}
		i := 0
		for it := n.Children(); it.Next(); {
			if it.Node().Kind == unstable.Comment {
				continue
			}
			// An element of a multi-line array has a line of its own.
			el := s.nodeLine(it.Node())
			if el == 0 {
				el = line
			}
			s.value(it.Node(), t.Elem(), path, index(key, i), el)
			i++
		}
	case isTable(t):
		if n.Kind != unstable.InlineTable {
			mismatch()
			return
		}
		for it := n.Children(); it.Next(); {
			kv := it.Node()
			if kv.Kind != unstable.KeyValue {
				continue
			}
			parts, lines := s.keyOf(kv)
			et, ok := s.resolve(path, t, parts, lines)
			if !ok {
				continue
			}
			full := append(append([]string(nil), path...), parts...)
			s.value(kv.Value(), et, full, joinKey(full), lines[len(lines)-1])
		}
	default:
		// The schema has no other kinds; a new field type must be taught
		// to this walk, and this makes forgetting it loud in tests.
		s.errorf(line, key, "internal error: no TOML form for %s", t)
	}
}

// errorf records a located problem.
func (s *scanner) errorf(line int, key, format string, args ...any) {
	s.errs = append(s.errs, &Error{File: s.file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// lineAt returns the 1-based line of a byte offset.
func (s *scanner) lineAt(offset int) int {
	// The first line start after offset, counted from 1, is offset's line.
	return sort.SearchInts(s.lineStarts, offset+1)
}

// lineOfSlice returns the line of b, a sub-slice of the document, or 0
// when b is not one (the parser may point past the end, or at nothing).
func (s *scanner) lineOfSlice(b []byte) int {
	if b == nil {
		return s.lineAt(len(s.data))
	}
	off := cap(s.data) - cap(b)
	if off < 0 || off > len(s.data) {
		return 0
	}
	return s.lineAt(off)
}

// nodeLine returns the line where value n starts, or 0 when the parser
// left it without a range: arrays have none, so use their first element.
func (s *scanner) nodeLine(n *unstable.Node) int {
	if n.Raw.Length > 0 {
		return s.lineAt(int(n.Raw.Offset))
	}
	if n.Kind == unstable.Array {
		for it := n.Children(); it.Next(); {
			if l := s.nodeLine(it.Node()); l > 0 {
				return l
			}
		}
	}
	return 0
}

// describeValue names the kind of a TOML value for messages, with the value
// itself when it is short and scalar: string "many".
func (s *scanner) describeValue(n *unstable.Node) string {
	var kind string
	switch n.Kind {
	case unstable.String:
		kind = "string"
	case unstable.Integer:
		kind = "integer"
	case unstable.Float:
		kind = "float"
	case unstable.Bool:
		kind = "boolean"
	case unstable.DateTime, unstable.LocalDateTime, unstable.LocalDate, unstable.LocalTime:
		kind = "date-time"
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "a table"
	default:
		return n.Kind.String()
	}
	raw := ""
	if n.Raw.Length > 0 && int(n.Raw.Offset+n.Raw.Length) <= len(s.data) {
		raw = string(s.p.Raw(n.Raw))
	}
	if raw == "" || len(raw) > 40 || strings.ContainsAny(raw, "\n") {
		return kind
	}
	return kind + " " + raw
}

// isTable reports whether t is decoded from a TOML table.
func isTable(t reflect.Type) bool {
	return t.Kind() == reflect.Struct || t.Kind() == reflect.Map
}

// describe says in words what TOML value the Go type t takes.
func describe(t reflect.Type) string {
	switch {
	case t == sizeType:
		return `a size (an integer of bytes, or a string such as "25MB")`
	case t == durationType:
		return `a duration string such as "30s"`
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Int:
		return "an integer"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() == reflect.Slice:
		return "an array"
	case isTable(t):
		return "a table"
	}
	return t.String()
}

// fieldByTag finds the field of struct type t whose toml tag is exactly
// name. go-toml would also match other casings; we do not, so that each
// setting has one spelling and a grep for it finds every use.
func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tagName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// suggest returns the key of struct type t closest to the unknown key name,
// if one is close enough to be a plausible typo.
func suggest(t reflect.Type, name string) string {
	best, bestDist := "", 3 // more than two edits is a different word
	for i := 0; i < t.NumField(); i++ {
		tag := tagName(t.Field(i))
		if strings.EqualFold(tag, name) {
			return tag
		}
		if d := editDistance(strings.ToLower(name), tag); d < bestDist {
			best, bestDist = tag, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
// Key names are short, so the quadratic table is cheap; bail out on long
// input so a fuzzer's megabyte key costs nothing.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
