// Package remote owns delivery to recipients that are not ours: it finds
// the server responsible for each recipient domain (MX routing as RFC 5321
// section 5 describes it, or a configured smarthost), runs one SMTP
// transaction per domain through internal/smtpclient, turns the replies
// into per-recipient results (Delivered, Failed, Pending), limits the
// number of connections in total and per destination, and keeps idle
// connections for a while so that the next message to the same host does
// not pay for a new connection, greeting and TLS handshake.
//
// It decides nothing about retries or bounces: a Pending result is retried
// by the queue, a Failed one is bounced by it.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/dnsx"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/smtpclient"
)

// Reply and enhanced status codes this package needs that internal/smtp's
// table does not have (yet).
const (
	// codeDomainNoMail is the reply code for a domain that does not accept
	// mail (RFC 7504 section 3), used for the null MX (RFC 7505 section 4.1).
	codeDomainNoMail = 556
	// eBadDestSystem: the destination domain does not exist (RFC 3463 3.2, X.1.2).
	eBadDestSystem = "5.1.2"
	// eNullMX: the domain publishes a null MX (RFC 7505 section 4.1, X.1.10).
	eNullMX = "5.1.10"
	// eNoAnswer: no answer from the host (RFC 3463 3.5, X.4.1).
	eNoAnswer = "4.4.1"
	// eTempRouting: routing server (DNS) failure (RFC 3463 3.5, X.4.3).
	eTempRouting = "4.4.3"
	// eBadRouting: unable to route (RFC 3463 3.5, X.4.4).
	eBadRouting = "5.4.4"
	// eTempLoop: a routing loop, found in our own configuration (X.4.6).
	eTempLoop = "4.4.6"
	// eTempTLS: encryption needed and not available (RFC 5248, X.7.10).
	eTempTLS = "4.7.10"
)

// The TLS modes of a Smarthost.
const (
	TLSRequired      = "required"
	TLSOpportunistic = "opportunistic"
	TLSImplicit      = "implicit"
)

// Smarthost is a relay that receives all outgoing mail instead of the
// recipients' MX hosts.
type Smarthost struct {
	Host string // host name or IP address
	Port int
	// TLS is TLSRequired (STARTTLS, certificate verified), TLSOpportunistic
	// (STARTTLS when offered, unverified) or TLSImplicit (TLS from the first
	// byte, RFC 8314 section 3.3). "" means opportunistic.
	TLS string
	// Username and Password, when Username is set, authenticate with AUTH
	// PLAIN (only ever over TLS: smtpclient refuses otherwise).
	Username, Password string
}

// Options configures a Remote.
type Options struct {
	Hostname string        // our EHLO name
	Resolver dnsx.Resolver // required for MX routing and smarthost names
	Port     int           // destination port for MX and address delivery; 0 means 25
	// Dialer opens TCP connections; nil uses a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSFallbackPlain: when a STARTTLS handshake fails, retry that same
	// address once without TLS (opportunistic TLS only).
	TLSFallbackPlain bool
	Smarthost        *Smarthost // nil: MX routing
	// SmarthostTLSConfig, when set, replaces the TLS configuration used
	// with the smarthost (for example to trust a private CA).
	SmarthostTLSConfig *tls.Config
	// MaxConnections bounds the connections in use at once (default 100);
	// MaxPerHost those to one destination address and port (default 10),
	// and also the idle connections kept per destination.
	MaxConnections, MaxPerHost int
	// OwnAddrs are our SMTP listeners: an MX host resolving to one of them
	// is a mail loop.
	OwnAddrs []netip.AddrPort
	Timeouts smtpclient.Timeouts
	Logger   *slog.Logger
	Rand     *rand.Rand // shuffles MX hosts of equal preference; nil: global source
	// IdleTimeout is how long an unused connection is kept; default 30s.
	IdleTimeout time.Duration
}

// Remote is the deliver.Deliverer for remote recipients. It is safe for
// concurrent use.
type Remote struct {
	opts  Options
	log   *slog.Logger
	total chan struct{} // MaxConnections semaphore
	// own holds the listener addresses (exact matches) and the ports of
	// listeners on an unspecified address, with the machine's addresses.
	own      map[netip.AddrPort]bool
	anyPorts map[uint16]bool
	local    map[netip.Addr]bool

	mu     sync.Mutex
	hosts  map[string]*hostSem
	idle   map[string][]*idleConn
	closed bool
	quits  sync.WaitGroup
	rndMu  sync.Mutex // math/rand/v2's Rand is not safe for concurrent use
}

type hostSem struct {
	ch    chan struct{}
	users int
}

type idleConn struct {
	c     *smtpclient.Conn
	since time.Time
}

var _ deliver.Deliverer = (*Remote)(nil)

// New returns a Remote for opts.
func New(opts Options) *Remote {
	if opts.Port <= 0 {
		opts.Port = 25
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 100
	}
	if opts.MaxPerHost <= 0 {
		opts.MaxPerHost = 10
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Remote{
		opts:     opts,
		log:      log,
		total:    make(chan struct{}, opts.MaxConnections),
		own:      map[netip.AddrPort]bool{},
		anyPorts: map[uint16]bool{},
		local:    map[netip.Addr]bool{},
		hosts:    map[string]*hostSem{},
		idle:     map[string][]*idleConn{},
	}
	for _, ap := range opts.OwnAddrs {
		a := ap.Addr().Unmap()
		if a.IsUnspecified() {
			r.anyPorts[ap.Port()] = true
			continue
		}
		r.own[netip.AddrPortFrom(a, ap.Port())] = true
	}
	if len(r.anyPorts) > 0 {
		// A listener on 0.0.0.0 or :: answers on every address of this
		// machine: loopback, and whatever the interfaces carry.
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					r.local[p.Addr().Unmap()] = true
				}
			}
		}
	}
	return r
}

// isOwn reports whether ap is one of our own listeners.
func (r *Remote) isOwn(ap netip.AddrPort) bool {
	a := ap.Addr().Unmap()
	if r.own[netip.AddrPortFrom(a, ap.Port())] {
		return true
	}
	return r.anyPorts[ap.Port()] && (a.IsLoopback() || a.IsUnspecified() || r.local[a])
}

// Deliver implements deliver.Deliverer: the recipients are grouped by
// domain (all of them into one group with a smarthost) and each group is
// delivered in one transaction, the groups concurrently.
func (r *Remote) Deliver(ctx context.Context, req deliver.Request) []deliver.Result {
	results := make([]deliver.Result, len(req.Rcpts))
	type group struct {
		domain    string
		positions []int
	}
	var groups []*group
	byDomain := map[string]*group{}
	for pos, i := range req.Rcpts {
		a, err := address.Parse(req.Env.Recipients[i].Addr)
		if err != nil {
			results[pos] = deliver.Result{Status: envelope.Failed,
				Err: smtp.Errorf(smtp.CodeMailboxNotAllowed, smtp.EBadDestSyntax, "Invalid recipient address").Wrap(err)}
			continue
		}
		key := strings.ToLower(a.Domain)
		if r.opts.Smarthost != nil {
			key = ""
		}
		g := byDomain[key]
		if g == nil {
			g = &group{domain: key}
			byDomain[key] = g
			groups = append(groups, g)
		}
		g.positions = append(g.positions, pos)
	}
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(func() {
			t := &txn{r: r, req: req, positions: g.positions, results: results}
			if r.opts.Smarthost != nil {
				t.viaSmarthost(ctx)
			} else {
				t.viaMX(ctx, g.domain)
			}
		})
	}
	wg.Wait()
	return results
}

// txn is the delivery of one group of recipients: the positions (in
// req.Rcpts) still pending, and the results written so far.
type txn struct {
	r         *Remote
	req       deliver.Request
	positions []int // still to deliver
	results   []deliver.Result
	lastErr   *smtp.Error // last temporary failure, for the Pending result
}

// finish gives every recipient still pending the status st with err.
func (t *txn) finish(st envelope.Status, err *smtp.Error) {
	for _, pos := range t.positions {
		t.results[pos] = deliver.Result{Status: st, Err: err}
	}
	t.positions = nil
}

// pendingErr is the error of recipients left Pending after every route
// failed.
func (t *txn) pendingErr() *smtp.Error {
	if t.lastErr != nil {
		return t.lastErr
	}
	return smtp.Errorf(smtp.CodeLocalError, eNoAnswer, "No answer from host")
}

// route is one host to try: its name (for TLS and logs), its preference
// and its addresses.
type route struct {
	host  string
	pref  uint16
	addrs []netip.Addr
}

// viaMX routes the group by the MX records of domain (RFC 5321 section 5.1).
func (t *txn) viaMX(ctx context.Context, domain string) {
	r := t.r
	mxs, err := r.opts.Resolver.LookupMX(ctx, domain)
	switch {
	case dnsx.IsNotFound(err):
		t.finish(envelope.Failed, smtp.Errorf(smtp.CodeMailboxUnavailable, eBadDestSystem,
			"Domain %s does not exist", domain).Wrap(err))
		return
	case errors.Is(err, dnsx.ErrBadMX):
		// The domain publishes MX records and none names a usable host:
		// no amount of waiting makes this deliverable.
		t.finish(envelope.Failed, smtp.Errorf(smtp.CodeMailboxUnavailable, eBadRouting,
			"Domain %s has no valid mail server", domain).Wrap(err))
		return
	case err != nil:
		t.finish(envelope.Pending, smtp.Errorf(smtp.CodeLocalError, eTempRouting,
			"DNS lookup of %s failed", domain).Wrap(err))
		return
	case dnsx.IsNullMX(mxs):
		// RFC 7505 section 4.1: a domain with a null MX accepts no mail;
		// fail at once with 556 (RFC 7504 section 3) 5.1.10.
		t.finish(envelope.Failed, smtp.Errorf(codeDomainNoMail, eNullMX,
			"Domain %s does not accept mail (null MX)", domain))
		return
	}
	implicit := len(mxs) == 0
	if implicit {
		// RFC 5321 section 5.1: without MX records the domain itself is
		// the implicit MX, with preference 0.
		mxs = []dnsx.MX{{Host: domain, Pref: 0}}
	} else {
		r.rndMu.Lock()
		mxs = dnsx.SortMX(mxs, r.opts.Rand)
		r.rndMu.Unlock()
	}

	// Every host is resolved before any is tried, because the loop rule
	// below depends on the whole list.
	var routes []route
	selfPref, self := uint16(0), false
	for _, mx := range mxs {
		addrs, err := r.opts.Resolver.LookupIP(ctx, mx.Host)
		if err != nil || len(addrs) == 0 {
			if implicit && (err == nil || dnsx.IsNotFound(err)) {
				// RFC 5321 section 5.1: no MX and no address: the
				// domain has no mail server.
				t.finish(envelope.Failed, smtp.Errorf(smtp.CodeMailboxUnavailable, eBadDestSystem,
					"Domain %s has no mail server", domain))
				return
			}
			if err == nil {
				err = errors.New("no address")
			}
			t.lastErr = smtp.Errorf(smtp.CodeLocalError, eTempRouting,
				"Cannot find the address of mail server %s", mx.Host).Wrap(err)
			continue
		}
		for _, a := range addrs {
			if r.isOwn(netip.AddrPortFrom(a, uint16(r.opts.Port))) && (!self || mx.Pref < selfPref) {
				self, selfPref = true, mx.Pref
			}
		}
		routes = append(routes, route{host: mx.Host, pref: mx.Pref, addrs: addrs})
	}
	if self {
		// RFC 5321 section 5.1: when we are in the MX list ourselves,
		// every host of our preference or a higher number is dropped;
		// only better hosts may take the mail. When none is left the
		// domain routes mail back to us: a domain we do not serve (else
		// the recipient would be local), so a loop, and permanent.
		kept := routes[:0]
		for _, rt := range routes {
			if rt.pref < selfPref {
				kept = append(kept, rt)
			}
		}
		routes = kept
		if len(routes) == 0 {
			t.finish(envelope.Failed, smtp.Errorf(smtp.CodeTransactionFailed, smtp.ELoopDetected,
				"MX for %s points back to us (mail loop)", domain))
			return
		}
	}
	for _, rt := range routes {
		for _, a := range rt.addrs {
			ap := netip.AddrPortFrom(a, uint16(r.opts.Port))
			cfg := &tls.Config{
				// Opportunistic TLS: an MX certificate is not checked
				// (MTA-STS and DANE, which say when to, come later).
				InsecureSkipVerify: true,
				ServerName:         rt.host,
			}
			if t.try(ctx, rt.host, ap, "mx", cfg, false, nil, true) {
				return
			}
			if ctx.Err() != nil {
				t.finish(envelope.Pending, t.pendingErr())
				return
			}
		}
	}
	t.finish(envelope.Pending, t.pendingErr())
}

// viaSmarthost sends the whole group to the configured smarthost.
func (t *txn) viaSmarthost(ctx context.Context) {
	r := t.r
	sh := r.opts.Smarthost
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(sh.Host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = r.opts.Resolver.LookupIP(ctx, sh.Host)
		if err == nil && len(addrs) == 0 {
			err = errors.New("no address")
		}
		if err != nil {
			// Even NXDOMAIN is temporary here: the smarthost is our own
			// configuration, and mail waits until it is repaired.
			t.finish(envelope.Pending, smtp.Errorf(smtp.CodeLocalError, eTempRouting,
				"Cannot find the address of smarthost %s", sh.Host).Wrap(err))
			return
		}
	}
	port := sh.Port
	if port <= 0 {
		port = 25
	}
	var cfg *tls.Config
	if r.opts.SmarthostTLSConfig != nil {
		cfg = r.opts.SmarthostTLSConfig.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = sh.Host
		}
	}
	var auth *smtpclient.PlainAuth
	if sh.Username != "" {
		auth = &smtpclient.PlainAuth{Username: sh.Username, Password: sh.Password}
	}
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		if r.isOwn(ap) {
			// A configuration error, not the sender's: keep the mail.
			t.lastErr = smtp.Errorf(smtp.CodeLocalError, eTempLoop, "Smarthost %s points back to us", sh.Host)
			continue
		}
		var ok bool
		switch sh.TLS {
		case TLSRequired:
			if cfg == nil {
				// Verified against the smarthost's name.
				cfg = &tls.Config{ServerName: sh.Host}
			}
			ok = t.try(ctx, sh.Host, ap, "smarthost", cfg, true, auth, false)
		case TLSImplicit:
			if cfg == nil {
				cfg = &tls.Config{ServerName: sh.Host}
			}
			ok = t.try(ctx, sh.Host, ap, "smarthost-implicit", cfg, false, auth, false)
		default:
			if cfg == nil {
				cfg = &tls.Config{InsecureSkipVerify: true, ServerName: sh.Host}
			}
			ok = t.try(ctx, sh.Host, ap, "smarthost", cfg, false, auth, true)
		}
		if ok || ctx.Err() != nil {
			break
		}
	}
	if len(t.positions) > 0 {
		t.finish(envelope.Pending, t.pendingErr())
	}
}
