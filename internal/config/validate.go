package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Validate checks every setting of c and reports all problems it finds, as
// one error of joined *Error values. It also puts names into canonical form
// in place: the hostname, domain keys and address domains become lower-case
// A-labels, user names and alias keys lower case. Parse calls it; call it
// yourself on a Config built or changed in code. When it fails, c may be
// partly normalised.
func (c *Config) Validate() error {
	return c.validate(nil)
}

// validator collects problems; doc, when not nil, locates them in the file.
type validator struct {
	doc  *document
	errs []*Error
}

// errorf records a problem with key. The line is that of the first of key
// and alsoAt that the file sets: a limit that conflicts with a default is
// reported where the file set the other side of the conflict.
func (v *validator) errorf(key string, alsoAt []string, format string, args ...any) {
	e := &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
	if v.doc != nil {
		e.File = v.doc.file
		e.Line = v.doc.line(key)
		for _, k := range alsoAt {
			if e.Line > 0 {
				break
			}
			e.Line = v.doc.line(k)
		}
	}
	v.errs = append(v.errs, e)
}

func (v *validator) check(ok bool, key, format string, args ...any) {
	if !ok {
		v.errorf(key, nil, format, args...)
	}
}

func (c *Config) validate(doc *document) error {
	v := &validator{doc: doc}

	if h, err := normalizeDomain(c.Hostname); err != nil {
		v.errorf("hostname", nil, "%v", err)
	} else {
		c.Hostname = h
	}
	v.check(c.DataDir != "", "data_dir", "must not be empty")
	v.check(!strings.ContainsRune(c.DataDir, 0), "data_dir", "must not contain a NUL byte")
	if d := c.RecipientDelimiter; d != "" && (len(d) != 1 || isAlnum(d[0]) || d == "." || !isAtext(d[0])) {
		v.errorf("recipient_delimiter", nil, `invalid delimiter %q: use one punctuation character allowed in addresses, such as "+" or "-", or "" to turn plus-addressing off`, d)
	}

	v.check(slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level),
		"log.level", "invalid level %q (use debug, info, warn or error)", c.Log.Level)
	v.check(c.Log.Format == "text" || c.Log.Format == "json",
		"log.format", "invalid format %q (use text or json)", c.Log.Format)

	c.validateSMTP(v)
	c.validateTLS(v)
	c.validateQueue(v)
	c.validateDomains(v)
	return joinErrors(v.errs)
}

func (c *Config) validateSMTP(v *validator) {
	s := &c.SMTP
	v.check(len(s.Listen) > 0, "smtp.listen", "must list at least one address")
	seen := map[string]int{}
	for i, l := range s.Listen {
		key := index("smtp.listen", i)
		id, err := checkListen(l)
		if err != nil {
			v.errorf(key, []string{"smtp.listen"}, "%v", err)
			continue
		}
		if j, dup := seen[id]; dup {
			v.errorf(key, []string{"smtp.listen"}, "%q is the same socket as %q", l, s.Listen[j])
			continue
		}
		if !strings.HasSuffix(id, ":0") {
			seen[id] = i
		}
	}
	v.check(s.MaxMessageSize >= 1024, "smtp.max_message_size", "must be at least 1KiB, not %d bytes", int64(s.MaxMessageSize))
	// RFC 5321 4.5.3.1.8: a server MUST accept at least 100 recipients.
	v.check(s.MaxRecipients >= 100, "smtp.max_recipients", "must be at least 100 (RFC 5321 4.5.3.1.8 requires accepting 100 recipients), not %d", s.MaxRecipients)
	v.check(s.MaxReceivedHeaders >= 1, "smtp.max_received_headers", "must be at least 1, not %d", s.MaxReceivedHeaders)
	v.check(s.MaxConnections >= 1, "smtp.max_connections", "must be at least 1, not %d", s.MaxConnections)
	switch {
	case s.MaxConnectionsPerIP < 1:
		v.errorf("smtp.max_connections_per_ip", nil, "must be at least 1, not %d", s.MaxConnectionsPerIP)
	case s.MaxConnections >= 1 && s.MaxConnectionsPerIP > s.MaxConnections:
		v.errorf("smtp.max_connections_per_ip", []string{"smtp.max_connections"},
			"%d is more than smtp.max_connections (%d)", s.MaxConnectionsPerIP, s.MaxConnections)
	}
	v.check(s.MaxErrors >= 1, "smtp.max_errors", "must be at least 1, not %d", s.MaxErrors)
	v.check(s.CommandTimeout > 0, "smtp.command_timeout", "must be positive, not %s", s.CommandTimeout)
	v.check(s.DataTimeout > 0, "smtp.data_timeout", "must be positive, not %s", s.DataTimeout)
}

// checkListen accepts host:port with a numeric port, and a host that needs
// no DNS: empty (every address), "localhost", or an IP literal. It returns
// an identity for the socket, so that two spellings of one socket are
// caught: Go listens on both IPv4 and IPv6 for each of "", "0.0.0.0" and
// "::", so all three are the same wildcard.
func checkListen(l string) (string, error) {
	host, port, err := net.SplitHostPort(l)
	if err != nil {
		return "", fmt.Errorf("invalid address %q: want host:port, such as \"0.0.0.0:25\" or \"[::1]:25\"", l)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("invalid address %q: port %q is not a number from 0 to 65535", l, port)
	}
	id := host
	if host != "" && host != "localhost" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return "", fmt.Errorf("invalid address %q: host must be an IP address, \"localhost\" or empty, not a name to look up", l)
		}
		id = a.String()
		if a.IsUnspecified() {
			id = ""
		}
	}
	return id + ":" + strconv.FormatUint(p, 10), nil
}

func (c *Config) validateTLS(v *validator) {
	t := &c.TLS
	switch {
	case t.Cert != "" && t.Key == "":
		v.errorf("tls.cert", nil, "is set but tls.key is not: set both, or neither for a self-signed certificate")
	case t.Cert == "" && t.Key != "":
		v.errorf("tls.key", nil, "is set but tls.cert is not: set both, or neither for a self-signed certificate")
	}
	// With STARTTLS disabled the files are never read, so their absence
	// must not stop the server; this lets TLS be switched off for a while
	// without deleting the paths.
	if t.Disable {
		return
	}
	for _, f := range []struct{ key, path string }{{"tls.cert", t.Cert}, {"tls.key", t.Key}} {
		if f.path == "" {
			continue
		}
		if err := checkReadable(f.path); err != nil {
			v.errorf(f.key, nil, "%v", err)
		}
	}
}

// checkReadable makes sure a file the server will read at start is there
// and readable now, so that check-config and a reload catch it. It refuses
// anything but a regular file: opening a FIFO would block.
func checkReadable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot use %q: %v", path, pathErr(err))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("cannot use %q: not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read %q: %v", path, pathErr(err))
	}
	return f.Close()
}

// pathErr drops the operation and path from an *fs.PathError, which the
// message around it already names.
func pathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (c *Config) validateQueue(v *validator) {
	q := &c.Queue
	v.check(q.Workers >= 1, "queue.workers", "must be at least 1, not %d", q.Workers)
	v.check(len(q.RetryIntervals) > 0, "queue.retry_intervals", "must list at least one interval")
	for i, d := range q.RetryIntervals {
		if d <= 0 {
			v.errorf(index("queue.retry_intervals", i), []string{"queue.retry_intervals"}, "must be positive, not %s", d)
		}
	}
	v.check(q.MaxLifetime > 0, "queue.max_lifetime", "must be positive, not %s", q.MaxLifetime)
}

// validateDomains checks and normalises Domains and Aliases together: an
// alias key must be in a local domain, and a local address an alias points
// to must lead somewhere.
func (c *Config) validateDomains(v *validator) {
	domains := make(map[string]Domain, len(c.Domains))
	origin := map[string]string{} // canonical name -> key as written, for lines
	for _, k := range sortedKeys(c.Domains) {
		key := joinKey([]string{"domains", k})
		name, err := normalizeDomain(k)
		if err != nil {
			v.errorf(key, nil, "%v", err)
			continue
		}
		if first, dup := origin[name]; dup {
			v.errorf(key, nil, "domain %q is also configured as %q", name, first)
			continue
		}
		origin[name] = k
		domains[name] = c.validateDomain(v, k, c.Domains[k])
	}
	c.Domains = domains

	aliases := make(map[string][]string, len(c.Aliases))
	aliasOrigin := map[string]string{}
	for _, k := range sortedKeys(c.Aliases) {
		key := joinKey([]string{"aliases", k})
		addr, err := normalizeAddress(k)
		if err != nil {
			v.errorf(key, nil, "%v", err)
			continue
		}
		// Lower-case the local part as address.Addr.Key does for lookups.
		local, domain, _ := strings.Cut(addr, "@")
		addr = strings.ToLower(local) + "@" + domain
		if _, ok := domains[domain]; !ok {
			v.errorf(key, nil, "%q is not in a local domain (add [domains.%s] or remove the alias)", addr, keyPart(domain))
			continue
		}
		if first, dup := aliasOrigin[addr]; dup {
			v.errorf(key, nil, "alias %q is also configured as %q", addr, first)
			continue
		}
		aliasOrigin[addr] = k
		targets := c.Aliases[k]
		if len(targets) == 0 {
			v.errorf(key, nil, "must list at least one target address")
			continue
		}
		out := make([]string, 0, len(targets))
		for i, t := range targets {
			tkey := index(key, i)
			n, err := normalizeAddress(t)
			if err != nil {
				v.errorf(tkey, []string{key}, "%v", err)
				continue
			}
			if slices.Contains(out, n) {
				v.errorf(tkey, []string{key}, "%q is listed twice", n)
				continue
			}
			out = append(out, n)
		}
		aliases[addr] = out
	}
	if c.Aliases != nil {
		c.Aliases = aliases
	}

	// With every name known, check that local addresses lead somewhere.
	hasAlias := map[string]bool{}
	for a := range aliases {
		_, d, _ := strings.Cut(a, "@")
		hasAlias[d] = true
	}
	for _, name := range sortedKeys(domains) {
		d := domains[name]
		key := joinKey([]string{"domains", origin[name]})
		if len(d.Users) == 0 && !d.AcceptAnyUser && d.CatchAll == "" && !hasAlias[name] {
			v.errorf(key, nil, "domain %q accepts no mail: give it users, aliases, a catch_all, or accept_any_user = true", name)
		}
		if d.CatchAll == "" {
			continue
		}
		ckey := key + ".catch_all"
		if d.AcceptAnyUser {
			v.errorf(ckey, nil, "has no effect: accept_any_user = true makes every local part a mailbox")
		} else if !c.leadsSomewhere(d.CatchAll, false) {
			v.errorf(ckey, nil, "%q is neither a user nor an alias of its local domain", d.CatchAll)
		}
	}
	for _, a := range sortedKeys(aliases) {
		key := joinKey([]string{"aliases", aliasOrigin[a]})
		for i, t := range aliases[a] {
			if !c.leadsSomewhere(t, true) {
				v.errorf(index(key, i), []string{key}, "%q is neither a user nor an alias of its local domain, and the domain has no catch_all", t)
			}
		}
	}
}

// validateDomain checks one domain, written as key in the file, and returns
// it normalised.
func (c *Config) validateDomain(v *validator, name string, d Domain) Domain {
	key := joinKey([]string{"domains", name})
	users := make([]string, 0, len(d.Users))
	for i, u := range d.Users {
		ukey := index(key+".users", i)
		u = asciiLower(u)
		if err := checkMailbox(u, c.RecipientDelimiter); err != nil {
			v.errorf(ukey, []string{key + ".users", key}, "%v", err)
			continue
		}
		if slices.Contains(users, u) {
			v.errorf(ukey, []string{key + ".users", key}, "user %q is listed twice", u)
			continue
		}
		users = append(users, u)
	}
	d.Users = users
	if d.CatchAll != "" {
		n, err := normalizeAddress(d.CatchAll)
		if err != nil {
			v.errorf(key+".catch_all", []string{key}, "%v", err)
			d.CatchAll = ""
		} else {
			d.CatchAll = n
		}
	}
	return d
}

// leadsSomewhere reports whether mail to addr would be delivered: true for
// a remote address; for a local one, when the local part (or its part
// before the recipient delimiter) is a user or an alias, or the domain
// takes any user, or, if viaCatchAll, has a catch-all. A catch_all itself
// must not count on the catch-all, or it would point at itself.
func (c *Config) leadsSomewhere(addr string, viaCatchAll bool) bool {
	local, domain, _ := strings.Cut(addr, "@")
	d, ok := c.Domains[domain]
	if !ok || d.AcceptAnyUser || (viaCatchAll && d.CatchAll != "") {
		return true
	}
	local = strings.ToLower(local)
	names := []string{local}
	if c.RecipientDelimiter != "" {
		if base, _, ok := strings.Cut(local, c.RecipientDelimiter); ok {
			names = append(names, base)
		}
	}
	for _, n := range names {
		if slices.Contains(d.Users, n) {
			return true
		}
		if _, ok := c.Aliases[n+"@"+domain]; ok {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// asciiLower lower-cases A-Z only. strings.ToLower would turn the Kelvin
// sign into "k" and so let a look-alike through as a plain ASCII name.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
