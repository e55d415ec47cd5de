// Package policy owns the decisions about addresses: which domains are
// local, whether a recipient exists, alias and catch-all expansion,
// plus-addressing, and the relay rule (no open relay). It decides; it does
// no I/O.
package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/smtp"
)

// Domain is the configuration of one local domain.
type Domain struct {
	Users         []string // mailbox names (lower case)
	CatchAll      string   // address receiving mail for unknown local parts, or ""
	AcceptAnyUser bool     // every safe local part is a mailbox
}

// Options configures a Policy. Domain names are canonical (see
// address.NormalizeDomain); alias keys are "local@domain" addresses.
type Options struct {
	Domains            map[string]Domain
	Aliases            map[string][]string
	RecipientDelimiter string // "" disables plus-addressing
	// RelayFrom lists the client networks that may send to any domain
	// (relay_from). Empty by default: not even loopback is trusted.
	RelayFrom []netip.Prefix
}

// Policy answers questions about recipients. It is immutable and safe for
// concurrent use.
type Policy struct {
	domains map[string]domain
	aliases map[string][]address.Addr
	delim   string
	relay   []netip.Prefix
}

type domain struct {
	users    map[string]bool
	catchAll *address.Addr
	anyUser  bool
}

// maxAliasDepth bounds alias chains (an alias to an alias to ...).
const maxAliasDepth = 10

// New validates opts and returns a Policy. Every alias and catch-all target
// in a local domain must resolve to a mailbox, so that a typo is found at
// start-up rather than when mail arrives.
func New(opts Options) (*Policy, error) {
	p := &Policy{domains: map[string]domain{}, aliases: map[string][]address.Addr{}, delim: opts.RecipientDelimiter, relay: opts.RelayFrom}
	for name, d := range opts.Domains {
		dn, err := address.NormalizeDomain(name)
		if err != nil {
			return nil, fmt.Errorf("domain %q: %w", name, err)
		}
		pd := domain{users: map[string]bool{}, anyUser: d.AcceptAnyUser}
		for _, u := range d.Users {
			if !SafeMailboxName(strings.ToLower(u)) {
				return nil, fmt.Errorf("domain %q: user %q: not a safe mailbox name", name, u)
			}
			pd.users[strings.ToLower(u)] = true
		}
		if d.CatchAll != "" {
			a, err := address.Parse(d.CatchAll)
			if err != nil {
				return nil, fmt.Errorf("domain %q: catch_all %q: %w", name, d.CatchAll, err)
			}
			pd.catchAll = &a
		}
		p.domains[dn] = pd
	}
	for key, targets := range opts.Aliases {
		a, err := address.Parse(key)
		if err != nil {
			return nil, fmt.Errorf("alias %q: %w", key, err)
		}
		if !p.IsLocal(a.Domain) {
			return nil, fmt.Errorf("alias %q: %s is not a local domain", key, a.Domain)
		}
		for _, t := range targets {
			ta, err := address.Parse(t)
			if err != nil {
				return nil, fmt.Errorf("alias %q: target %q: %w", key, t, err)
			}
			p.aliases[a.Key()] = append(p.aliases[a.Key()], ta)
		}
	}
	for key := range p.aliases {
		a, _ := address.Parse(key)
		if _, err := p.expand(a, 0); err != nil {
			return nil, fmt.Errorf("alias %q: %s", key, err.Message)
		}
	}
	for name, d := range p.domains {
		if d.catchAll != nil {
			if _, err := p.expand(*d.catchAll, 1); err != nil {
				return nil, fmt.Errorf("domain %q: catch_all: %s", name, err.Message)
			}
		}
	}
	return p, nil
}

// RelayAllowed reports whether a client at ip may send mail to domains
// that are not local (it is in relay_from).
func (p *Policy) RelayAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, n := range p.relay {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// IsLocal reports whether domain (canonical form) is one we receive mail for.
func (p *Policy) IsLocal(domain string) bool {
	_, ok := p.domains[domain]
	return ok
}

// Replies of Resolve.
var (
	ErrUnknownUser  = smtp.Errorf(smtp.CodeMailboxUnavailable, smtp.EBadDestMailbox, "User unknown")
	ErrRelayDenied  = smtp.Errorf(smtp.CodeTransactionFailed, smtp.ERelayDenied, "Relay access denied")
	ErrAliasTooDeep = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "Alias expansion failed, try again later")
)

// Resolve decides whether mail to a (a RCPT TO address) is accepted, and if
// so to which destinations it goes. Order: exact alias, alias of the address
// without its +tag, mailbox, catch-all, else 550 5.1.1. A domain that is
// not local is refused: Posthorn is no open relay.
func (p *Policy) Resolve(a address.Addr) ([]envelope.Recipient, *smtp.Error) {
	if !p.IsLocal(a.Domain) {
		return nil, ErrRelayDenied
	}
	rs, err := p.expand(a, 0)
	if err != nil {
		return nil, err
	}
	for i := range rs {
		if rs[i].Addr != a.String() {
			rs[i].Orig = a.String()
		}
	}
	return rs, nil
}

func (p *Policy) expand(a address.Addr, depth int) ([]envelope.Recipient, *smtp.Error) {
	if depth > maxAliasDepth {
		return nil, ErrAliasTooDeep
	}
	d, local := p.domains[a.Domain]
	if !local {
		return []envelope.Recipient{{Addr: a.String()}}, nil
	}
	lower := strings.ToLower(a.Local)
	base := lower
	if p.delim != "" {
		if i := strings.Index(lower, p.delim); i > 0 {
			base = lower[:i]
		}
	}
	targets, ok := p.aliases[lower+"@"+a.Domain]
	if !ok {
		targets, ok = p.aliases[base+"@"+a.Domain]
	}
	if ok {
		var out []envelope.Recipient
		for _, t := range targets {
			rs, err := p.expand(t, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, rs...)
		}
		return out, nil
	}
	if d.users[base] || d.anyUser && SafeMailboxName(base) {
		return []envelope.Recipient{{Addr: a.String(), Mailbox: a.Domain + "/" + base}}, nil
	}
	if d.catchAll != nil && depth == 0 {
		return p.expand(*d.catchAll, depth+1)
	}
	return nil, ErrUnknownUser
}

// SafeMailboxName reports whether name can be a mailbox directory: 1 to 64
// characters of a-z, 0-9, '.', '_' and '-', not starting with '.', without
// "..". Local parts outside this set never reach the file system.
func SafeMailboxName(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '.' || strings.Contains(name, "..") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
