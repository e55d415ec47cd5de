package smtp

import (
	"errors"
	"strconv"
	"strings"

	"github.com/posthorn/posthorn/internal/address"
)

// MaxCommandLine is the longest command line we accept, CRLF included.
// RFC 5321 4.5.3.1.4 sets 512 octets but lets extensions raise it (SIZE,
// SMTPUTF8 and the DSN parameters all lengthen MAIL and RCPT); like
// Postfix's line_length_limit we allow 2048.
const MaxCommandLine = 2048

// Command is one parsed command line: the verb in upper case and the
// argument text after the first space, with surrounding spaces removed.
type Command struct {
	Verb string
	Arg  string
}

// ParseCommand splits a command line (without its CRLF) into verb and
// argument. Verbs are case-insensitive (RFC 5321 2.4).
func ParseCommand(line string) Command {
	verb, arg, _ := strings.Cut(line, " ")
	return Command{Verb: strings.ToUpper(verb), Arg: strings.Trim(arg, " \t")}
}

// Param is one ESMTP parameter of MAIL or RCPT (RFC 5321 4.1.2 esmtp-param).
type Param struct {
	Key   string // upper case
	Value string
	Set   bool // whether "=value" was present
}

// Params is the list of parameters of a command, in order.
type Params []Param

// Get returns the parameter named key (upper case) and whether it was present.
func (ps Params) Get(key string) (Param, bool) {
	for _, p := range ps {
		if p.Key == key {
			return p, true
		}
	}
	return Param{}, false
}

// PathArg is the parsed argument of MAIL FROM: or RCPT TO:.
type PathArg struct {
	Addr   address.Addr
	Params Params
}

var errNoPrefix = errors.New("missing FROM: or TO:")

// ParsePathArg parses the argument of MAIL (prefix "FROM:") or RCPT
// (prefix "TO:"), case-insensitively, allowing the spaces after the colon
// that many clients send. utf8ok allows UTF-8 addresses (the SMTPUTF8
// parameter was given on MAIL, RFC 6531 3.4); for MAIL it is looked up in the
// parameters themselves before the path is parsed.
func ParsePathArg(arg, prefix string, utf8ok bool) (PathArg, *Error) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return PathArg{}, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax: %s<address>", prefix).Wrap(errNoPrefix)
	}
	rest := strings.TrimLeft(arg[len(prefix):], " ")
	// The parameters follow the path; find them first so that SMTPUTF8 on
	// MAIL allows UTF-8 in the path of the same command. The path ends at
	// its first ">" outside a quoted string: parameter values may contain
	// ">" too (esmtp-value, RFC 5321 4.1.2), so the last one is not it.
	end := address.PathEnd(rest)
	if end < 0 {
		return PathArg{}, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax: %s<address>", prefix)
	}
	params, perr := parseParams(rest[end+1:])
	if perr != nil {
		return PathArg{}, perr
	}
	if _, ok := params.Get("SMTPUTF8"); ok && prefix == "FROM:" {
		utf8ok = true
	}
	a, after, err := address.ParsePath(rest[:end+1], utf8ok)
	switch {
	case err == nil && after != "":
		err = address.ErrSyntax
	case err == nil:
		return PathArg{Addr: a, Params: params}, nil
	}
	enh := EBadDestSyntax
	if prefix == "FROM:" {
		enh = EBadSenderSyntax
	}
	if errors.Is(err, address.ErrNeedsUTF8) {
		return PathArg{}, Errorf(CodeMailboxNotAllowed, ENeedsSMTPUTF8, "Address needs SMTPUTF8").Wrap(err)
	}
	return PathArg{}, Errorf(CodeParamSyntax, enh, "Bad address syntax").Wrap(err)
}

// parseParams parses " KEY=VALUE KEY ..." (RFC 5321 4.1.2 Mail-parameters).
func parseParams(s string) (Params, *Error) {
	if s != "" && s[0] != ' ' {
		return nil, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax error in parameters")
	}
	var ps Params
	for _, f := range strings.Fields(s) {
		k, v, set := strings.Cut(f, "=")
		if k == "" || !isKeyword(k) || (set && !isParamValue(v)) {
			return nil, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax error in parameters")
		}
		ps = append(ps, Param{Key: strings.ToUpper(k), Value: v, Set: set})
	}
	return ps, nil
}

// isKeyword: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
func isKeyword(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '-') {
			return false
		}
	}
	return true
}

// isParamValue: esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 allowed by RFC 6531.
func isParamValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 33 || c == '=' || c == 127 {
			return false
		}
	}
	return true
}

// ParseSize parses the value of the SIZE parameter (RFC 1870): decimal digits.
// Values of more than 18 digits are refused: no limit is that large, and
// BDAT must not promise to read such a chunk.
func ParseSize(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	// size-value = 1*20DIGIT (RFC 1870 4): strconv alone would take a sign.
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// ParseBDAT parses the argument of BDAT (RFC 3030): chunk size and LAST.
func ParseBDAT(arg string) (size int64, last bool, err *Error) {
	f := strings.Fields(arg)
	if len(f) < 1 || len(f) > 2 {
		return 0, false, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax: BDAT <size> [LAST]")
	}
	size, ok := ParseSize(f[0])
	if !ok {
		return 0, false, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax: BDAT <size> [LAST]")
	}
	if len(f) == 2 {
		if !strings.EqualFold(f[1], "LAST") {
			return 0, false, Errorf(CodeParamSyntax, EInvalidArgs, "Syntax: BDAT <size> [LAST]")
		}
		last = true
	}
	return size, last, nil
}
