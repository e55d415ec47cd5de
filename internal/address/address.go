// Package address owns the parsed mail address types: Addr (a mailbox,
// local-part@domain) and the SMTP path syntax of RFC 5321 4.1.2, with the
// SMTPUTF8 extension of RFC 6531 and IDNA normalisation of domains.
package address

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Addr is a mailbox address. The zero Addr is the null reverse-path "<>".
// Local is kept as sent (case preserved, unquoted); Domain is the
// canonical lower-case ASCII form (A-labels), or an address literal in
// brackets.
type Addr struct {
	Local  string
	Domain string
}

// Limits from RFC 5321 4.5.3.1.
const (
	MaxLocalLen  = 64
	MaxDomainLen = 255
	MaxPathLen   = 256
)

// Errors returned by the parsers; callers map them to replies.
var (
	ErrSyntax      = errors.New("address syntax error")
	ErrNeedsUTF8   = errors.New("address needs SMTPUTF8")
	ErrTooLong     = errors.New("address too long")
	ErrNoBrackets  = errors.New("path must be enclosed in <>")
	ErrBadDomain   = errors.New("invalid domain")
	ErrEmptyLocal  = errors.New("empty local part")
	ErrNullAddress = errors.New("null address not allowed here")
)

// IsNull reports whether a is the null path "<>".
func (a Addr) IsNull() bool { return a.Local == "" && a.Domain == "" }

// String returns local@domain, quoting the local part when its characters
// need it, or "" for the null path.
func (a Addr) String() string {
	if a.IsNull() {
		return ""
	}
	return quoteLocal(a.Local) + "@" + a.Domain
}

// Key returns the form used to look an address up: local part lower-cased.
// Local parts are case-sensitive by RFC 5321 2.4, but every mail system an
// administrator meets folds them, and so do we.
func (a Addr) Key() string {
	return strings.ToLower(a.Local) + "@" + a.Domain
}

// IsASCII reports whether the address can travel without SMTPUTF8.
func (a Addr) IsASCII() bool { return isASCII(a.Local) && isASCII(a.Domain) }

// ParsePath parses an RFC 5321 Reverse-path or Forward-path at the start of
// s ("<>" or "<[@route,...:]local@domain>") and returns the address and the
// rest of s after the closing ">". Source routes are accepted and ignored
// (RFC 5321 4.1.1.3 and Appendix C). With utf8 false, non-ASCII characters are
// refused with ErrNeedsUTF8 (RFC 6531 3.4).
func ParsePath(s string, utf8ok bool) (Addr, string, error) {
	if !strings.HasPrefix(s, "<") {
		return Addr{}, s, ErrNoBrackets
	}
	end := PathEnd(s)
	if end < 0 {
		return Addr{}, s, ErrSyntax
	}
	inner, rest := s[1:end], s[end+1:]
	// RFC 5321 4.5.3.1.3: the limit counts the "<" and ">" too.
	if end+1 > MaxPathLen {
		return Addr{}, rest, ErrTooLong
	}
	if inner == "" {
		return Addr{}, rest, nil
	}
	if !utf8.ValidString(inner) {
		return Addr{}, rest, ErrSyntax
	}
	if inner[0] == '@' {
		// A-d-l ":" Mailbox; the route is obsolete and ignored.
		colon := strings.IndexByte(inner, ':')
		if colon < 0 {
			return Addr{}, rest, ErrSyntax
		}
		route := inner[:colon]
		if !utf8ok && !isASCII(route) {
			return Addr{}, rest, ErrNeedsUTF8
		}
		for _, hop := range strings.Split(route, ",") {
			if !strings.HasPrefix(hop, "@") || checkDomain(hop[1:], utf8ok) != nil {
				return Addr{}, rest, ErrSyntax
			}
		}
		inner = inner[colon+1:]
	}
	a, err := parseMailbox(inner, utf8ok)
	return a, rest, err
}

// Parse parses a bare "local@domain" mailbox (no brackets), as written in a
// configuration file. UTF-8 is allowed.
func Parse(s string) (Addr, error) {
	if s == "" {
		return Addr{}, ErrNullAddress
	}
	return parseMailbox(s, true)
}

// PathEnd returns the index of the ">" that closes the path starting with
// "<" at the beginning of s, skipping quoted strings and their quoted
// pairs, or -1. What follows it is the rest of the command (its
// parameters, whose values may contain ">" too).
func PathEnd(s string) int {
	if !strings.HasPrefix(s, "<") {
		return -1
	}
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '>':
			return i
		}
	}
	return -1
}

func parseMailbox(s string, utf8ok bool) (Addr, error) {
	if !utf8.ValidString(s) {
		return Addr{}, ErrSyntax
	}
	if !utf8ok && !isASCII(s) {
		return Addr{}, ErrNeedsUTF8
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return Addr{}, ErrSyntax
	}
	local, err := parseLocal(s[:at], utf8ok)
	if err != nil {
		return Addr{}, err
	}
	domain := s[at+1:]
	if strings.HasPrefix(domain, "[") {
		lit, err := parseAddressLiteral(domain)
		if err != nil {
			return Addr{}, err
		}
		return Addr{Local: local, Domain: lit}, nil
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Addr{}, err
	}
	return Addr{Local: local, Domain: d}, nil
}

// parseLocal accepts a Dot-string or a Quoted-string and returns the local
// part unquoted.
func parseLocal(s string, utf8ok bool) (string, error) {
	if s == "" {
		return "", ErrEmptyLocal
	}
	// RFC 5321 4.5.3.1.1: 64 octets of local-part as sent, quotes and
	// backslashes included. Addr.String never quotes more than the sender
	// did, so what is accepted here also re-parses.
	if len(s) > MaxLocalLen {
		return "", ErrTooLong
	}
	if s[0] == '"' {
		if len(s) < 2 || s[len(s)-1] != '"' {
			return "", ErrSyntax
		}
		var b strings.Builder
		q := s[1 : len(s)-1]
		for i := 0; i < len(q); i++ {
			c := q[i]
			switch {
			case c == '\\':
				// quoted-pairSMTP = %d92 %d32-126
				if i+1 >= len(q) || q[i+1] < 32 || q[i+1] > 126 {
					return "", ErrSyntax
				}
				i++
				b.WriteByte(q[i])
			case c == '"':
				return "", ErrSyntax
			case c >= 32 && c <= 126, c >= 0x80 && utf8ok:
				b.WriteByte(c)
			default:
				return "", ErrSyntax
			}
		}
		if b.Len() == 0 {
			return "", ErrEmptyLocal
		}
		return b.String(), nil
	}
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return "", ErrSyntax
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) && !(atom[i] >= 0x80 && utf8ok) {
				return "", ErrSyntax
			}
		}
	}
	return s, nil
}

// isAtext reports RFC 5322 atext for ASCII bytes.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func quoteLocal(l string) string {
	needs := l == "" || strings.HasPrefix(l, ".") || strings.HasSuffix(l, ".") || strings.Contains(l, "..")
	for i := 0; i < len(l) && !needs; i++ {
		if l[i] < 0x80 && !isAtext(l[i]) && l[i] != '.' {
			needs = true
		}
	}
	if !needs {
		return l
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(l); i++ {
		if l[i] == '"' || l[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(l[i])
	}
	b.WriteByte('"')
	return b.String()
}

func parseAddressLiteral(s string) (string, error) {
	if len(s) < 3 || s[len(s)-1] != ']' {
		return "", ErrBadDomain
	}
	inner := s[1 : len(s)-1]
	// The tag is an ABNF literal string, so case-insensitive (RFC 5234 2.3).
	if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
		ip, err := netip.ParseAddr(inner[5:])
		// RFC 5321 4.1.3 IPv6-addr has no zone ("%eth0"); netip accepts one.
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", ErrBadDomain
		}
		return "[IPv6:" + ip.String() + "]", nil
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return "", ErrBadDomain
	}
	return "[" + ip.String() + "]", nil
}

// NormalizeDomain validates a domain name and returns its canonical form:
// lower case, A-labels for internationalised labels, no trailing dot.
func NormalizeDomain(d string) (string, error) {
	// idna would turn invalid UTF-8 into U+FFFD and encode that.
	if !utf8.ValidString(d) {
		return "", ErrBadDomain
	}
	if err := checkDomain(d, true); err != nil {
		return "", err
	}
	if !isASCII(d) {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", ErrBadDomain
		}
		d = a
	}
	d = strings.ToLower(d)
	if err := checkDomain(d, false); err != nil {
		return "", err
	}
	return d, nil
}

// checkDomain checks RFC 5321 Domain syntax: labels of letters, digits and
// hyphens, not starting or ending with a hyphen (and UTF-8 when allowed).
// The length limits are the DNS ones (RFC 1035 2.3.4) and apply to the
// ASCII form that goes on the wire: a U-label of more than 63 octets of
// UTF-8 can have an A-label that fits, so non-ASCII names are measured after
// conversion, by NormalizeDomain.
func checkDomain(d string, utf8ok bool) error {
	measure := !utf8ok || isASCII(d)
	if d == "" || (measure && len(d) > MaxDomainLen) {
		return ErrBadDomain
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || (measure && len(label) > 63) || label[0] == '-' || label[len(label)-1] == '-' {
			return ErrBadDomain
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || (c >= 0x80 && utf8ok)
			if !ok {
				return ErrBadDomain
			}
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
