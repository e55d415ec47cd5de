package smtp

import (
	"errors"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/address"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line string
		want Command
	}{
		{"QUIT", Command{"QUIT", ""}},
		{"quit", Command{"QUIT", ""}},
		{"QuIt", Command{"QUIT", ""}},
		{"ehlo client.example", Command{"EHLO", "client.example"}},
		{"Mail FROM:<alice@example.com> SIZE=10", Command{"MAIL", "FROM:<alice@example.com> SIZE=10"}},
		{"rcpt to:<bob@example.org>", Command{"RCPT", "to:<bob@example.org>"}},
		{"NOOP   spaced out \t ", Command{"NOOP", "spaced out"}},
		{"RSET ", Command{"RSET", ""}},
		{"BDAT 100 last", Command{"BDAT", "100 last"}},
		{"", Command{"", ""}},
		{" HELO x", Command{"", "HELO x"}},
	}
	for _, tt := range tests {
		if got := ParseCommand(tt.line); got != tt.want {
			t.Errorf("ParseCommand(%q) = %#v, want %#v", tt.line, got, tt.want)
		}
	}
}

func TestParsePathArg(t *testing.T) {
	type want struct {
		addr   address.Addr
		params Params
		code   int    // 0: success
		enh    string // enhanced code on failure
		cause  error  // wrapped cause on failure, when it matters
	}
	alice := address.Addr{Local: "alice", Domain: "example.com"}
	tests := []struct {
		name   string
		arg    string
		prefix string
		utf8ok bool
		want   want
	}{
		{name: "mail plain", arg: "FROM:<alice@example.com>", prefix: "FROM:", want: want{addr: alice}},
		{name: "mail lower-case prefix", arg: "from:<alice@example.com>", prefix: "FROM:", want: want{addr: alice}},
		{name: "mail mixed-case prefix", arg: "FrOm:<alice@example.com>", prefix: "FROM:", want: want{addr: alice}},
		{name: "mail null", arg: "FROM:<>", prefix: "FROM:", want: want{}},
		{name: "rcpt plain", arg: "TO:<alice@example.com>", prefix: "TO:", want: want{addr: alice}},
		{name: "space after colon", arg: "FROM: <alice@example.com>", prefix: "FROM:", want: want{addr: alice}},
		{name: "spaces after colon", arg: "TO:   <alice@example.com>", prefix: "TO:", want: want{addr: alice}},
		{name: "source route", arg: "TO:<@relay.example:alice@example.com>", prefix: "TO:", want: want{addr: alice}},
		{name: "params", arg: "FROM:<alice@example.com> SIZE=1000 BODY=8BITMIME", prefix: "FROM:", want: want{
			addr:   alice,
			params: Params{{Key: "SIZE", Value: "1000", Set: true}, {Key: "BODY", Value: "8BITMIME", Set: true}},
		}},
		{name: "param keys upper-cased, values kept", arg: "FROM:<alice@example.com> body=8bitmime smtputf8", prefix: "FROM:", want: want{
			addr:   alice,
			params: Params{{Key: "BODY", Value: "8bitmime", Set: true}, {Key: "SMTPUTF8"}},
		}},
		{name: "params after several spaces", arg: "FROM:<alice@example.com>   SIZE=1", prefix: "FROM:", want: want{
			addr: alice, params: Params{{Key: "SIZE", Value: "1", Set: true}},
		}},
		{name: "param value with >", arg: "FROM:<alice@example.com> ENVID=a>b", prefix: "FROM:", want: want{
			addr: alice, params: Params{{Key: "ENVID", Value: "a>b", Set: true}},
		}},
		{name: "param value ends with >", arg: "TO:<alice@example.com> ORCPT=rfc822;x> NOTIFY=NEVER", prefix: "TO:", want: want{
			addr: alice, params: Params{{Key: "ORCPT", Value: "rfc822;x>", Set: true}, {Key: "NOTIFY", Value: "NEVER", Set: true}},
		}},
		{name: "quoted > in path", arg: `TO:<"a>b"@example.com> X-Y=1`, prefix: "TO:", want: want{
			addr: address.Addr{Local: "a>b", Domain: "example.com"}, params: Params{{Key: "X-Y", Value: "1", Set: true}},
		}},
		{name: "keyword with digits and hyphen", arg: "FROM:<> X-1=v", prefix: "FROM:", want: want{
			params: Params{{Key: "X-1", Value: "v", Set: true}},
		}},

		// SMTPUTF8 (RFC 6531 3.4).
		{name: "utf8 mail without param", arg: "FROM:<jörg@example.com>", prefix: "FROM:", want: want{
			code: CodeMailboxNotAllowed, enh: ENeedsSMTPUTF8, cause: address.ErrNeedsUTF8,
		}},
		{name: "utf8 mail with param", arg: "FROM:<jörg@example.com> SMTPUTF8", prefix: "FROM:", want: want{
			addr: address.Addr{Local: "jörg", Domain: "example.com"}, params: Params{{Key: "SMTPUTF8"}},
		}},
		{name: "utf8 mail with lower-case param", arg: "FROM:<alice@bücher.example> smtputf8", prefix: "FROM:", want: want{
			addr: address.Addr{Local: "alice", Domain: "xn--bcher-kva.example"}, params: Params{{Key: "SMTPUTF8"}},
		}},
		{name: "utf8 rcpt param does not count", arg: "TO:<jörg@example.com> SMTPUTF8", prefix: "TO:", want: want{
			code: CodeMailboxNotAllowed, enh: ENeedsSMTPUTF8, cause: address.ErrNeedsUTF8,
		}},
		{name: "utf8 rcpt in utf8 transaction", arg: "TO:<jörg@example.com>", prefix: "TO:", utf8ok: true, want: want{
			addr: address.Addr{Local: "jörg", Domain: "example.com"},
		}},

		// Failures.
		{name: "missing prefix", arg: "<alice@example.com>", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "wrong prefix", arg: "TO:<alice@example.com>", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "prefix without colon", arg: "FROM <alice@example.com>", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "empty", arg: "", prefix: "TO:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "prefix only", arg: "TO:", prefix: "TO:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "no brackets", arg: "FROM:alice@example.com", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "unclosed", arg: "FROM:<alice@example.com", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "space before colon", arg: "FROM :<alice@example.com>", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param glued to path", arg: "FROM:<alice@example.com>SIZE=1", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param empty value", arg: "FROM:<alice@example.com> SIZE=", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param empty key", arg: "FROM:<alice@example.com> =1", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param key leading hyphen", arg: "FROM:<alice@example.com> -X=1", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param key bad char", arg: "FROM:<alice@example.com> X_Y=1", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param value with =", arg: "FROM:<alice@example.com> X=a=b", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param value with DEL", arg: "FROM:<alice@example.com> X=a\x7f", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "param value with control", arg: "FROM:<alice@example.com> X=a\x01", prefix: "FROM:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "second path", arg: "TO:<alice@example.com> <bob@example.org>", prefix: "TO:", want: want{code: CodeParamSyntax, enh: EInvalidArgs}},
		{name: "bad mail address", arg: "FROM:<alice..x@example.com>", prefix: "FROM:", want: want{
			code: CodeParamSyntax, enh: EBadSenderSyntax, cause: address.ErrSyntax,
		}},
		{name: "bad rcpt address", arg: "TO:<alice@-example.com>", prefix: "TO:", want: want{
			code: CodeParamSyntax, enh: EBadDestSyntax, cause: address.ErrBadDomain,
		}},
		{name: "rcpt too long", arg: "TO:<" + strings.Repeat("a", 65) + "@example.com>", prefix: "TO:", want: want{
			code: CodeParamSyntax, enh: EBadDestSyntax, cause: address.ErrTooLong,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePathArg(tt.arg, tt.prefix, tt.utf8ok)
			if tt.want.code != 0 {
				if err == nil {
					t.Fatalf("ParsePathArg(%q, %q) = %#v, want error %d %s", tt.arg, tt.prefix, got, tt.want.code, tt.want.enh)
				}
				if err.Code != tt.want.code || err.Enhanced != tt.want.enh {
					t.Fatalf("ParsePathArg(%q, %q) error = %v, want %d %s", tt.arg, tt.prefix, err, tt.want.code, tt.want.enh)
				}
				if tt.want.cause != nil && !errors.Is(err, tt.want.cause) {
					t.Fatalf("ParsePathArg(%q, %q) error = %v, want cause %v", tt.arg, tt.prefix, err, tt.want.cause)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePathArg(%q, %q) error = %v", tt.arg, tt.prefix, err)
			}
			if got.Addr != tt.want.addr || !equalParams(got.Params, tt.want.params) {
				t.Fatalf("ParsePathArg(%q, %q) = %#v, want %#v %#v", tt.arg, tt.prefix, got, tt.want.addr, tt.want.params)
			}
		})
	}
}

func equalParams(a, b Params) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestParamsGet(t *testing.T) {
	ps := Params{{Key: "SIZE", Value: "1", Set: true}, {Key: "SMTPUTF8"}, {Key: "SIZE", Value: "2", Set: true}}
	if p, ok := ps.Get("SIZE"); !ok || p.Value != "1" {
		t.Errorf("Get(SIZE) = %#v, %v; want the first one", p, ok)
	}
	if p, ok := ps.Get("SMTPUTF8"); !ok || p.Set {
		t.Errorf("Get(SMTPUTF8) = %#v, %v", p, ok)
	}
	if _, ok := ps.Get("BODY"); ok {
		t.Errorf("Get(BODY) found a parameter that is not there")
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1, true},
		{"1048576", 1048576, true},
		{"007", 7, true},
		{"999999999999999999", 999999999999999999, true}, // 18 digits
		{"1000000000000000000", 0, false},                // 19 digits: more than any limit we could have
		{"", 0, false},
		{"-1", 0, false},
		{"+1", 0, false},
		{"-0", 0, false},
		{" 1", 0, false},
		{"1 ", 0, false},
		{"1k", 0, false},
		{"0x10", 0, false},
		{"1_000", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseSize(tt.in)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseBDAT(t *testing.T) {
	tests := []struct {
		arg  string
		size int64
		last bool
		ok   bool
	}{
		{"100", 100, false, true},
		{"0", 0, false, true},
		{"100 LAST", 100, true, true},
		{"0 LAST", 0, true, true},
		{"100 last", 100, true, true},
		{"100 Last", 100, true, true},
		{"  100   LAST ", 100, true, true},
		{"", 0, false, false},
		{"LAST", 0, false, false},
		{"x", 0, false, false},
		{"-1", 0, false, false},
		{"+1", 0, false, false},
		{"100 LAST extra", 0, false, false},
		{"100 LASTX", 0, false, false},
		{"100 NOTLAST", 0, false, false},
		{"1000000000000000000", 0, false, false},
	}
	for _, tt := range tests {
		size, last, err := ParseBDAT(tt.arg)
		if !tt.ok {
			if err == nil {
				t.Errorf("ParseBDAT(%q) = %d, %v; want error", tt.arg, size, last)
			} else if err.Code != CodeParamSyntax || err.Enhanced != EInvalidArgs {
				t.Errorf("ParseBDAT(%q) error = %v, want %d %s", tt.arg, err, CodeParamSyntax, EInvalidArgs)
			}
			continue
		}
		if err != nil || size != tt.size || last != tt.last {
			t.Errorf("ParseBDAT(%q) = %d, %v, %v; want %d, %v", tt.arg, size, last, err, tt.size, tt.last)
		}
	}
}

func TestErrorFormatting(t *testing.T) {
	cause := errors.New("disk on fire")
	e := Errorf(CodeLocalError, ETempSystem, "Try %s", "later")
	w := e.Wrap(cause)
	if e.Err != nil {
		t.Errorf("Wrap modified the original")
	}
	if got, want := w.Error(), "451 4.3.0 Try later: disk on fire"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(w, cause) || !w.Temporary() {
		t.Errorf("wrapped error: Is(cause)=%v Temporary=%v", errors.Is(w, cause), w.Temporary())
	}
	if ErrTooBig.Temporary() || ErrBareLineEnding.Temporary() {
		t.Errorf("permanent errors report Temporary")
	}
	if ErrBareLineEnding.Code != CodeTransactionFailed || ErrBareLineEnding.Enhanced != EOtherMedia {
		t.Errorf("ErrBareLineEnding = %v, want 554 5.6.0", ErrBareLineEnding)
	}
	if ErrTooBig.Code != CodeExceededStorage || ErrTooBig.Enhanced != EMsgTooBig {
		t.Errorf("ErrTooBig = %v, want 552 5.3.4", ErrTooBig)
	}
}
