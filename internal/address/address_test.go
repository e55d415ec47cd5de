package address

import (
	"errors"
	"strings"
	"testing"
)

// domainOfLen returns a syntactically valid ASCII domain of exactly n
// octets: 63-letter labels joined by dots, the last one shorter.
func domainOfLen(tb testing.TB, n int) string {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("domainOfLen(%d)", n)
	}
	var b strings.Builder
	for b.Len() < n {
		left := n - b.Len()
		if b.Len() > 0 {
			b.WriteByte('.')
			left--
		}
		if left == 0 {
			// A dot would end the name; shorten the previous label instead.
			s := b.String()
			return s[:len(s)-2] + ".c"
		}
		b.WriteString(strings.Repeat("d", min(left, 63)))
	}
	if got := b.String(); len(got) != n {
		tb.Fatalf("domainOfLen(%d) built %d octets", n, len(got))
	}
	return b.String()
}

func TestDomainOfLen(t *testing.T) {
	for _, n := range []int{1, 63, 64, 65, 127, 128, 189, 190, 255, 256} {
		d := domainOfLen(t, n)
		if len(d) != n {
			t.Errorf("domainOfLen(%d) has %d octets", n, len(d))
		}
		if err := checkDomain(d, false); err != nil && n <= MaxDomainLen {
			t.Errorf("domainOfLen(%d) = %q is not a valid domain: %v", n, d, err)
		}
	}
}

func TestParsePath(t *testing.T) {
	local64 := strings.Repeat("l", 64)
	// inner = local64 "@" domain; the path adds "<" and ">".
	// RFC 5321 4.5.3.1.3: 256 octets including the brackets.
	pathMax := "<" + local64 + "@" + domainOfLen(t, 189) + ">"
	pathOver := "<" + local64 + "@" + domainOfLen(t, 190) + ">"
	if len(pathMax) != MaxPathLen || len(pathOver) != MaxPathLen+1 {
		t.Fatalf("test setup: path lengths %d, %d", len(pathMax), len(pathOver))
	}

	tests := []struct {
		name   string
		in     string
		utf8ok bool
		want   Addr
		rest   string
		err    error
	}{
		{name: "null", in: "<>", want: Addr{}},
		{name: "null with params", in: "<> SIZE=10", want: Addr{}, rest: " SIZE=10"},
		{name: "plain", in: "<alice@example.com>", want: Addr{"alice", "example.com"}},
		{name: "domain lower-cased, local kept", in: "<Alice@EXAMPLE.Com>", want: Addr{"Alice", "example.com"}},
		{name: "single label domain", in: "<alice@localhost>", want: Addr{"alice", "localhost"}},
		{name: "dotted local", in: "<alice.smith+tag@example.com>", want: Addr{"alice.smith+tag", "example.com"}},
		{name: "all atext", in: "<!#$%&'*+-/=?^_`{|}~@example.com>", want: Addr{"!#$%&'*+-/=?^_`{|}~", "example.com"}},
		{name: "trailing junk is returned", in: "<alice@example.com>junk", want: Addr{"alice", "example.com"}, rest: "junk"},
		{name: "second path is rest", in: "<alice@example.com> <bob@example.org>", want: Addr{"alice", "example.com"}, rest: " <bob@example.org>"},

		// Source routes (RFC 5321 4.1.1.3, Appendix C): accepted, ignored.
		{name: "route one hop", in: "<@relay.example:alice@example.com>", want: Addr{"alice", "example.com"}},
		{name: "route two hops", in: "<@a.example,@b.example:alice@example.com>", want: Addr{"alice", "example.com"}},
		{name: "route hop without at", in: "<@a.example,b.example:alice@example.com>", err: ErrSyntax},
		{name: "route empty hop", in: "<@:alice@example.com>", err: ErrSyntax},
		{name: "route bad domain", in: "<@a..example:alice@example.com>", err: ErrSyntax},
		{name: "route without colon", in: "<@a.example alice@example.com>", err: ErrSyntax},
		{name: "route only", in: "<@example.com>", err: ErrSyntax},
		{name: "route then null", in: "<@a.example:>", err: ErrSyntax},

		// Quoted local parts.
		{name: "quoted space", in: `<"alice smith"@example.com>`, want: Addr{"alice smith", "example.com"}},
		{name: "quoted needless", in: `<"alice"@example.com>`, want: Addr{"alice", "example.com"}},
		{name: "quoted escaped quote", in: `<"a\"b"@example.com>`, want: Addr{`a"b`, "example.com"}},
		{name: "quoted escaped backslash", in: `<"a\\b"@example.com>`, want: Addr{`a\b`, "example.com"}},
		{name: "quoted escaped letter", in: `<"a\bc"@example.com>`, want: Addr{"abc", "example.com"}},
		{name: "quoted at sign", in: `<"a@b"@example.com>`, want: Addr{"a@b", "example.com"}},
		{name: "quoted closing bracket", in: `<"a>b"@example.com> X`, want: Addr{"a>b", "example.com"}, rest: " X"},
		{name: "quoted dots", in: `<"a..b."@example.com>`, want: Addr{"a..b.", "example.com"}},
		{name: "quoted empty", in: `<""@example.com>`, err: ErrEmptyLocal},
		{name: "quoted unterminated", in: `<"alice@example.com>`, err: ErrSyntax},
		{name: "quoted stray quote", in: `<"a"b"@example.com>`, err: ErrSyntax},
		{name: "quoted then text", in: `<"a"b@example.com>`, err: ErrSyntax},
		{name: "quoted trailing backslash", in: `<"a\"@example.com>`, err: ErrSyntax},
		{name: "quoted tab", in: "<\"a\tb\"@example.com>", err: ErrSyntax},
		{name: "quoted DEL", in: "<\"a\x7fb\"@example.com>", err: ErrSyntax},
		{name: "quoted pair non-ascii", in: "<\"a\\\u00e9\"@example.com>", utf8ok: true, err: ErrSyntax},

		// Dot-string errors.
		{name: "double dot", in: "<a..b@example.com>", err: ErrSyntax},
		{name: "leading dot", in: "<.a@example.com>", err: ErrSyntax},
		{name: "trailing dot", in: "<a.@example.com>", err: ErrSyntax},
		{name: "space in local", in: "<a b@example.com>", err: ErrSyntax},
		{name: "no at", in: "<alice>", err: ErrSyntax},
		{name: "empty local", in: "<@>", err: ErrSyntax},

		// Domains.
		{name: "empty domain", in: "<alice@>", err: ErrBadDomain},
		{name: "leading hyphen", in: "<alice@-a.example>", err: ErrBadDomain},
		{name: "trailing hyphen", in: "<alice@a-.example>", err: ErrBadDomain},
		{name: "underscore", in: "<alice@a_b.example>", err: ErrBadDomain},
		{name: "trailing dot domain", in: "<alice@example.com.>", err: ErrBadDomain},
		{name: "label 64", in: "<alice@" + strings.Repeat("x", 64) + ".example>", err: ErrBadDomain},
		{name: "label 63", in: "<alice@" + strings.Repeat("x", 63) + ".example>", want: Addr{"alice", strings.Repeat("x", 63) + ".example"}},

		// Address literals (RFC 5321 4.1.3).
		{name: "ipv4 literal", in: "<alice@[192.0.2.1]>", want: Addr{"alice", "[192.0.2.1]"}},
		{name: "ipv6 literal", in: "<alice@[IPv6:2001:DB8::1]>", want: Addr{"alice", "[IPv6:2001:db8::1]"}},
		{name: "ipv6 literal full", in: "<alice@[IPv6:2001:db8:0:0:0:0:0:1]>", want: Addr{"alice", "[IPv6:2001:db8::1]"}},
		{name: "ipv6 literal v4 tail", in: "<alice@[IPv6:::ffff:192.0.2.1]>", want: Addr{"alice", "[IPv6:::ffff:192.0.2.1]"}},
		{name: "ipv6 tag any case", in: "<alice@[ipv6:::1]>", want: Addr{"alice", "[IPv6:::1]"}},
		{name: "ipv6 zone", in: "<alice@[IPv6:fe80::1%eth0]>", err: ErrBadDomain},
		{name: "ipv6 tag with v4", in: "<alice@[IPv6:192.0.2.1]>", err: ErrBadDomain},
		{name: "ipv6 without tag", in: "<alice@[::1]>", err: ErrBadDomain},
		{name: "ipv4 out of range", in: "<alice@[192.0.2.256]>", err: ErrBadDomain},
		{name: "ipv4 short", in: "<alice@[192.0.2]>", err: ErrBadDomain},
		{name: "literal empty", in: "<alice@[]>", err: ErrBadDomain},
		{name: "literal unclosed", in: "<alice@[192.0.2.1>", err: ErrBadDomain},
		{name: "general literal", in: "<alice@[x400:c=fr]>", err: ErrBadDomain},

		// Lengths (RFC 5321 4.5.3.1).
		{name: "local 64", in: "<" + local64 + "@example.com>", want: Addr{local64, "example.com"}},
		{name: "local 65", in: "<" + local64 + "l@example.com>", err: ErrTooLong},
		{name: "quoted local 64", in: `<"` + strings.Repeat("q", 31) + " " + strings.Repeat("q", 30) + `"@example.com>`, want: Addr{strings.Repeat("q", 31) + " " + strings.Repeat("q", 30), "example.com"}},
		{name: "quoted local 65", in: `<"` + strings.Repeat("q", 31) + " " + strings.Repeat("q", 31) + `"@example.com>`, err: ErrTooLong},
		{name: "path 256", in: pathMax, want: Addr{local64, domainOfLen(t, 189)}},
		{name: "path 257", in: pathOver, err: ErrTooLong},

		// UTF-8 (RFC 6531 3.3, 3.4).
		{name: "utf8 local refused", in: "<jörg@example.com>", err: ErrNeedsUTF8},
		{name: "utf8 local allowed", in: "<jörg@example.com>", utf8ok: true, want: Addr{"jörg", "example.com"}},
		{name: "utf8 quoted local refused", in: `<"jörg j"@example.com>`, err: ErrNeedsUTF8},
		{name: "utf8 quoted local allowed", in: `<"jörg j"@example.com>`, utf8ok: true, want: Addr{"jörg j", "example.com"}},
		{name: "utf8 domain refused", in: "<alice@bücher.example>", err: ErrNeedsUTF8},
		{name: "idn domain to A-label", in: "<alice@Bücher.Example>", utf8ok: true, want: Addr{"alice", "xn--bcher-kva.example"}},
		{name: "A-label without utf8", in: "<alice@xn--bcher-kva.example>", want: Addr{"alice", "xn--bcher-kva.example"}},
		{name: "utf8 route refused", in: "<@bücher.example:alice@example.com>", err: ErrNeedsUTF8},
		{name: "invalid utf8", in: "<j\xffrg@example.com>", utf8ok: true, err: ErrSyntax},
		{name: "invalid utf8 in route", in: "<@a\xff.example:alice@example.com>", utf8ok: true, err: ErrSyntax},

		// Brackets.
		{name: "no brackets", in: "alice@example.com", err: ErrNoBrackets},
		{name: "empty", in: "", err: ErrNoBrackets},
		{name: "space before bracket", in: " <alice@example.com>", err: ErrNoBrackets},
		{name: "unclosed", in: "<alice@example.com", err: ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rest, err := ParsePath(tt.in, tt.utf8ok)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParsePath(%q, %v) error = %v, want %v (addr %#v)", tt.in, tt.utf8ok, err, tt.err, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePath(%q, %v) error = %v", tt.in, tt.utf8ok, err)
			}
			if got != tt.want || rest != tt.rest {
				t.Fatalf("ParsePath(%q, %v) = %#v, %q; want %#v, %q", tt.in, tt.utf8ok, got, rest, tt.want, tt.rest)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Addr
		err  error
	}{
		{in: "alice@example.com", want: Addr{"alice", "example.com"}},
		{in: "Alice@Bücher.Example", want: Addr{"Alice", "xn--bcher-kva.example"}},
		{in: "jörg@example.com", want: Addr{"jörg", "example.com"}},
		{in: `"a b"@example.com`, want: Addr{"a b", "example.com"}},
		{in: "postmaster@[192.0.2.7]", want: Addr{"postmaster", "[192.0.2.7]"}},
		{in: "", err: ErrNullAddress},
		{in: "<alice@example.com>", err: ErrSyntax},
		{in: "alice", err: ErrSyntax},
		{in: "@example.com", err: ErrEmptyLocal},
		{in: "alice@example.com ", err: ErrBadDomain},
		{in: "alice@", err: ErrBadDomain},
		{in: "a..b@example.com", err: ErrSyntax},
		{in: strings.Repeat("x", 65) + "@example.com", err: ErrTooLong},
		{in: "alice@" + domainOfLen(t, 256), err: ErrBadDomain},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Parse(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
}

func TestAddrString(t *testing.T) {
	tests := []struct {
		a    Addr
		want string
	}{
		{Addr{}, ""},
		{Addr{"alice", "example.com"}, "alice@example.com"},
		{Addr{"alice.smith", "example.com"}, "alice.smith@example.com"},
		{Addr{"jörg", "example.com"}, "jörg@example.com"},
		{Addr{"a b", "example.com"}, `"a b"@example.com`},
		{Addr{`a"b`, "example.com"}, `"a\"b"@example.com`},
		{Addr{`a\b`, "example.com"}, `"a\\b"@example.com`},
		{Addr{"a@b", "example.com"}, `"a@b"@example.com`},
		{Addr{".a", "example.com"}, `".a"@example.com`},
		{Addr{"a.", "example.com"}, `"a."@example.com`},
		{Addr{"a..b", "example.com"}, `"a..b"@example.com`},
		{Addr{"a(b)", "example.com"}, `"a(b)"@example.com`},
		{Addr{"jörg j", "example.com"}, `"jörg j"@example.com`},
		{Addr{"alice", "[IPv6:::1]"}, "alice@[IPv6:::1]"},
	}
	for _, tt := range tests {
		got := tt.a.String()
		if got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.a, got, tt.want)
		}
		if tt.a.IsNull() {
			p, rest, err := ParsePath("<"+got+">", false)
			if err != nil || !p.IsNull() || rest != "" {
				t.Errorf("null path does not round-trip: %#v, %q, %v", p, rest, err)
			}
			continue
		}
		back, err := Parse(got)
		if err != nil || back != tt.a {
			t.Errorf("Parse(%q) = %#v, %v; want %#v", got, back, err, tt.a)
		}
		back, rest, err := ParsePath("<"+got+">", !tt.a.IsASCII())
		if err != nil || back != tt.a || rest != "" {
			t.Errorf("ParsePath(<%s>) = %#v, %q, %v; want %#v", got, back, rest, err, tt.a)
		}
	}
}

func TestAddrKeyAndASCII(t *testing.T) {
	a := Addr{"Alice.Smith", "example.com"}
	if got := a.Key(); got != "alice.smith@example.com" {
		t.Errorf("Key() = %q", got)
	}
	if !a.IsASCII() || (Addr{"jörg", "example.com"}).IsASCII() {
		t.Errorf("IsASCII wrong")
	}
	if (Addr{Domain: "example.com"}).IsNull() || !(Addr{}).IsNull() {
		t.Errorf("IsNull wrong")
	}
}

func TestNormalizeDomain(t *testing.T) {
	// 21 and 25 CJK characters: 63 and 75 octets of UTF-8, but A-labels
	// of 30 and 34 octets, which are what the DNS limits apply to.
	cjk21 := strings.Repeat("例", 21)
	cjk25 := strings.Repeat("例", 25)
	tests := []struct {
		in   string
		want string
		err  error
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM", want: "example.com"},
		{in: "localhost", want: "localhost"},
		{in: "a-b.example", want: "a-b.example"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "BÜCHER.Example", want: "xn--bcher-kva.example"},
		{in: "münchen.de", want: "xn--mnchen-3ya.de"},
		{in: "例え.jp", want: "xn--r8jz45g.jp"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "XN--BCHER-KVA.example", want: "xn--bcher-kva.example"},
		// UTS 46 mapping: full-width letters and the ideographic full stop.
		{in: "ｅｘａｍｐｌｅ.com", want: "example.com"},
		{in: "bücher。example", want: "xn--bcher-kva.example"},
		{in: cjk21 + ".jp", want: "xn--fsqaaaaaaaaaaaaaaaaaaaa.jp"},
		{in: cjk25 + ".jp", want: "xn--fsqaaaaaaaaaaaaaaaaaaaaaaaa.jp"},
		{in: strings.Repeat("x", 63) + ".example", want: strings.Repeat("x", 63) + ".example"},
		{in: domainOfLen(t, 255), want: domainOfLen(t, 255)},

		{in: "", err: ErrBadDomain},
		{in: "example.com.", err: ErrBadDomain},
		{in: ".example.com", err: ErrBadDomain},
		{in: "a..example", err: ErrBadDomain},
		{in: "-a.example", err: ErrBadDomain},
		{in: "a-.example", err: ErrBadDomain},
		{in: "a_b.example", err: ErrBadDomain},
		{in: "a b.example", err: ErrBadDomain},
		{in: "[192.0.2.1]", err: ErrBadDomain},
		{in: strings.Repeat("x", 64) + ".example", err: ErrBadDomain},
		{in: domainOfLen(t, 256), err: ErrBadDomain},
		{in: "\xff.example", err: ErrBadDomain},
		{in: "b\xc3.example", err: ErrBadDomain},
		{in: "a\u200db.example", err: ErrBadDomain}, // ZWJ outside its context
		{in: "a\u00a0b.example", err: ErrBadDomain}, // maps to a space
		// The A-label of 64 "ü" is longer than 63 octets.
		{in: strings.Repeat("ü", 64) + ".example", err: ErrBadDomain},
	}
	for _, tt := range tests {
		got, err := NormalizeDomain(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("NormalizeDomain(%q) = %q, %v; want error %v", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		// Canonical forms are fixed points.
		if again, err := NormalizeDomain(got); err != nil || again != got {
			t.Errorf("NormalizeDomain(%q) = %q, %v; not a fixed point", got, again, err)
		}
	}
}
