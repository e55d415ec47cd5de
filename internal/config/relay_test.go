package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseOK parses doc and fails the test on an error.
func parseOK(t testing.TB, doc string) *Config {
	t.Helper()
	c, err := Parse([]byte(doc), "t.toml")
	if err != nil {
		t.Fatalf("Parse(%q) = %v", doc, err)
	}
	return c
}

func TestRelayFrom(t *testing.T) {
	tests := []struct {
		in   []string
		want []string // canonical; nil when in is invalid
		err  string   // substring of the error, located at line 2
	}{
		{[]string{}, []string{}, ""},
		{[]string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}, ""},
		{[]string{"10.1.2.3/8"}, []string{"10.0.0.0/8"}, ""}, // host bits masked
		{[]string{"192.0.2.7"}, []string{"192.0.2.7/32"}, ""},
		{[]string{"192.0.2.7/32"}, []string{"192.0.2.7/32"}, ""},
		{[]string{"::1"}, []string{"::1/128"}, ""},
		{[]string{"2001:DB8:0:0::1/48"}, []string{"2001:db8::/48"}, ""},
		{[]string{"::ffff:192.0.2.0/120"}, []string{"192.0.2.0/24"}, ""}, // mapped IPv4 is IPv4
		{[]string{"::ffff:192.0.2.1"}, []string{"192.0.2.1/32"}, ""},
		{[]string{"::/80"}, []string{"::/80"}, ""},
		{[]string{"0.0.0.0/0", "::/0"}, []string{"0.0.0.0/0", "::/0"}, ""},
		{[]string{"127.0.0.0/08"}, []string{"127.0.0.0/8"}, ""},

		{[]string{"10.0.0.0/33"}, nil, `t.toml:2: smtp.relay_from[0]: invalid network "10.0.0.0/33": the prefix length must be a number from 0 to 32`},
		{[]string{"::/129"}, nil, `the prefix length must be a number from 0 to 128`},
		{[]string{"10.0.0.0/"}, nil, `the prefix length must be a number`},
		{[]string{"10.0.0.0/+8"}, nil, `the prefix length must be a number`},
		{[]string{"10.0.0.0/8/8"}, nil, `the prefix length must be a number`},
		{[]string{"10.0.0/8"}, nil, `invalid network "10.0.0/8": "10.0.0" is not an IP address (want a CIDR prefix`},
		{[]string{"localhost"}, nil, `"localhost" is not an IP address`},
		{[]string{""}, nil, `invalid network "": "" is not an IP address`},
		{[]string{" 10.0.0.1"}, nil, `is not an IP address`},
		{[]string{"fe80::1%eth0"}, nil, `leave out the IPv6 zone "%eth0"`},
		{[]string{"10.0.0.0/8", "10.9.9.9/8"}, nil, `t.toml:2: smtp.relay_from[1]: "10.9.9.9/8" is the same network as "10.0.0.0/8"`},
		{[]string{"192.0.2.1", "::ffff:192.0.2.1/128"}, nil, `"::ffff:192.0.2.1/128" is the same network as "192.0.2.1"`},
	}
	for _, tt := range tests {
		list := make([]string, len(tt.in))
		for i, s := range tt.in {
			list[i] = fmt.Sprintf("%q", s)
		}
		doc := "[smtp]\nrelay_from = [" + strings.Join(list, ", ") + "]\n"
		c, err := Parse([]byte(doc), "t.toml")
		if tt.err != "" {
			wantErr(t, err, tt.err)
			continue
		}
		if err != nil {
			t.Errorf("relay_from %q: %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(c.SMTP.RelayFrom, tt.want) {
			t.Errorf("relay_from %q = %q, want %q", tt.in, c.SMTP.RelayFrom, tt.want)
		}
		// The helper gives the same networks, parsed.
		var got []string
		for _, p := range c.RelayNetworks() {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("RelayNetworks() for %q = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRelayFromDefaultTrustsNobody(t *testing.T) {
	c := parseOK(t, "")
	if c.SMTP.RelayFrom != nil || len(c.RelayNetworks()) != 0 {
		t.Errorf("default relay_from = %q, networks %v; want none", c.SMTP.RelayFrom, c.RelayNetworks())
	}
}

func TestRelayNetworksMatch(t *testing.T) {
	c := parseOK(t, `[smtp]
relay_from = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
`)
	nets := c.RelayNetworks()
	trusted := func(addr string) bool {
		// As a listener sees it: IPv4 clients may come mapped into IPv6.
		a := netip.MustParseAddr(addr).Unmap()
		for _, p := range nets {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	for addr, want := range map[string]bool{
		"10.255.0.1":          true,
		"::ffff:10.1.1.1":     true,
		"192.0.2.7":           true,
		"192.0.2.8":           false,
		"2001:db8:ffff::1":    true,
		"2001:db9::1":         false,
		"127.0.0.1":           false, // loopback is not implied
		"::1":                 false,
		"::ffff:192.0.2.8":    false,
		"11.0.0.1":            false,
		"::ffff:0a00:0001":    true, // 10.0.0.1 in hex
		"2001:db8::ffff:1:10": true,
	} {
		if got := trusted(addr); got != want {
			t.Errorf("client %s trusted = %v, want %v", addr, got, want)
		}
	}
	// Entries a Config built in code got wrong are left out: never trusted.
	c = Default()
	c.SMTP.RelayFrom = []string{"nonsense", "192.0.2.0/24"}
	if got := c.RelayNetworks(); len(got) != 1 || got[0] != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("RelayNetworks() = %v, want only 192.0.2.0/24", got)
	}
}

func TestDeliverySettings(t *testing.T) {
	tests := []struct {
		doc   string
		check func(d Delivery) bool
		err   string
	}{
		{"", func(d Delivery) bool {
			return d.Port == 25 && d.HeloName == "" && d.ConnectTimeout.D() == 30*time.Second && d.CommandTimeout.D() == 5*time.Minute &&
				d.MaxConnections == 100 && d.MaxConnectionsPerHost == 10 && d.TLSFallbackPlain &&
				d.DelayNotice.D() == 4*time.Hour && d.Smarthost == Smarthost{Port: 587, TLS: "required"}
		}, ""},
		{"port = 1", func(d Delivery) bool { return d.Port == 1 }, ""},
		{"port = 65535", func(d Delivery) bool { return d.Port == 65535 }, ""},
		{"port = 0", nil, "t.toml:2: delivery.port: must be a port from 1 to 65535, not 0"},
		{"port = 65536", nil, "t.toml:2: delivery.port: must be a port from 1 to 65535, not 65536"},
		{"port = -25", nil, "delivery.port: must be a port from 1 to 65535, not -25"},
		{`port = "25"`, nil, `t.toml:2: delivery.port: expected an integer, got string "25"`},
		{`helo_name = "Out.Example.com"`, func(d Delivery) bool { return d.HeloName == "out.example.com" }, ""},
		{`helo_name = "bücher.example"`, func(d Delivery) bool { return d.HeloName == "xn--bcher-kva.example" }, ""},
		{`helo_name = "out example"`, nil, `t.toml:2: delivery.helo_name: invalid domain name "out example"`},
		{`helo_name = "192.0.2.1"`, nil, `delivery.helo_name: invalid domain name "192.0.2.1": looks like an IP address`},
		{`connect_timeout = "1ms"`, func(d Delivery) bool { return d.ConnectTimeout.D() == time.Millisecond }, ""},
		{`connect_timeout = "0s"`, nil, "t.toml:2: delivery.connect_timeout: must be positive, not 0s"},
		{`connect_timeout = "-1s"`, nil, "delivery.connect_timeout: must be positive, not -1s"},
		{`command_timeout = "2s"`, func(d Delivery) bool { return d.CommandTimeout.D() == 2*time.Second }, ""},
		{`command_timeout = "0s"`, nil, "t.toml:2: delivery.command_timeout: must be positive, not 0s"},
		{"max_connections = 1\nmax_connections_per_host = 1", func(d Delivery) bool {
			return d.MaxConnections == 1 && d.MaxConnectionsPerHost == 1
		}, ""},
		{"max_connections = 0", nil, "t.toml:2: delivery.max_connections: must be at least 1, not 0"},
		{"max_connections_per_host = 0", nil, "t.toml:2: delivery.max_connections_per_host: must be at least 1, not 0"},
		// The default per-host limit (10) above a lowered total is reported
		// where the total is set.
		{"max_connections = 5", nil, "t.toml:2: delivery.max_connections_per_host: 10 is more than delivery.max_connections (5)"},
		{"max_connections_per_host = 101", nil, "t.toml:2: delivery.max_connections_per_host: 101 is more than delivery.max_connections (100)"},
		{"tls_fallback_plain = false", func(d Delivery) bool { return !d.TLSFallbackPlain }, ""},
		{`tls_fallback_plain = "no"`, nil, `t.toml:2: delivery.tls_fallback_plain: expected a boolean (true or false), got string "no"`},
		{`delay_notice = "0s"`, func(d Delivery) bool { return d.DelayNotice == 0 }, ""},
		{`delay_notice = "1d"`, func(d Delivery) bool { return d.DelayNotice.D() == 24*time.Hour }, ""},
		{`delay_notice = "-1h"`, nil, `t.toml:2: delivery.delay_notice: must not be negative ("0s" sends no delay notices), not -1h0m0s`},
		{`delay_notice = "4"`, nil, `t.toml:2: delivery.delay_notice: invalid duration "4"`},
		{`max_conections = 5`, nil, `t.toml:2: delivery.max_conections: unknown key (did you mean "max_connections"?)`},
	}
	for _, tt := range tests {
		doc := "[delivery]\n" + tt.doc + "\n"
		c, err := Parse([]byte(doc), "t.toml")
		if tt.err != "" {
			wantErr(t, err, tt.err)
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) = %v", doc, err)
			continue
		}
		if !tt.check(c.Delivery) {
			t.Errorf("Parse(%q): delivery = %+v", doc, c.Delivery)
		}
	}
}

func TestHeloName(t *testing.T) {
	c := parseOK(t, "hostname = \"mx.example.com\"\n")
	if got := c.HeloName(); got != "mx.example.com" {
		t.Errorf("HeloName() = %q, want the hostname", got)
	}
	c = parseOK(t, "hostname = \"mx.example.com\"\n[delivery]\nhelo_name = \"OUT.example.com\"\n")
	if got := c.HeloName(); got != "out.example.com" {
		t.Errorf("HeloName() = %q, want out.example.com", got)
	}
}

func TestSmarthost(t *testing.T) {
	tests := []struct {
		doc  string
		want Smarthost
		err  string
	}{
		{`host = "relay.example.net"`, Smarthost{Host: "relay.example.net", Port: 587, TLS: "required"}, ""},
		{`host = "Relay.Example.NET"`, Smarthost{Host: "relay.example.net", Port: 587, TLS: "required"}, ""},
		{`host = "localhost"`, Smarthost{Host: "localhost", Port: 587, TLS: "required"}, ""},
		{"host = \"192.0.2.25\"\nport = 25\ntls = \"opportunistic\"", Smarthost{Host: "192.0.2.25", Port: 25, TLS: "opportunistic"}, ""},
		{`host = "2001:DB8::25"`, Smarthost{Host: "2001:db8::25", Port: 587, TLS: "required"}, ""},
		{"host = \"relay.example.net\"\nport = 465\ntls = \"implicit\"\nusername = \"u\"\npassword = \"p\"",
			Smarthost{Host: "relay.example.net", Port: 465, TLS: "implicit", Username: "u", Password: "p"}, ""},
		{"host = \"relay.example.net\"\nusername = \"ü@example.com\"\npassword = \"pässword\"",
			Smarthost{Host: "relay.example.net", Port: 587, TLS: "required", Username: "ü@example.com", Password: "pässword"}, ""},
		// Without a host, the other keys may be written with their defaults.
		{"port = 587\ntls = \"required\"\nusername = \"\"\npassword = \"\"", Smarthost{Port: 587, TLS: "required"}, ""},

		{`host = "relay example"`, Smarthost{}, `t.toml:2: delivery.smarthost.host: invalid domain name "relay example"`},
		{`host = "relay.example.net:587"`, Smarthost{}, `t.toml:2: delivery.smarthost.host: "relay.example.net:587" has a port: give only the host, and the port in delivery.smarthost.port`},
		{`host = "[2001:db8::25]"`, Smarthost{}, `delivery.smarthost.host: write the address "[2001:db8::25]" without brackets`},
		{`host = "0.0.0.0"`, Smarthost{}, `delivery.smarthost.host: "0.0.0.0" is no host's address`},
		{`host = "relay.example.net."`, Smarthost{}, `delivery.smarthost.host: domain name "relay.example.net." must not end with a dot`},
		{"host = \"relay.example.net\"\nport = 0", Smarthost{}, `t.toml:3: delivery.smarthost.port: must be a port from 1 to 65535, not 0`},
		{"host = \"relay.example.net\"\nport = 70000", Smarthost{}, `t.toml:3: delivery.smarthost.port: must be a port from 1 to 65535, not 70000`},
		{"host = \"relay.example.net\"\ntls = \"starttls\"", Smarthost{}, `t.toml:3: delivery.smarthost.tls: invalid value "starttls" (use "required", "opportunistic" or "implicit")`},
		{"host = \"relay.example.net\"\ntls = \"Required\"", Smarthost{}, `delivery.smarthost.tls: invalid value "Required"`},
		{"host = \"relay.example.net\"\ntls = \"\"", Smarthost{}, `delivery.smarthost.tls: invalid value ""`},
		{"host = \"relay.example.net\"\ntls = true", Smarthost{}, `t.toml:3: delivery.smarthost.tls: expected a string, got boolean true`},
		{"host = \"relay.example.net\"\nusername = \"u\"", Smarthost{}, `t.toml:3: delivery.smarthost.username: is set but delivery.smarthost.password is not: set both for AUTH PLAIN, or neither`},
		{"host = \"relay.example.net\"\npassword = \"p\"", Smarthost{}, `t.toml:3: delivery.smarthost.password: is set but delivery.smarthost.username is not`},
		{"host = \"relay.example.net\"\ntls = \"opportunistic\"\nusername = \"u\"\npassword = \"p\"", Smarthost{},
			`t.toml:4: delivery.smarthost.username: AUTH needs tls = "required" or "implicit": with "opportunistic" the password could be sent in clear`},
		{"host = \"relay.example.net\"\nusername = \"u\\u0000x\"\npassword = \"p\"", Smarthost{}, `t.toml:3: delivery.smarthost.username: must not contain a NUL character`},
		{"host = \"relay.example.net\"\nusername = \"u\"\npassword = \"p\\u0000\"", Smarthost{}, `t.toml:4: delivery.smarthost.password: must not contain a NUL character`},
		// Settings without a host would silently do nothing.
		{"port = 465", Smarthost{}, `t.toml:2: delivery.smarthost.port: is set but delivery.smarthost.host is not: set the host, or remove this key`},
		{"tls = \"implicit\"", Smarthost{}, `t.toml:2: delivery.smarthost.tls: is set but delivery.smarthost.host is not`},
		{"username = \"u\"\npassword = \"p\"", Smarthost{}, "t.toml:2: delivery.smarthost.username: is set but delivery.smarthost.host is not: set the host, or remove this key\nt.toml:3: delivery.smarthost.password: is set but delivery.smarthost.host is not"},
		{`hots = "relay.example.net"`, Smarthost{}, `t.toml:2: delivery.smarthost.hots: unknown key (did you mean "host"?)`},
	}
	for _, tt := range tests {
		doc := "[delivery.smarthost]\n" + tt.doc + "\n"
		c, err := Parse([]byte(doc), "t.toml")
		if tt.err != "" {
			wantErr(t, err, tt.err)
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) = %v", doc, err)
			continue
		}
		if c.Delivery.Smarthost != tt.want {
			t.Errorf("Parse(%q): smarthost = %#v, want %#v", doc, c.Delivery.Smarthost, tt.want)
		}
	}
	// The same settings as an inline table and as dotted keys.
	c := parseOK(t, "delivery.smarthost = { host = \"relay.example.net\", port = 25 }\n")
	if c.Delivery.Smarthost.Host != "relay.example.net" || c.Delivery.Smarthost.Port != 25 {
		t.Errorf("inline smarthost = %#v", c.Delivery.Smarthost)
	}
	_, err := Parse([]byte("[delivery]\nsmarthost.host = \"relay.example.net\"\nsmarthost.tls = \"tls\"\n"), "t.toml")
	wantErr(t, err, `t.toml:3: delivery.smarthost.tls: invalid value "tls"`)
}

// TestSmarthostStringHidesPassword keeps the password out of logs and test
// output that print a Config with %v.
func TestSmarthostStringHidesPassword(t *testing.T) {
	c := parseOK(t, "[delivery.smarthost]\nhost = \"relay.example.net\"\nusername = \"mx\"\npassword = \"hunter2-secret\"\n")
	for _, verb := range []string{"%v", "%+v", "%s"} {
		out := fmt.Sprintf(verb, c)
		if strings.Contains(out, "hunter2-secret") {
			t.Errorf("%s of the config shows the password: %s", verb, out)
		}
		if !strings.Contains(out, "relay.example.net") || !strings.Contains(out, "Password:(hidden)") {
			t.Errorf("%s of the config lacks the smarthost: %s", verb, out)
		}
	}
	if s := (Smarthost{Host: "h"}).String(); !strings.Contains(s, "Password:}") {
		t.Errorf("String() of a smarthost without password = %q", s)
	}
}

func TestDNSSettings(t *testing.T) {
	tests := []struct {
		doc     string
		servers []string
		timeout time.Duration
		err     string
	}{
		{"", nil, 5 * time.Second, ""},
		{"servers = []", []string{}, 5 * time.Second, ""},
		{`servers = ["127.0.0.53"]`, []string{"127.0.0.53:53"}, 5 * time.Second, ""},
		{`servers = ["127.0.0.1:5353", "::1", "[::1]:5353", "[2001:DB8::1]:53"]`,
			[]string{"127.0.0.1:5353", "[::1]:53", "[::1]:5353", "[2001:db8::1]:53"}, 5 * time.Second, ""},
		{`timeout = "250ms"`, nil, 250 * time.Millisecond, ""},

		{`servers = ["ns1.example.net"]`, nil, 0, `t.toml:2: dns.servers[0]: invalid server "ns1.example.net" (want an IP address, with a port when it is not 53`},
		{`servers = ["ns1.example.net:53"]`, nil, 0, `invalid server "ns1.example.net:53" (want an IP address`},
		{`servers = ["::1:53"]`, []string{"[::1:53]:53"}, 5 * time.Second, ""}, // a valid IPv6 address, not ::1 port 53
		{`servers = ["[::1]"]`, nil, 0, `invalid server "[::1]"`},
		{`servers = ["127.0.0.1:"]`, nil, 0, `invalid server "127.0.0.1:"`},
		{`servers = ["127.0.0.1:65536"]`, nil, 0, `invalid server "127.0.0.1:65536"`},
		{`servers = ["127.0.0.1:0"]`, nil, 0, `dns.servers[0]: invalid server "127.0.0.1:0": port 0 cannot be sent to`},
		{`servers = ["0.0.0.0"]`, nil, 0, `dns.servers[0]: invalid server "0.0.0.0": 0.0.0.0 is no server's address`},
		{`servers = [""]`, nil, 0, `invalid server ""`},
		{"servers = [\n  \"127.0.0.1\",\n  \"127.0.0.1:53\",\n]", nil, 0, `t.toml:4: dns.servers[1]: "127.0.0.1:53" is the same server as "127.0.0.1"`},
		{`servers = "127.0.0.1"`, nil, 0, `t.toml:2: dns.servers: expected an array, got string "127.0.0.1"`},
		{`timeout = "0s"`, nil, 0, `t.toml:2: dns.timeout: must be positive, not 0s`},
		{`timeout = 5`, nil, 0, `t.toml:2: dns.timeout: expected a duration string such as "30s", got integer 5`},
	}
	for _, tt := range tests {
		doc := "[dns]\n" + tt.doc + "\n"
		c, err := Parse([]byte(doc), "t.toml")
		if tt.err != "" {
			wantErr(t, err, tt.err)
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q) = %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(c.DNS.Servers, tt.servers) || c.DNS.Timeout.D() != tt.timeout {
			t.Errorf("Parse(%q): dns = %+v, want servers %q timeout %v", doc, c.DNS, tt.servers, tt.timeout)
		}
	}
}

// TestRelayValidateWithoutFile checks the new settings on a Config built in
// code: the same rules, without file or line.
func TestRelayValidateWithoutFile(t *testing.T) {
	c := Default()
	c.SMTP.RelayFrom = []string{"192.0.2.1/24"}
	c.Delivery.Smarthost.Host = "Relay.Example.net"
	c.DNS.Servers = []string{"::1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.SMTP.RelayFrom[0] != "192.0.2.0/24" || c.Delivery.Smarthost.Host != "relay.example.net" || c.DNS.Servers[0] != "[::1]:53" {
		t.Errorf("not normalised: %q %q %q", c.SMTP.RelayFrom, c.Delivery.Smarthost.Host, c.DNS.Servers)
	}
	c = Default()
	c.Delivery.Smarthost.Username = "u"
	c.Delivery.MaxConnectionsPerHost = 0
	err := c.Validate()
	wantErr(t, err, "delivery.max_connections_per_host: must be at least 1, not 0")
	wantErr(t, err, "delivery.smarthost.username: is set but delivery.smarthost.host is not")
}
