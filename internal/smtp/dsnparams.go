package smtp

import (
	"strings"
)

// DecodeXtext decodes RFC 3461 4 xtext: printable ASCII from "!" to "~"
// except "+" and "=", with "+XX" (two upper-case hex digits) for any other
// octet. It reports false for malformed input.
func DecodeXtext(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) || !isUpperHex(s[i+1]) || !isUpperHex(s[i+2]) {
				return "", false
			}
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c < '!' || c > '~' || c == '=':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// EncodeXtext encodes s as RFC 3461 xtext.
func EncodeXtext(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			b.WriteByte('+')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isUpperHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'A' && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

// ParseNotify parses the RFC 3461 4.1 NOTIFY value: "NEVER", or a comma
// list of SUCCESS, FAILURE and DELAY. It returns the canonical upper-case
// form.
func ParseNotify(v string) (string, bool) {
	v = strings.ToUpper(v)
	if v == "NEVER" {
		return v, true
	}
	seen := map[string]bool{}
	for _, k := range strings.Split(v, ",") {
		if (k != "SUCCESS" && k != "FAILURE" && k != "DELAY") || seen[k] {
			return "", false
		}
		seen[k] = true
	}
	return v, true
}

// ParseORCPT parses the RFC 3461 4.2 ORCPT value "addr-type;xtext" and
// returns it decoded as "addr-type;address".
func ParseORCPT(v string) (string, bool) {
	typ, x, ok := strings.Cut(v, ";")
	if !ok || typ == "" || !isKeyword(typ) {
		return "", false
	}
	addr, ok := DecodeXtext(x)
	if !ok || addr == "" || len(addr) > 500 {
		return "", false
	}
	return strings.ToLower(typ) + ";" + addr, true
}
