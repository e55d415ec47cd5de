package dnsx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	resolvConf = "/etc/resolv.conf"

	defaultTimeout  = 5 * time.Second
	defaultAttempts = 2

	// ednsSize is the UDP payload size we advertise: the value DNS Flag
	// Day 2020 settled on, large enough for ordinary MX and address sets
	// and small enough not to fragment. Larger replies come back truncated
	// and are asked again over TCP.
	ednsSize = 1232

	// maxCNAME bounds how many CNAME links one lookup follows, so a loop
	// or an absurd chain cannot keep a delivery worker busy.
	maxCNAME = 8
)

// errCNAMELoop reports a CNAME chain that loops or is longer than maxCNAME.
var errCNAMELoop = errors.New("CNAME chain loops or is too long")

// errBadName reports a name that cannot be a domain name at all.
var errBadName = errors.New("not a valid domain name")

// Options configures a Client.
type Options struct {
	// Servers are the name servers to ask, as "host:port" ("host" alone
	// means port 53). They are tried in order, the next one when a server
	// fails, times out or answers SERVFAIL/REFUSED. Empty means the
	// nameserver lines of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server (UDP and, after a truncated
	// reply, TCP each get this much). Zero means the resolv.conf timeout
	// when Servers is empty, otherwise 5 seconds. The context passed to a
	// lookup bounds the whole lookup.
	Timeout time.Duration
	// Attempts is how many times the whole server list is tried before a
	// lookup fails as Temporary. Zero means the resolv.conf value when
	// Servers is empty, otherwise 2.
	Attempts int
	// CacheMax, when positive, keeps positive answers for their TTL, at
	// most CacheMax: a relay asks the same MX and address records for
	// every message to a destination. Failures and empty answers are not
	// kept.
	CacheMax time.Duration
}

// Client is the Resolver that queries name servers with
// github.com/miekg/dns. Names are asked fully qualified and in lower case,
// with recursion desired: the servers are expected to be recursive
// resolvers (or, in tests, an authoritative server for the test zones).
// A Client is safe for concurrent use.
type Client struct {
	servers  []string
	timeout  time.Duration
	attempts int
	udp, tcp *dns.Client
	// confErr is set when no server list could be found; every lookup then
	// fails with it (as Temporary: the operator can fix the configuration
	// and the queued mail is still delivered).
	confErr error

	cacheMax time.Duration
	cacheMu  sync.Mutex
	cache    map[cacheKey]cached
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cached struct {
	rrs     []dns.RR
	expires time.Time
}

// cacheSize bounds the cache; when full it is emptied (simple, and a
// relay's working set of destinations is far smaller).
const cacheSize = 10000

var _ Resolver = (*Client)(nil)

// New returns a Client for opts. When opts.Servers is empty it reads
// /etc/resolv.conf; if that fails, New still returns a Client whose
// lookups all fail with the reason, so that a bad resolver configuration
// delays mail instead of stopping the server.
func New(opts Options) *Client {
	c := &Client{timeout: opts.Timeout, attempts: opts.Attempts, cacheMax: opts.CacheMax, cache: map[cacheKey]cached{}}
	for _, s := range opts.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(s, "53")
		}
		c.servers = append(c.servers, s)
	}
	if len(c.servers) == 0 {
		cfg, err := dns.ClientConfigFromFile(resolvConf)
		switch {
		case err != nil:
			c.confErr = fmt.Errorf("reading %s: %w", resolvConf, err)
		case len(cfg.Servers) == 0:
			c.confErr = fmt.Errorf("%s lists no nameserver", resolvConf)
		default:
			for _, s := range cfg.Servers {
				c.servers = append(c.servers, net.JoinHostPort(s, cfg.Port))
			}
			if c.timeout <= 0 && cfg.Timeout > 0 {
				c.timeout = time.Duration(cfg.Timeout) * time.Second
			}
			if c.attempts <= 0 && cfg.Attempts > 0 {
				c.attempts = cfg.Attempts
			}
		}
	}
	if c.timeout <= 0 {
		c.timeout = defaultTimeout
	}
	if c.attempts <= 0 {
		c.attempts = defaultAttempts
	}
	c.udp = &dns.Client{Net: "udp", Timeout: c.timeout, UDPSize: ednsSize}
	c.tcp = &dns.Client{Net: "tcp", Timeout: c.timeout}
	return c
}

// LookupMX implements Resolver. Records whose exchange is not a valid host
// name are dropped; if that leaves none, the error wraps ErrBadMX. An
// exchange of "." next to real hosts is dropped as well (RFC 7505 section
// 3 forbids mixing the null MX with others, and "." names no host); only
// when every record is "." is the null MX returned.
func (c *Client) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	rrs, err := c.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := []MX{}
	var null *MX
	for _, rr := range rrs {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		host := normalize(mx.Mx)
		if host == "." {
			if null == nil {
				null = &MX{Host: ".", Pref: mx.Preference}
			}
			continue
		}
		if !validHost(host) {
			continue
		}
		out = append(out, MX{Host: host, Pref: mx.Preference})
	}
	if len(out) == 0 && null != nil {
		return []MX{*null}, nil
	}
	if len(out) == 0 && len(rrs) > 0 {
		return nil, &Error{Name: domain, Err: ErrBadMX}
	}
	return out, nil
}

// LookupIP implements Resolver. The A and AAAA queries run in parallel.
// If one of them fails while the other finds addresses, those addresses
// are returned without error: delivery can use them now. If none is found
// and one query failed, its error is returned, because the failed family
// might have had addresses. An IP address given as host is returned as is,
// without a query.
func (c *Client) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	var (
		v4, v6       []dns.RR
		err4, err6   error
		wg           sync.WaitGroup
		addrs        = []netip.Addr{}
		appendAddrIP = func(ip net.IP) {
			if a, ok := netip.AddrFromSlice(ip); ok {
				addrs = append(addrs, a)
			}
		}
	)
	wg.Go(func() { v4, err4 = c.lookup(ctx, host, dns.TypeA) })
	v6, err6 = c.lookup(ctx, host, dns.TypeAAAA)
	wg.Wait()

	for _, rr := range v4 {
		if a, ok := rr.(*dns.A); ok {
			appendAddrIP(a.A.To4())
		}
	}
	for _, rr := range v6 {
		if a, ok := rr.(*dns.AAAA); ok {
			appendAddrIP(a.AAAA.To16())
		}
	}
	switch {
	case len(addrs) > 0:
		return addrs, nil
	case IsNotFound(err4):
		// NXDOMAIN is about the name, not the type: it settles the
		// question even if the other query failed.
		return nil, err4
	case IsNotFound(err6):
		return nil, err6
	case err4 != nil:
		return nil, err4
	case err6 != nil:
		return nil, err6
	}
	return addrs, nil
}

// lookup returns the records of type qtype for name, following CNAMEs.
// When the answer's CNAME chain ends at a name without records of qtype,
// that name is asked in turn, so the lookup also works against servers
// that do not chase out-of-zone CNAME targets themselves.
func (c *Client) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	if c.confErr != nil {
		return nil, &Error{Name: name, Err: c.confErr, Temporary: true}
	}
	target := dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(target); !ok || target == "." || len(target) > 254 {
		return nil, &Error{Name: name, Err: errBadName}
	}
	if c.cacheMax <= 0 {
		return c.resolve(ctx, name, target, qtype)
	}
	key := cacheKey{target, qtype}
	now := time.Now()
	c.cacheMu.Lock()
	e, ok := c.cache[key]
	c.cacheMu.Unlock()
	if ok && now.Before(e.expires) {
		return e.rrs, nil
	}
	rrs, err := c.resolve(ctx, name, target, qtype)
	if err == nil && len(rrs) > 0 {
		ttl := c.cacheMax
		for _, rr := range rrs {
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		}
		if ttl > 0 {
			c.cacheMu.Lock()
			if len(c.cache) >= cacheSize {
				clear(c.cache)
			}
			c.cache[key] = cached{rrs: rrs, expires: now.Add(ttl)}
			c.cacheMu.Unlock()
		}
	}
	return rrs, err
}

// resolve asks the servers for target's qtype records, following CNAMEs.
func (c *Client) resolve(ctx context.Context, name, target string, qtype uint16) ([]dns.RR, error) {
	for range maxCNAME {
		r, err := c.exchange(ctx, target, qtype)
		if err != nil {
			return nil, &Error{Name: name, Err: err, Temporary: true}
		}
		if r.Rcode == dns.RcodeNameError {
			// With a CNAME chain the rcode describes its last name
			// (RFC 6604 section 2.1), so NXDOMAIN means the mail
			// domain leads nowhere either way.
			return nil, &Error{Name: name, Err: ErrNotFound, NotFound: true}
		}
		rrs, end, err := follow(r.Answer, target, qtype)
		if err != nil {
			// Recursive resolvers answer SERVFAIL for CNAME loops; do
			// the same, a broken zone is usually repaired in time.
			return nil, &Error{Name: name, Err: err, Temporary: true}
		}
		if len(rrs) > 0 || end == target {
			return rrs, nil
		}
		target = end
	}
	return nil, &Error{Name: name, Err: errCNAMELoop, Temporary: true}
}

// follow walks the CNAME chain in answer from qname and returns the
// records of type qtype owned by the chain's last name, and that name.
// Records owned by other names are ignored: a server has no business
// answering for them (RFC 2181 section 5.4.1 ranks such data lowest).
func follow(answer []dns.RR, qname string, qtype uint16) ([]dns.RR, string, error) {
	name := qname
	for hops := 0; ; hops++ {
		var rrs []dns.RR
		next := ""
		for _, rr := range answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, name) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				rrs = append(rrs, rr)
			case h.Rrtype == dns.TypeCNAME && next == "":
				next = dns.Fqdn(strings.ToLower(rr.(*dns.CNAME).Target))
			}
		}
		if len(rrs) > 0 || next == "" {
			return rrs, name, nil
		}
		if hops >= maxCNAME || next == qname {
			return nil, "", errCNAMELoop
		}
		name = next
	}
}

// exchange asks the servers for qname/qtype until one gives a usable
// answer (NOERROR or NXDOMAIN), trying the whole list c.attempts times.
func (c *Client) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)

	var lastErr error
	for range c.attempts {
		for _, srv := range c.servers {
			if err := ctx.Err(); err != nil {
				if lastErr != nil {
					return nil, fmt.Errorf("%w (last: %v)", err, lastErr)
				}
				return nil, err
			}
			r, err := c.exchangeOne(ctx, c.udp, m, srv)
			if err == nil && r.Truncated {
				// The full answer did not fit in a datagram: ask again
				// over TCP (RFC 1035 section 4.2.2, RFC 7766 section 5).
				r, err = c.exchangeOne(ctx, c.tcp, m, srv)
			}
			if err != nil {
				lastErr = fmt.Errorf("%s: %w", srv, err)
				continue
			}
			if r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError {
				return r, nil
			}
			// SERVFAIL, REFUSED and the rest: this server cannot answer
			// now; another one might.
			lastErr = fmt.Errorf("%s: %s", srv, dns.RcodeToString[r.Rcode])
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no name server to ask")
	}
	return nil, lastErr
}

// exchangeOne sends m to srv once with cl and waits at most c.timeout
// (less if ctx ends sooner) for the reply.
func (c *Client) exchangeOne(ctx context.Context, cl *dns.Client, m *dns.Msg, srv string) (*dns.Msg, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	co, err := cl.DialContext(ctx, srv)
	if err != nil {
		return nil, err
	}
	defer co.Close()
	// miekg/dns honours the context's deadline but not its cancellation;
	// closing the connection ends a read blocked on a cancelled lookup.
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	r, _, err := cl.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		// Say so when the caller's context ended the wait, so the caller
		// can tell its own deadline from a slow server. The read deadline
		// can fire a moment before the context's timer, hence the clock.
		if perr := parent.Err(); perr != nil {
			return nil, fmt.Errorf("%w: %v", perr, err)
		}
		if dl, ok := parent.Deadline(); ok && !time.Now().Before(dl) {
			return nil, fmt.Errorf("%w: %v", context.DeadlineExceeded, err)
		}
		return nil, err
	}
	// The ID already matches (miekg/dns checks it); check the question
	// as well so a stray or forged reply is not taken for our answer.
	q := m.Question[0]
	if len(r.Question) != 1 || r.Question[0].Qtype != q.Qtype || !strings.EqualFold(r.Question[0].Name, q.Name) {
		return nil, errors.New("reply does not match the query")
	}
	return r, nil
}

// serverList returns the servers a Client asks, for tests.
func (c *Client) serverList() []string { return slices.Clone(c.servers) }
