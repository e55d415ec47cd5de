package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/smtp"
)

func testPolicy(t *testing.T) *Policy {
	t.Helper()
	p, err := New(Options{
		Domains: map[string]Domain{
			"example.com":    {Users: []string{"alice", "theboss"}},
			"example.org":    {Users: []string{"bob"}, CatchAll: "bob@example.org"},
			"localhost":      {AcceptAnyUser: true},
			"bücher.example": {Users: []string{"carol"}},
		},
		Aliases: map[string][]string{
			"postmaster@example.com":  {"alice@example.com"},
			"team@example.com":        {"alice@example.com", "theboss@example.com", "friend@remote.net"},
			"chain@example.com":       {"team@example.com"},
			"alice+lists@example.com": {"theboss@example.com"},
		},
		RecipientDelimiter: "+",
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolve(t *testing.T) {
	p := testPolicy(t)
	tests := []struct {
		addr    string
		want    []string // "addr -> mailbox", mailbox empty for remote
		wantErr *smtp.Error
	}{
		{"alice@example.com", []string{"alice@example.com -> example.com/alice"}, nil},
		{"ALICE@example.com", []string{"ALICE@example.com -> example.com/alice"}, nil},
		{"alice+tag@example.com", []string{"alice+tag@example.com -> example.com/alice"}, nil},
		// An alias of the tagged address wins over the plain mailbox.
		{"alice+lists@example.com", []string{"theboss@example.com -> example.com/theboss"}, nil},
		{"postmaster@example.com", []string{"alice@example.com -> example.com/alice"}, nil},
		{"team@example.com", []string{
			"alice@example.com -> example.com/alice",
			"theboss@example.com -> example.com/theboss",
			"friend@remote.net -> ",
		}, nil},
		{"chain@example.com", []string{
			"alice@example.com -> example.com/alice",
			"theboss@example.com -> example.com/theboss",
			"friend@remote.net -> ",
		}, nil},
		{"nobody@example.com", nil, ErrUnknownUser},
		{"nobody+x@example.com", nil, ErrUnknownUser},
		{"stranger@example.org", []string{"bob@example.org -> example.org/bob"}, nil},
		{"bob@example.org", []string{"bob@example.org -> example.org/bob"}, nil},
		{"anyone@localhost", []string{"anyone@localhost -> localhost/anyone"}, nil},
		{"Mixed.Case-1@localhost", []string{"Mixed.Case-1@localhost -> localhost/mixed.case-1"}, nil},
		{"x+y@localhost", []string{"x+y@localhost -> localhost/x"}, nil},
		{"carol@xn--bcher-kva.example", []string{"carol@xn--bcher-kva.example -> xn--bcher-kva.example/carol"}, nil},
		{"alice@example.net", nil, ErrRelayDenied},
		{"alice@sub.example.com", nil, ErrRelayDenied},
	}
	for _, tt := range tests {
		a, err := address.Parse(tt.addr)
		if err != nil {
			t.Fatalf("%s: %v", tt.addr, err)
		}
		rs, serr := p.Resolve(a)
		if serr != tt.wantErr {
			t.Errorf("Resolve(%s) error = %v, want %v", tt.addr, serr, tt.wantErr)
			continue
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.Addr+" -> "+r.Mailbox)
			if r.Addr != tt.addr && r.Orig != a.String() {
				t.Errorf("Resolve(%s): %s has Orig %q", tt.addr, r.Addr, r.Orig)
			}
		}
		if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
			t.Errorf("Resolve(%s) =\n%s\nwant\n%s", tt.addr, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
		}
	}
}

// TestUnsafeLocalParts: with accept_any_user, a local part becomes a
// directory name only when it cannot escape the mail root.
func TestUnsafeLocalParts(t *testing.T) {
	p := testPolicy(t)
	for _, local := range []string{`"../../etc"`, `".."`, `"a/b"`, ".hidden", `"a\\b"`, "x" + strings.Repeat("y", 64)} {
		a, err := address.Parse(local + "@localhost")
		if err != nil {
			continue // refused by the parser already
		}
		if rs, serr := p.Resolve(a); serr != ErrUnknownUser {
			t.Errorf("Resolve(%s@localhost) = %v, %v; want unknown user", local, rs, serr)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for name, opts := range map[string]Options{
		"alias to unknown local user": {
			Domains: map[string]Domain{"example.com": {Users: []string{"alice"}}},
			Aliases: map[string][]string{"a@example.com": {"ghost@example.com"}},
		},
		"alias in a remote domain": {
			Domains: map[string]Domain{"example.com": {Users: []string{"alice"}}},
			Aliases: map[string][]string{"a@example.net": {"alice@example.com"}},
		},
		"alias loop": {
			Domains: map[string]Domain{"example.com": {Users: []string{"alice"}}},
			Aliases: map[string][]string{"a@example.com": {"b@example.com"}, "b@example.com": {"a@example.com"}},
		},
		"unsafe user name": {
			Domains: map[string]Domain{"example.com": {Users: []string{"../root"}}},
		},
		"catch-all to unknown user": {
			Domains: map[string]Domain{"example.com": {Users: []string{"alice"}, CatchAll: "ghost@example.com"}},
		},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestSafeMailboxName(t *testing.T) {
	for name, want := range map[string]bool{
		"alice": true, "a.b": true, "a_b-c9": true,
		"": false, ".a": false, "a..b": false, "A": false, "a/b": false, "a b": false,
		strings.Repeat("a", 64): true, strings.Repeat("a", 65): false,
	} {
		if got := SafeMailboxName(name); got != want {
			t.Errorf("SafeMailboxName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRelayAllowed(t *testing.T) {
	p, err := New(Options{
		Domains:   map[string]Domain{"example.com": {Users: []string{"alice"}}},
		RelayFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{
		"10.1.2.3": true, "::ffff:10.1.2.3": true, "2001:db8::1": true,
		"11.0.0.1": false, "127.0.0.1": false, "::1": false,
	} {
		if got := p.RelayAllowed(netip.MustParseAddr(ip)); got != want {
			t.Errorf("RelayAllowed(%s) = %v, want %v", ip, got, want)
		}
	}
	if def := testPolicy(t); def.RelayAllowed(netip.MustParseAddr("127.0.0.1")) {
		t.Error("loopback may relay without relay_from")
	}
}
