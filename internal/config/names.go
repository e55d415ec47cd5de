package config

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// maxDomainLen is the longest domain name in text form (RFC 1035 2.3.4 gives
// 255 octets on the wire, which is 253 characters written out).
const maxDomainLen = 253

// normalizeDomain checks that d is a host name and returns its canonical
// form: lower case, internationalised labels as A-labels. It converts the
// way internal/address does (IDNA lookup rules, only for non-ASCII input),
// so that a domain written here and one read off the wire compare equal.
func normalizeDomain(d string) (string, error) {
	if d == "" {
		return "", errors.New("empty domain name")
	}
	if strings.HasSuffix(d, ".") {
		return "", fmt.Errorf("domain name %q must not end with a dot", d)
	}
	if !isASCII(d) {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("invalid domain name %q: %v", d, err)
		}
		d = a
	}
	d = strings.ToLower(d)
	if err := checkHostname(d); err != nil {
		return "", err
	}
	return d, nil
}

// checkHostname checks an ASCII name against RFC 1123 2.1: labels of
// letters, digits and hyphens, 1 to 63 long, not starting or ending with a
// hyphen, at most 253 characters in all.
func checkHostname(d string) error {
	if len(d) > maxDomainLen {
		return fmt.Errorf("domain name %q is longer than %d characters", d, maxDomainLen)
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" {
			return fmt.Errorf("invalid domain name %q: empty label", d)
		}
		if len(l) > 63 {
			return fmt.Errorf("invalid domain name %q: label longer than 63 characters", d)
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("invalid domain name %q: label starts or ends with a hyphen", d)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid domain name %q: %q is not allowed (letters, digits, hyphens and dots only)", d, c)
			}
		}
	}
	// An all-numeric last label makes the name read as an IP address
	// (RFC 3696 2); an address literal is not a domain.
	if isDigits(labels[len(labels)-1]) {
		return fmt.Errorf("invalid domain name %q: looks like an IP address, not a domain", d)
	}
	return nil
}

// maxLocalLen is the longest local part (RFC 5321 4.5.3.1.1).
const maxLocalLen = 64

// maxAddressLen is the longest address: a path is at most 256 octets
// including its angle brackets (RFC 5321 4.5.3.1.3).
const maxAddressLen = 254

// normalizeAddress checks an address written in the configuration and
// returns it with its domain in canonical form. It is stricter than SMTP:
// quoted local parts are refused, because a configuration never needs one
// and their escaping invites mistakes.
func normalizeAddress(a string) (string, error) {
	local, domain, ok := strings.Cut(a, "@")
	if !ok {
		return "", fmt.Errorf("invalid address %q: no @", a)
	}
	if strings.Contains(domain, "@") {
		return "", fmt.Errorf("invalid address %q: more than one @", a)
	}
	if err := checkLocal(local); err != nil {
		return "", fmt.Errorf("invalid address %q: %v", a, err)
	}
	d, err := normalizeDomain(domain)
	if err != nil {
		return "", fmt.Errorf("invalid address %q: %v", a, err)
	}
	out := local + "@" + d
	if len(out) > maxAddressLen {
		return "", fmt.Errorf("invalid address %q: longer than %d octets", a, maxAddressLen)
	}
	return out, nil
}

// checkLocal accepts an RFC 5322 dot-atom local part, with UTF-8 allowed as
// RFC 6531 3.3 allows it: atext characters, dots only between them.
func checkLocal(l string) error {
	switch {
	case l == "":
		return errors.New("empty local part")
	case len(l) > maxLocalLen:
		return fmt.Errorf("local part longer than %d octets", maxLocalLen)
	case !utf8.ValidString(l):
		return errors.New("local part is not valid UTF-8")
	case l[0] == '.' || l[len(l)-1] == '.' || strings.Contains(l, ".."):
		return errors.New("local part has a misplaced dot")
	}
	for _, r := range l {
		if r < utf8.RuneSelf && r != '.' && !isAtext(byte(r)) {
			return fmt.Errorf("character %q is not allowed in a local part", r)
		}
		if r >= utf8.RuneSelf && (r == utf8.RuneError || r < 0xA0 || r == 0x2028 || r == 0x2029) {
			// C1 controls and line separators have no business in a
			// mailbox name.
			return fmt.Errorf("character %q is not allowed in a local part", r)
		}
	}
	return nil
}

// isAtext reports whether c is an RFC 5322 3.2.3 atext character.
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// checkMailbox checks a user name, which becomes a directory name under
// data_dir/mail/<domain>/: so it must be harmless in a path, which is
// stricter than what SMTP allows.
func checkMailbox(u, delim string) error {
	switch {
	case u == "":
		return errors.New("empty user name")
	case len(u) > maxLocalLen:
		return fmt.Errorf("user name %q is longer than %d characters", u, maxLocalLen)
	case u[0] == '.':
		return fmt.Errorf("user name %q must not start with a dot", u)
	case strings.Contains(u, ".."):
		return fmt.Errorf("user name %q must not contain \"..\"", u)
	case u[len(u)-1] == '.':
		// Not a path hazard, but "alice." is no valid local part.
		return fmt.Errorf("user name %q must not end with a dot", u)
	case delim != "" && strings.Contains(u, delim):
		return fmt.Errorf("user name %q contains the recipient delimiter %q", u, delim)
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("user name %q: %q is not allowed (use a-z, 0-9, '.', '_', '-')", u, c)
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
