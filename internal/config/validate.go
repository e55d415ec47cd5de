package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
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
	if !validDelimiter(c.RecipientDelimiter) {
		v.errorf("recipient_delimiter", nil, `invalid delimiter %q: use one punctuation character allowed in addresses, such as "+" or "-", or "" to turn plus-addressing off`, c.RecipientDelimiter)
	}

	v.check(slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level),
		"log.level", "invalid level %q (use debug, info, warn or error)", c.Log.Level)
	v.check(c.Log.Format == "text" || c.Log.Format == "json",
		"log.format", "invalid format %q (use text or json)", c.Log.Format)

	c.validateSMTP(v)
	c.validateTLS(v)
	c.validateQueue(v)
	c.validateDelivery(v)
	c.validateDNS(v)
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
	c.validateRelayFrom(v)
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
	noUsers := map[string]bool{}  // canonical names of domains given no users
	for _, k := range v.inFileOrder("domains", sortedKeys(c.Domains)) {
		key := joinKey([]string{"domains", k})
		name, err := normalizeDomain(k)
		if err != nil {
			v.errorf(key, nil, "%v", err)
			continue
		}
		if first, dup := origin[name]; dup {
			v.errorf(key, nil, "%q is the same domain as %q", k, first)
			continue
		}
		origin[name] = k
		noUsers[name] = len(c.Domains[k].Users) == 0
		domains[name] = c.validateDomain(v, k, c.Domains[k])
	}
	c.Domains = domains

	aliases := make(map[string][]string, len(c.Aliases))
	aliasOrigin := map[string]string{}
	for _, k := range v.inFileOrder("aliases", sortedKeys(c.Aliases)) {
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
			v.errorf(key, nil, "%q is the same alias as %q", k, first)
			continue
		}
		aliasOrigin[addr] = k
		targets := c.Aliases[k]
		if len(targets) == 0 {
			v.errorf(key, nil, "must list at least one target address")
			continue
		}
		out := make([]string, 0, len(targets))
		seen := make(map[string]bool, len(targets))
		for i, t := range targets {
			tkey := index(key, i)
			n, err := normalizeAddress(t)
			if err != nil {
				v.errorf(tkey, []string{key}, "%v", err)
				continue
			}
			if seen[n] {
				v.errorf(tkey, []string{key}, "%q is listed twice", n)
				continue
			}
			seen[n] = true
			out = append(out, n)
		}
		aliases[addr] = out
	}
	if c.Aliases != nil {
		c.Aliases = aliases
	}

	// With every name known, check that local addresses lead somewhere,
	// by the rules internal/policy applies when it expands an address.
	r := newResolver(c)
	hasAlias := map[string]bool{}
	for a := range aliases {
		_, d, _ := strings.Cut(a, "@")
		hasAlias[d] = true
	}
	for _, name := range sortedKeys(domains) {
		d := domains[name]
		key := joinKey([]string{"domains", origin[name]})
		// Judge by the users given, not the valid ones: a domain whose only
		// user is misspelt has one error, not two.
		if noUsers[name] && !d.AcceptAnyUser && d.CatchAll == "" && !hasAlias[name] {
			v.errorf(key, nil, "domain %q accepts no mail: give it users, aliases, a catch_all, or accept_any_user = true", name)
		}
		if d.CatchAll == "" {
			continue
		}
		// The catch-all is expanded one level down, like an alias target,
		// and so never falls back on a catch-all itself.
		ckey := key + ".catch_all"
		if alias, ok := r.aliasOf(d.CatchAll); ok {
			if 1+r.hops(alias) > maxAliasDepth {
				v.errorf(ckey, nil, "%q leads to aliases that loop or nest more than %d deep", d.CatchAll, maxAliasDepth)
			}
		} else if !r.isMailbox(d.CatchAll) {
			v.errorf(ckey, nil, "%q is neither a user nor an alias of its local domain", d.CatchAll)
		}
	}
	for _, a := range sortedKeys(aliases) {
		key := joinKey([]string{"aliases", aliasOrigin[a]})
		if r.hops(a) > maxAliasDepth {
			v.errorf(key, nil, "aliases from here loop or nest more than %d deep", maxAliasDepth)
		}
		for i, t := range aliases[a] {
			if _, ok := r.aliasOf(t); !ok && !r.isMailbox(t) {
				// A catch-all does not apply here: an alias target that
				// does not exist is a typo, not mail for the catch-all.
				v.errorf(index(key, i), []string{key}, "%q is neither a user nor an alias of its local domain", t)
			}
		}
	}
}

// maxAliasDepth is how many alias expansions internal/policy follows for one
// recipient before it gives up; a longer chain, or a loop, is refused here
// so that it is reported with its line rather than at start-up.
const maxAliasDepth = 10

// resolver answers, over the normalised domains and aliases, the questions
// internal/policy's expansion asks: is this local address an alias, a
// mailbox, and how deep do its aliases go. It uses sets and memoises depths,
// so large lists cost linear time.
type resolver struct {
	c     *Config
	users map[string]bool // "user@domain"
	depth map[string]int  // alias key -> hops; inProgress while being computed
}

// inProgress marks an alias whose depth is being computed: meeting it again
// means a loop.
const inProgress = -1

func newResolver(c *Config) *resolver {
	r := &resolver{c: c, users: map[string]bool{}, depth: map[string]int{}}
	for name, d := range c.Domains {
		for _, u := range d.Users {
			r.users[u+"@"+name] = true
		}
	}
	return r
}

// split returns the lower-cased local part of addr, its part before the
// recipient delimiter (the whole when there is none, or when the delimiter
// comes first, as internal/policy does), and the domain.
func (r *resolver) split(addr string) (lower, base, domain string) {
	local, domain, _ := strings.Cut(addr, "@")
	lower = strings.ToLower(local)
	base = lower
	if d := r.c.RecipientDelimiter; d != "" {
		if i := strings.Index(lower, d); i > 0 {
			base = lower[:i]
		}
	}
	return lower, base, domain
}

// aliasOf returns the alias key that addr expands through: the exact one,
// else the one without the detail after the delimiter.
func (r *resolver) aliasOf(addr string) (string, bool) {
	lower, base, domain := r.split(addr)
	if _, local := r.c.Domains[domain]; !local {
		return "", false
	}
	for _, k := range []string{lower + "@" + domain, base + "@" + domain} {
		if _, ok := r.c.Aliases[k]; ok {
			return k, true
		}
	}
	return "", false
}

// isMailbox reports whether addr, which is not an alias, is delivered: it
// is remote, or a user of its local domain, or the domain takes any safe
// name.
func (r *resolver) isMailbox(addr string) bool {
	_, base, domain := r.split(addr)
	d, local := r.c.Domains[domain]
	if !local {
		return true
	}
	return r.users[base+"@"+domain] || d.AcceptAnyUser && checkMailbox(base, "") == nil
}

// hops returns how many alias expansions the longest chain from alias key
// takes, or more than maxAliasDepth for a loop.
func (r *resolver) hops(key string) int {
	switch h, ok := r.depth[key]; {
	case ok && h == inProgress:
		return maxAliasDepth + 1
	case ok:
		return h
	}
	r.depth[key] = inProgress
	h := 1
	for _, t := range r.c.Aliases[key] {
		if next, ok := r.aliasOf(t); ok {
			// Cap so that a long chain cannot overflow the count.
			h = max(h, min(1+r.hops(next), maxAliasDepth+1))
		}
	}
	r.depth[key] = h
	return h
}

// validateDomain checks one domain, written as key in the file, and returns
// it normalised.
func (c *Config) validateDomain(v *validator, name string, d Domain) Domain {
	key := joinKey([]string{"domains", name})
	var users []string // stays nil for none, as in Default
	seen := make(map[string]bool, len(d.Users))
	for i, u := range d.Users {
		ukey := index(key+".users", i)
		u = asciiLower(u)
		delim := c.RecipientDelimiter
		if !validDelimiter(delim) {
			delim = "" // reported once, at recipient_delimiter
		}
		if err := checkMailbox(u, delim); err != nil {
			v.errorf(ukey, []string{key + ".users", key}, "%v", err)
			continue
		}
		if seen[u] {
			v.errorf(ukey, []string{key + ".users", key}, "user %q is listed twice", u)
			continue
		}
		seen[u] = true
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

// inFileOrder orders the keys of the table at prefix as the file lists
// them (keys not in the file last, by name), so that of two spellings of
// one name the later one is reported as the duplicate.
func (v *validator) inFileOrder(prefix string, keys []string) []string {
	if v.doc == nil {
		return keys
	}
	lines := make(map[string]int, len(keys))
	for _, k := range keys {
		lines[k] = math.MaxInt
		if l := v.doc.line(joinKey([]string{prefix, k})); l > 0 {
			lines[k] = l
		}
	}
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(lines[a], lines[b]) })
	return keys
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

// validDelimiter accepts "" or one atext punctuation character other than
// the dot: a letter or digit would split ordinary names, and a dot already
// means something in local parts.
func validDelimiter(d string) bool {
	return d == "" || len(d) == 1 && !isAlnum(d[0]) && d[0] != '.' && isAtext(d[0])
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
