package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file checks the settings of relaying: who may relay through us
// (smtp.relay_from), how we deliver to other servers ([delivery]) and whom
// we ask for their addresses ([dns]).

// defaultSmarthostPort is the submission port (RFC 6409 3.1), where a
// provider's relay normally takes authenticated mail with STARTTLS.
const defaultSmarthostPort = 587

// defaultDNSPort is where a resolver listens when a server entry gives no
// port.
const defaultDNSPort = 53

// RelayNetworks returns smtp.relay_from as prefixes, for matching the
// address of an SMTP client. Call it on a validated Config; an entry that
// does not parse is left out, which can only trust fewer clients. The
// prefixes are IPv4 for IPv4 networks, so unmap the client's address first
// (netip.Addr.Unmap): Go reports an IPv4 client of a dual-stack listener as
// ::ffff:a.b.c.d.
func (c *Config) RelayNetworks() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.SMTP.RelayFrom))
	for _, s := range c.SMTP.RelayFrom {
		if p, err := parseRelayNetwork(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// HeloName returns the name to give in EHLO when delivering:
// delivery.helo_name, or the hostname when that is not set.
func (c *Config) HeloName() string {
	if c.Delivery.HeloName != "" {
		return c.Delivery.HeloName
	}
	return c.Hostname
}

// relayNetworkHint says what a relay_from entry looks like.
const relayNetworkHint = `(want a CIDR prefix such as "10.0.0.0/8" or "2001:db8::/32", or one IP address such as "192.0.2.7")`

// parseRelayNetwork reads a relay_from entry: a CIDR prefix, or one address,
// which is a prefix of full length. The result is masked ("10.1.2.3/8" is
// 10.0.0.0/8) so that its String is the canonical spelling, and an
// IPv4-mapped IPv6 prefix becomes the IPv4 prefix it covers, so that one
// network has one form however it is written.
func parseRelayNetwork(s string) (netip.Prefix, error) {
	addr, bits, hasBits := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid network %q: %q is not an IP address %s", s, addr, relayNetworkHint)
	}
	if a.Zone() != "" {
		// Prefixes carry no zone, so a zoned entry could never match.
		return netip.Prefix{}, fmt.Errorf("invalid network %q: leave out the IPv6 zone %q", s, "%"+a.Zone())
	}
	n := a.BitLen()
	if hasBits {
		// ParseUint refuses signs and spaces; a length must be plain digits.
		b, err := strconv.ParseUint(bits, 10, 8)
		if err != nil || int(b) > a.BitLen() {
			return netip.Prefix{}, fmt.Errorf("invalid network %q: the prefix length must be a number from 0 to %d", s, a.BitLen())
		}
		n = int(b)
	}
	p := netip.PrefixFrom(a, n).Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

// dnsServerHint says what a dns.servers entry looks like.
const dnsServerHint = `(want an IP address, with a port when it is not 53: "192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:5353"; names are refused, since looking them up would need DNS)`

// parseDNSServer reads a dns.servers entry, "ip" or "ip:port" (IPv6 with a
// port in brackets), and gives it port 53 when it has none.
func parseDNSServer(s string) (netip.AddrPort, error) {
	var ap netip.AddrPort
	if a, err := netip.ParseAddr(s); err == nil {
		ap = netip.AddrPortFrom(a, defaultDNSPort)
	} else if ap, err = netip.ParseAddrPort(s); err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid server %q %s", s, dnsServerHint)
	}
	if ap.Addr().IsUnspecified() {
		// Linux would quietly send to this host, which is rarely meant.
		return netip.AddrPort{}, fmt.Errorf("invalid server %q: %s is no server's address", s, ap.Addr())
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("invalid server %q: port 0 cannot be sent to", s)
	}
	return ap, nil
}

// normalizeRemoteHost checks a host to connect to that the administrator
// wrote: a domain name, returned canonical, or an IP address, returned in
// its standard form. Brackets and ports are refused with a hint, as they
// belong elsewhere.
func normalizeRemoteHost(h, portKey string) (string, error) {
	if a, err := netip.ParseAddr(h); err == nil {
		if a.IsUnspecified() {
			return "", fmt.Errorf("%q is no host's address", h)
		}
		return a.String(), nil
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		if _, err := netip.ParseAddr(h[1 : len(h)-1]); err == nil {
			return "", fmt.Errorf("write the address %q without brackets", h)
		}
	}
	if _, port, err := net.SplitHostPort(h); err == nil && isDigits(port) {
		return "", fmt.Errorf("%q has a port: give only the host, and the port in %s", h, portKey)
	}
	return normalizeDomain(h)
}

// checkPort reports a TCP port to connect to that is out of range.
func (v *validator) checkPort(key string, p int) {
	v.check(p >= 1 && p <= 65535, key, "must be a port from 1 to 65535, not %d", p)
}

// checkAuthText checks a username or password for AUTH PLAIN, whose fields
// are UTF-8 without NUL (RFC 4616 2): NUL separates the fields on the wire.
func checkAuthText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("must be valid UTF-8")
	}
	if strings.ContainsRune(s, 0) {
		return errors.New("must not contain a NUL character (AUTH PLAIN uses it as a separator)")
	}
	return nil
}

// validateRelayFrom checks and normalises smtp.relay_from.
func (c *Config) validateRelayFrom(v *validator) {
	const key = "smtp.relay_from"
	if c.SMTP.RelayFrom == nil {
		return
	}
	out := make([]string, 0, len(c.SMTP.RelayFrom))
	seen := make(map[netip.Prefix]string, len(c.SMTP.RelayFrom))
	for i, s := range c.SMTP.RelayFrom {
		p, err := parseRelayNetwork(s)
		if err != nil {
			v.errorf(index(key, i), []string{key}, "%v", err)
			continue
		}
		if first, dup := seen[p]; dup {
			v.errorf(index(key, i), []string{key}, "%q is the same network as %q", s, first)
			continue
		}
		seen[p] = s
		out = append(out, p.String())
	}
	c.SMTP.RelayFrom = out
}

func (c *Config) validateDelivery(v *validator) {
	d := &c.Delivery
	v.checkPort("delivery.port", d.Port)
	if d.HeloName != "" {
		if n, err := normalizeDomain(d.HeloName); err != nil {
			v.errorf("delivery.helo_name", nil, "%v", err)
		} else {
			d.HeloName = n
		}
	}
	v.check(d.ConnectTimeout > 0, "delivery.connect_timeout", "must be positive, not %s", d.ConnectTimeout)
	v.check(d.CommandTimeout > 0, "delivery.command_timeout", "must be positive, not %s", d.CommandTimeout)
	v.check(d.MaxConnections >= 1, "delivery.max_connections", "must be at least 1, not %d", d.MaxConnections)
	switch {
	case d.MaxConnectionsPerHost < 1:
		v.errorf("delivery.max_connections_per_host", nil, "must be at least 1, not %d", d.MaxConnectionsPerHost)
	case d.MaxConnections >= 1 && d.MaxConnectionsPerHost > d.MaxConnections:
		v.errorf("delivery.max_connections_per_host", []string{"delivery.max_connections"},
			"%d is more than delivery.max_connections (%d)", d.MaxConnectionsPerHost, d.MaxConnections)
	}
	v.check(d.DelayNotice >= 0, "delivery.delay_notice", `must not be negative ("0s" sends no delay notices), not %s`, d.DelayNotice)
	c.validateSmarthost(v)
}

func (c *Config) validateSmarthost(v *validator) {
	s := &c.Delivery.Smarthost
	const p = "delivery.smarthost."
	if s.Host == "" {
		// Without a host the other keys do nothing. One set alone is most
		// likely a host forgotten or commented out, and mail would then go
		// by MX, past the relay the administrator meant to use.
		unused := func(set bool, name string) {
			if set {
				v.errorf(p+name, []string{"delivery.smarthost"}, "is set but %shost is not: set the host, or remove this key", p)
			}
		}
		unused(s.Port != defaultSmarthostPort, "port")
		unused(s.TLS != SmarthostTLSRequired, "tls")
		unused(s.Username != "", "username")
		unused(s.Password != "", "password")
		return
	}
	if h, err := normalizeRemoteHost(s.Host, p+"port"); err != nil {
		v.errorf(p+"host", []string{"delivery.smarthost"}, "%v", err)
	} else {
		s.Host = h
	}
	v.checkPort(p+"port", s.Port)
	tlsOK := s.TLS == SmarthostTLSRequired || s.TLS == SmarthostTLSOpportunistic || s.TLS == SmarthostTLSImplicit
	if !tlsOK {
		v.errorf(p+"tls", []string{"delivery.smarthost"}, `invalid value %q (use "required", "opportunistic" or "implicit")`, s.TLS)
	}
	for _, f := range []struct{ name, val string }{{"username", s.Username}, {"password", s.Password}} {
		if err := checkAuthText(f.val); err != nil {
			v.errorf(p+f.name, []string{"delivery.smarthost"}, "%v", err)
		}
	}
	switch {
	case s.Username != "" && s.Password == "":
		v.errorf(p+"username", []string{"delivery.smarthost"}, "is set but %spassword is not: set both for AUTH PLAIN, or neither", p)
	case s.Username == "" && s.Password != "":
		v.errorf(p+"password", []string{"delivery.smarthost"}, "is set but %susername is not: set both for AUTH PLAIN, or neither", p)
	case s.Username != "" && s.TLS == SmarthostTLSOpportunistic:
		// Opportunistic TLS falls back to plain text, and an active
		// attacker can force that by stripping STARTTLS from the EHLO
		// reply; a password must not depend on the attacker's goodwill.
		v.errorf(p+"username", []string{p + "tls", "delivery.smarthost"},
			`AUTH needs tls = "required" or "implicit": with "opportunistic" the password could be sent in clear`)
	}
}

func (c *Config) validateDNS(v *validator) {
	d := &c.DNS
	const key = "dns.servers"
	if d.Servers != nil {
		out := make([]string, 0, len(d.Servers))
		seen := make(map[netip.AddrPort]string, len(d.Servers))
		for i, s := range d.Servers {
			ap, err := parseDNSServer(s)
			if err != nil {
				v.errorf(index(key, i), []string{key}, "%v", err)
				continue
			}
			if first, dup := seen[ap]; dup {
				v.errorf(index(key, i), []string{key}, "%q is the same server as %q", s, first)
				continue
			}
			seen[ap] = s
			out = append(out, ap.String())
		}
		d.Servers = out
	}
	v.check(d.Timeout > 0, "dns.timeout", "must be positive, not %s", d.Timeout)
}
