package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/errors/*.golden from the current output")

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  string // substring of the error; "" for success
	}{
		{"0", 0, ""},
		{"1024", 1024, ""},
		{"512B", 512, ""},
		{"512 b", 512, ""},
		{"1KB", 1000, ""},
		{"1kB", 1000, ""},
		{"25MB", 25_000_000, ""},
		{"2GB", 2_000_000_000, ""},
		{"1KiB", 1024, ""},
		{"25MiB", 25 << 20, ""},
		{"25mib", 25 << 20, ""},
		{" 25 MiB ", 25 << 20, ""},
		{"1GiB", 1 << 30, ""},
		{"1.5KiB", 1536, ""},
		{"1.5MB", 1_500_000, ""},
		{"8589934591GiB", 8589934591 << 30, ""},
		{"25QB", 0, `invalid size "25QB" (use bytes or a unit: KB, MB, GB, KiB, MiB, GiB)`},
		{"", 0, "invalid size"},
		{"MB", 0, "invalid size"},
		{"-1MB", 0, "invalid size"},
		{"+1MB", 0, "invalid size"},
		{"1e6", 0, "invalid size"},
		{"0x10", 0, "invalid size"},
		{"1.", 0, "invalid size"},
		{".5MB", 0, "invalid size"},
		{"1,5MB", 0, "invalid size"},
		{"1_000", 0, "invalid size"},
		{"25 M B", 0, "invalid size"},
		{"1.0001KB", 0, "not a whole number of bytes"},
		{"0.5B", 0, "not a whole number of bytes"},
		{"8589934592GiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.err == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0"},
		{1000, "1000"},
		{1024, "1KiB"},
		{25 << 20, "25MiB"},
		{3 << 30, "3GiB"},
		{1536, "1536"},
		{-1024, "-1024"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		// What String writes, ParseSize must read back.
		back, err := ParseSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in.String(), back, err, int64(tt.in))
		}
	}
}

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"5m", 5 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"1.5h", 90 * time.Minute, true},
		{"250ms", 250 * time.Millisecond, true},
		{"0", 0, true},
		{"5d", 5 * day, true},
		{"0d", 0, true},
		{"1d12h", day + 12*time.Hour, true},
		{"1d1h1m1s", day + time.Hour + time.Minute + time.Second, true},
		{"-5m", -5 * time.Minute, true},
		{"-1d", -day, true},
		{"+1d", day, true},
		{"106751d", 106751 * day, true},
		{"", 0, false},
		{"-", 0, false},
		{"d", 0, false},
		{"30", 0, false},
		{"30x", 0, false},
		{"5 minutes", 0, false},
		{"1.5d", 0, false},
		{"1h2d", 0, false},
		{"1d-5h", 0, false},
		{"1d+5h", 0, false},
		{"1dd", 0, false},
		{"5D", 0, false},
		{"0x5d", 0, false},
		{"1_0d", 0, false},
		{"106752d", 0, false},
		{"106751d23h59m59s", 0, false},
		{"99999999999999999999d", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if tt.ok {
			if err != nil || got.D() != tt.want {
				t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got.D(), err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v; want an error", tt.in, got.D())
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
			t.Errorf("ParseDuration(%q) error %q does not quote the input", tt.in, err)
		}
	}
}

func TestDurationRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{time.Second, 90 * time.Minute, 5 * 24 * time.Hour, 1500 * time.Millisecond} {
		text, err := Duration(d).MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := back.UnmarshalText(text); err != nil || back.D() != d {
			t.Errorf("round trip of %v through %q gave %v, %v", d, text, back.D(), err)
		}
	}
}

func TestDefault(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if c.Hostname == "" {
		t.Error("Default().Hostname is empty")
	}
	want := &Config{
		Hostname:           c.Hostname, // the machine's name: checked above
		DataDir:            "./posthorn-data",
		RecipientDelimiter: "+",
		Log:                Log{Level: "info", Format: "text"},
		SMTP: SMTP{
			Listen:              []string{"127.0.0.1:2525"},
			MaxMessageSize:      26214400,
			MaxRecipients:       100,
			MaxReceivedHeaders:  100,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 50,
			MaxErrors:           10,
			CommandTimeout:      Duration(5 * time.Minute),
			DataTimeout:         Duration(10 * time.Minute),
		},
		Queue: Queue{
			Workers: 64,
			RetryIntervals: []Duration{Duration(time.Minute), Duration(5 * time.Minute),
				Duration(15 * time.Minute), Duration(30 * time.Minute), Duration(time.Hour)},
			MaxLifetime: Duration(5 * 24 * time.Hour),
		},
		Delivery: Delivery{
			Port:                  25,
			ConnectTimeout:        Duration(30 * time.Second),
			CommandTimeout:        Duration(5 * time.Minute),
			MaxConnections:        100,
			MaxConnectionsPerHost: 10,
			TLSFallbackPlain:      true,
			DelayNotice:           Duration(4 * time.Hour),
			Smarthost:             Smarthost{Port: 587, TLS: "required"},
		},
		DNS:     DNS{Timeout: Duration(5 * time.Second)},
		Domains: map[string]Domain{"localhost": {AcceptAnyUser: true}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() after Validate =\n%+v\nwant\n%+v", c, want)
	}
	// Each call is a fresh value: changing one must not change the next.
	c.SMTP.Listen[0] = "changed"
	c.Domains["changed"] = Domain{}
	if d := Default(); d.SMTP.Listen[0] != "127.0.0.1:2525" || len(d.Domains) != 1 {
		t.Error("Default() shares state between calls")
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	for _, doc := range []string{"", "# only a comment\n\n"} {
		c, err := Parse([]byte(doc), "empty.toml")
		if err != nil {
			t.Fatalf("Parse(%q) = %v", doc, err)
		}
		want := Default()
		if err := want.Validate(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("Parse(%q) =\n%+v\nwant the defaults\n%+v", doc, c, want)
		}
	}
}

// writeFile makes a file in a fresh temporary directory and returns its path.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseFull(t *testing.T) {
	cert := writeFile(t, "cert.pem", "not checked here\n")
	key := writeFile(t, "key.pem", "not checked here\n")
	doc := fmt.Sprintf(`
hostname = "MX.Example.COM"
data_dir = "/var/lib/posthorn"
recipient_delimiter = "-"

[log]
level = "debug"
format = "json"

[smtp]
listen = ["0.0.0.0:25", "127.0.0.1:587", "[::1]:2525", "localhost:26", ":27"]
max_message_size = "50MB"
max_recipients = 500
max_received_headers = 30
max_connections = 200
max_connections_per_ip = 200
max_errors = 3
command_timeout = "10m"
data_timeout = "1h"
relay_from = ["10.1.2.3/8", "192.0.2.7", "::1", "2001:DB8::/32", "::ffff:198.51.100.0/120"]

[tls]
cert = %q
key = %q
disable = false

[queue]
workers = 8
retry_intervals = ["30s", "2m", "1d"]
max_lifetime = "3d12h"

[delivery]
port = 2525
helo_name = "Out.Example.COM"
connect_timeout = "10s"
max_connections = 20
max_connections_per_host = 20
tls_fallback_plain = false
delay_notice = "0s"

[delivery.smarthost]
host = "Relay.Provider.Example"
port = 465
tls = "implicit"
username = "mx@example.com"
password = "s3cret with spaces"

[dns]
servers = ["127.0.0.53", "[::1]:5353", "192.0.2.1:53"]
timeout = "2s"

[domains."Example.com"]
users = ["Alice", "the.boss", "bob_smith"]
catch_all = "alice@EXAMPLE.com"

[domains."bücher.example"]
accept_any_user = true

[domains.localhost]
users = ["root"]

[aliases]
"PostMaster@example.com" = ["the.boss@example.com", "Ops@Remote.Example.ORG"]
"alice@example.com" = ["alice@elsewhere.example"]
"info@Bücher.example" = ["anyone@xn--bcher-kva.example"]
`, cert, key)
	c, err := Parse([]byte(doc), "full.toml")
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	want := &Config{
		Hostname:           "mx.example.com",
		DataDir:            "/var/lib/posthorn",
		RecipientDelimiter: "-",
		Log:                Log{Level: "debug", Format: "json"},
		SMTP: SMTP{
			Listen:              []string{"0.0.0.0:25", "127.0.0.1:587", "[::1]:2525", "localhost:26", ":27"},
			MaxMessageSize:      50_000_000,
			MaxRecipients:       500,
			MaxReceivedHeaders:  30,
			MaxConnections:      200,
			MaxConnectionsPerIP: 200,
			MaxErrors:           3,
			CommandTimeout:      Duration(10 * time.Minute),
			DataTimeout:         Duration(time.Hour),
			RelayFrom:           []string{"10.0.0.0/8", "192.0.2.7/32", "::1/128", "2001:db8::/32", "198.51.100.0/24"},
		},
		TLS: TLS{Cert: cert, Key: key},
		Queue: Queue{
			Workers:        8,
			RetryIntervals: []Duration{Duration(30 * time.Second), Duration(2 * time.Minute), Duration(24 * time.Hour)},
			MaxLifetime:    Duration(84 * time.Hour),
		},
		Delivery: Delivery{
			Port:                  2525,
			HeloName:              "out.example.com",
			ConnectTimeout:        Duration(10 * time.Second),
			CommandTimeout:        Duration(5 * time.Minute),
			MaxConnections:        20,
			MaxConnectionsPerHost: 20,
			TLSFallbackPlain:      false,
			DelayNotice:           0,
			Smarthost: Smarthost{
				Host: "relay.provider.example", Port: 465, TLS: "implicit",
				Username: "mx@example.com", Password: "s3cret with spaces",
			},
		},
		DNS: DNS{
			Servers: []string{"127.0.0.53:53", "[::1]:5353", "192.0.2.1:53"},
			Timeout: Duration(2 * time.Second),
		},
		Domains: map[string]Domain{
			"example.com":           {Users: []string{"alice", "the.boss", "bob_smith"}, CatchAll: "alice@example.com"},
			"xn--bcher-kva.example": {AcceptAnyUser: true},
			"localhost":             {Users: []string{"root"}},
		},
		Aliases: map[string][]string{
			"postmaster@example.com":     {"the.boss@example.com", "Ops@remote.example.org"},
			"alice@example.com":          {"alice@elsewhere.example"},
			"info@xn--bcher-kva.example": {"anyone@xn--bcher-kva.example"},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", c, want)
	}
	// A parsed config is already canonical: validating again changes
	// nothing.
	again := *c
	if err := again.Validate(); err != nil {
		t.Fatalf("Validate after Parse = %v", err)
	}
	if !reflect.DeepEqual(&again, want) {
		t.Errorf("Validate changed a parsed config:\n%+v", again)
	}
}

func TestSizeAsInteger(t *testing.T) {
	c, err := Parse([]byte("[smtp]\nmax_message_size = 1048576\n"), "int.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTP.MaxMessageSize != 1<<20 {
		t.Errorf("max_message_size = %d, want %d", c.SMTP.MaxMessageSize, 1<<20)
	}
}

func TestInlineTablesAndDottedKeys(t *testing.T) {
	doc := `
smtp.listen = ["127.0.0.1:25"]
queue = { workers = 2, retry_intervals = ["1m"] }
domains = { "example.com" = { users = ["a"] } }
aliases."b@example.com" = ["a@example.com"]
`
	c, err := Parse([]byte(doc), "inline.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.SMTP.Listen[0] != "127.0.0.1:25" || c.Queue.Workers != 2 || len(c.Queue.RetryIntervals) != 1 ||
		!reflect.DeepEqual(c.Domains["example.com"].Users, []string{"a"}) || c.Aliases["b@example.com"][0] != "a@example.com" {
		t.Errorf("Parse = %+v", c)
	}
	// Lines are found inside inline tables too.
	_, err = Parse([]byte("queue = { workers = 2,\n  retry_intervals = [\"1m\",\n \"0s\"] }\n"), "inline.toml")
	wantErr(t, err, `inline.toml:3: queue.retry_intervals[1]: must be positive, not 0s`)
}

func TestDomainsReplaceDefault(t *testing.T) {
	c, err := Parse([]byte("[domains.\"example.com\"]\nusers = [\"alice\"]\n"), "d.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.IsLocalDomain("localhost") || !c.IsLocalDomain("example.com") || len(c.Domains) != 1 {
		t.Errorf("domains = %v, want only example.com", c.Domains)
	}
	// An empty [domains] table is a choice too: no local domains at all.
	c, err = Parse([]byte("[domains]\n"), "d.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Domains) != 0 {
		t.Errorf("domains = %v, want none", c.Domains)
	}
	// Without a [domains] table, the default stays.
	c, err = Parse([]byte("hostname = \"mx.example.com\"\n"), "d.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.IsLocalDomain("localhost") || len(c.Domains) != 1 {
		t.Errorf("domains = %v, want the default", c.Domains)
	}
}

func TestIsLocalDomain(t *testing.T) {
	c, err := Parse([]byte("[domains.\"Bücher.Example\"]\naccept_any_user = true\n[domains.\"example.com\"]\nusers = [\"a\"]\n"), "d.toml")
	if err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]bool{
		"example.com":           true,
		"EXAMPLE.COM":           true,
		"example.com.":          true,
		"xn--bcher-kva.example": true,
		"BÜCHER.example":        true,
		"bücher.example":        true,
		"example.org":           false,
		"sub.example.com":       false,
		"":                      false,
		"exa mple.com":          false,
	} {
		if got := c.IsLocalDomain(d); got != want {
			t.Errorf("IsLocalDomain(%q) = %v, want %v", d, got, want)
		}
	}
}

func TestAliasMayShadowUser(t *testing.T) {
	doc := "[domains.\"example.com\"]\nusers = [\"alice\", \"bob\"]\n[aliases]\n\"alice@example.com\" = [\"bob@example.com\"]\n"
	c, err := Parse([]byte(doc), "a.toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Aliases["alice@example.com"]; !reflect.DeepEqual(got, []string{"bob@example.com"}) {
		t.Errorf("alias = %v", got)
	}
}

func TestLocalTargetsMustLeadSomewhere(t *testing.T) {
	base := "[domains.\"example.com\"]\nusers = [\"alice\"]\n"
	ok := []string{
		`[aliases]` + "\n" + `"x@example.com" = ["alice+tag@example.com"]`,                                            // detail after the delimiter
		`[aliases]` + "\n" + `"x@example.com" = ["y@example.com"]` + "\n" + `"y@example.com" = ["alice@example.com"]`, // alias of an alias
		`[aliases]` + "\n" + `"x@example.com" = ["ALICE@example.com"]`,                                                // case-insensitive
	}
	for _, extra := range ok {
		if _, err := Parse([]byte(base+extra+"\n"), "t.toml"); err != nil {
			t.Errorf("Parse(%q) = %v", extra, err)
		}
	}
	// As in internal/policy, a catch-all catches mail sent to the domain,
	// not alias targets: an alias to a missing user is a typo.
	_, err := Parse([]byte(base+"catch_all = \"alice@example.com\"\n[aliases]\n\"x@example.com\" = [\"nobody@example.com\"]\n"), "t.toml")
	wantErr(t, err, `t.toml:5: aliases."x@example.com"[0]: "nobody@example.com" is neither a user nor an alias of its local domain`)
	// A catch_all must lead to a mailbox itself, or it would catch itself.
	_, err = Parse([]byte(base+"catch_all = \"nobody@example.com\"\n"), "t.toml")
	wantErr(t, err, `t.toml:3: domains."example.com".catch_all: "nobody@example.com" is neither a user nor an alias of its local domain`)
	// With accept_any_user, a catch_all still takes local parts that are no
	// safe mailbox name.
	if _, err := Parse([]byte("[domains.\"example.com\"]\naccept_any_user = true\ncatch_all = \"x@remote.example\"\n"), "t.toml"); err != nil {
		t.Error(err)
	}
	// Remote targets are never checked beyond their syntax.
	if _, err := Parse([]byte(base+"[aliases]\n\"x@example.com\" = [\"nobody@remote.example\"]\n"), "t.toml"); err != nil {
		t.Error(err)
	}
}

func TestAliasLoopsAndDepth(t *testing.T) {
	base := "[domains.\"example.com\"]\nusers = [\"alice\"]\n[aliases]\n"
	_, err := Parse([]byte(base+"\"a@example.com\" = [\"b@example.com\"]\n\"b@example.com\" = [\"a+x@example.com\"]\n"), "t.toml")
	wantErr(t, err, `t.toml:4: aliases."a@example.com": aliases from here loop or nest more than 10 deep`)
	wantErr(t, err, `t.toml:5: aliases."b@example.com": aliases from here loop or nest more than 10 deep`)

	// A chain of n aliases ending in a user: 10 expansions are fine, 11 are
	// not (internal/policy gives up past maxAliasDepth).
	chain := func(n int) string {
		var b strings.Builder
		b.WriteString(base)
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, "\"a%d@example.com\" = [\"a%d@example.com\"]\n", i, i+1)
		}
		fmt.Fprintf(&b, "\"a%d@example.com\" = [\"alice@example.com\"]\n", n)
		return b.String()
	}
	if _, err := Parse([]byte(chain(maxAliasDepth)), "t.toml"); err != nil {
		t.Errorf("chain of %d: %v", maxAliasDepth, err)
	}
	_, err = Parse([]byte(chain(maxAliasDepth+1)), "t.toml")
	wantErr(t, err, `t.toml:4: aliases."a1@example.com": aliases from here loop or nest more than 10 deep`)
	// A catch_all into the chain starts one level down.
	_, err = Parse([]byte(strings.Replace(chain(maxAliasDepth), "users = [\"alice\"]\n", "users = [\"alice\"]\ncatch_all = \"a1@example.com\"\n", 1)), "t.toml")
	wantErr(t, err, `t.toml:3: domains."example.com".catch_all: "a1@example.com" leads to aliases that loop or nest more than 10 deep`)
}

func TestTLSFiles(t *testing.T) {
	cert := writeFile(t, "cert.pem", "x")
	key := writeFile(t, "key.pem", "x")
	dir := t.TempDir()
	tests := []struct {
		doc string
		err string
	}{
		{fmt.Sprintf("[tls]\ncert = %q\nkey = %q\n", cert, key), ""},
		{"[tls]\ndisable = true\n", ""},
		// Disabled TLS does not read the files, so they need not exist.
		{"[tls]\ndisable = true\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n", ""},
		{fmt.Sprintf("[tls]\ncert = %q\nkey = %q\n", dir, key), fmt.Sprintf(`t.toml:2: tls.cert: cannot use %q: not a regular file`, dir)},
		{fmt.Sprintf("[tls]\nkey = %q\n", key), `t.toml:2: tls.key: is set but tls.cert is not`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.doc), "t.toml")
		if tt.err == "" {
			if err != nil {
				t.Errorf("Parse(%q) = %v", tt.doc, err)
			}
			continue
		}
		wantErr(t, err, tt.err)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	c := Default()
	c.SMTP.MaxRecipients = 5
	c.Domains["Example.COM"] = Domain{Users: []string{"Bob"}}
	err := c.Validate()
	wantErr(t, err, "smtp.max_recipients: must be at least 100")
	var e *Error
	if !errors.As(err, &e) || e.File != "" || e.Line != 0 {
		t.Errorf("error %#v: want no file and no line", e)
	}
	// Validate normalised the names it could, even though it failed.
	if d, ok := c.Domains["example.com"]; !ok || d.Users[0] != "bob" {
		t.Errorf("domains = %v, want example.com with user bob", c.Domains)
	}
}

func TestManyErrorsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("[domains.\"example.com\"]\nusers = [\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, "  \"bad/%d\",\n", i)
	}
	b.WriteString("]\n")
	_, err := Parse([]byte(b.String()), "many.toml")
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 || !strings.HasPrefix(lines[maxErrors], "... and") {
		t.Errorf("got %d lines, last %q", len(lines), lines[len(lines)-1])
	}
	if !strings.HasPrefix(lines[0], "many.toml:3: ") || !strings.HasPrefix(lines[1], "many.toml:4: ") {
		t.Errorf("errors not in file order: %q", lines[:2])
	}
}

func TestLoad(t *testing.T) {
	p := writeFile(t, "posthorn.toml", "hostname = \"mx.example.com\"\n[smtp]\nmax_errors = 0\n")
	_, err := Load(p)
	wantErr(t, err, p+":3: smtp.max_errors: must be at least 1, not 0")
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

// TestExampleFile keeps posthorn.example.toml valid and complete: it must
// parse as it is, and mention every key (set or commented out).
func TestExampleFile(t *testing.T) {
	const path = "../../posthorn.example.toml"
	c, err := Load(path)
	if err != nil {
		t.Fatalf("the example does not parse: %v", err)
	}
	if c.Hostname != "mx.example.com" || c.DataDir != "/var/lib/posthorn" ||
		!reflect.DeepEqual(c.SMTP.Listen, []string{"0.0.0.0:25"}) ||
		!reflect.DeepEqual(c.Domains["example.com"].Users, []string{"alice", "theboss"}) ||
		len(c.Aliases["postmaster@example.com"]) == 0 || len(c.Domains) != 1 {
		t.Errorf("example parsed to %+v", c)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range schemaKeys(configType) {
		re := regexp.MustCompile(`(?m)^#?` + regexp.QuoteMeta(key) + ` = `)
		if !re.Match(data) {
			t.Errorf("the example does not show key %q", key)
		}
	}
}

// schemaKeys lists the toml tag of every leaf field reachable from t.
func schemaKeys(t reflect.Type) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Map {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, schemaKeys(ft)...)
		} else if f.Type.Kind() != reflect.Map {
			keys = append(keys, tagName(f))
		}
	}
	return keys
}

// lineRE is what every line of a file's error report must start with.
var lineRE = regexp.MustCompile(`^[a-z0-9_]+\.toml:[1-9][0-9]*: `)

// TestErrorGoldens parses each testdata/errors/*.toml and compares the
// error with the .golden file beside it. Run with -update to rewrite them.
func TestErrorGoldens(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range files {
		name := strings.TrimSuffix(filepath.Base(in), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			_, perr := Parse(data, filepath.Base(in))
			if perr == nil {
				t.Fatal("Parse succeeded; want an error")
			}
			got := perr.Error() + "\n"
			golden := strings.TrimSuffix(in, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("error text:\n%s\nwant (%s):\n%s", got, golden, want)
			}
			for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
				if !lineRE.MatchString(l) {
					t.Errorf("error line %q has no file:line: prefix", l)
				}
			}
		})
	}
}

// wantErr fails unless err's text contains want.
func wantErr(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("no error; want %q", want)
		return
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error:\n%v\nwant it to contain:\n%s", err, want)
	}
}
