// Package dnsx owns the DNS lookups that outbound delivery needs: MX
// records for a recipient domain and the A/AAAA addresses of a mail host.
// It defines the Resolver interface, a Client that talks to configured
// name servers over UDP (retrying over TCP when a reply is truncated), a
// Mock for tests of other packages, and SortMX, which orders an MX set as
// RFC 5321 section 5.1 asks.
//
// Errors are classified for the delivery code: a name that does not exist
// (NXDOMAIN) is permanent and reported as NotFound; a server failure,
// refusal or timeout is Temporary and the delivery is retried later.
package dnsx

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
)

// MX is one mail exchanger of a domain. Host is lower-case without the
// trailing dot ("mx1.example.com"); the null MX of RFC 7505 has Host ".".
type MX struct {
	Host string
	Pref uint16
}

// Resolver is what delivery needs from DNS. Implementations are safe for
// concurrent use.
type Resolver interface {
	// LookupMX returns the MX records of domain in the order the server
	// gave them (use SortMX before trying them). A domain that does not
	// exist gives an *Error with NotFound set (errors.Is(err, ErrNotFound));
	// a domain that exists without MX records gives an empty slice and a nil
	// error, so the caller can fall back to the domain's addresses (RFC 5321
	// section 5.1). A null MX (RFC 7505) is returned as the single record
	// MX{Host: ".", Pref: 0}; see IsNullMX.
	LookupMX(ctx context.Context, domain string) ([]MX, error)

	// LookupIP returns the IPv4 (A) and IPv6 (AAAA) addresses of host, IPv4
	// first. A host that does not exist gives an *Error with NotFound set;
	// a host that exists without addresses gives an empty slice and a nil
	// error.
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// ErrNotFound is the error wrapped by an *Error whose name does not exist
// (NXDOMAIN).
var ErrNotFound = errors.New("no such domain")

// ErrBadMX is wrapped by an *Error when a domain's MX records name no
// syntactically valid host. It is neither NotFound nor Temporary: the
// domain publishes mail servers, and none of them can be used.
var ErrBadMX = errors.New("no valid MX host name")

// Error describes a failed lookup of Name.
type Error struct {
	// Name is the name that was looked up, as the caller gave it.
	Name string
	// Err is the underlying cause (ErrNotFound for NXDOMAIN).
	Err error
	// NotFound reports that the name does not exist: a permanent failure.
	NotFound bool
	// Temporary reports a failure that may go away (SERVFAIL, refusal,
	// timeout, unreachable server): delivery should be retried later.
	Temporary bool
}

// Error implements error.
func (e *Error) Error() string {
	return "dns lookup " + e.Name + ": " + e.Err.Error()
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) true for every NotFound error, even
// one built by hand (for example in a Mock) with a different Err.
func (e *Error) Is(target error) bool {
	return target == ErrNotFound && e.NotFound
}

// IsNotFound reports whether err says that the looked-up name does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.NotFound
}

// IsTemporary reports whether err is a DNS failure worth retrying later.
func IsTemporary(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Temporary
}

// IsNullMX reports whether mxs is a null MX (RFC 7505 section 3: a single
// MX record whose exchange is the root, "."): the domain accepts no mail
// and delivery must fail at once (5.1.10, RFC 7505 section 4.1). The
// preference is not checked; RFC 7505 asks for 0, but an exchange of "."
// names no host whatever its preference.
func IsNullMX(mxs []MX) bool {
	return len(mxs) == 1 && mxs[0].Host == "."
}

// SortMX returns a new slice with the records of mxs ordered for delivery
// attempts: by ascending preference, records of equal preference in random
// order (RFC 5321 section 5.1: the client MUST randomize them to spread the
// load), and a host listed more than once kept only at its lowest
// preference. rnd supplies the randomness (a seeded one makes tests
// repeatable); nil means the global source of math/rand/v2.
func SortMX(mxs []MX, rnd *rand.Rand) []MX {
	best := make(map[string]uint16, len(mxs))
	var out []MX
	for _, mx := range mxs {
		key := normalize(mx.Host)
		if p, seen := best[key]; seen {
			if mx.Pref < p {
				best[key] = mx.Pref
			}
			continue
		}
		best[key] = mx.Pref
		out = append(out, mx)
	}
	for i := range out {
		out[i].Pref = best[normalize(out[i].Host)]
	}
	// Stable so that the shuffle below is the only source of reordering.
	slices.SortStableFunc(out, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	for i := 0; i < len(out); {
		j := i + 1
		for j < len(out) && out[j].Pref == out[i].Pref {
			j++
		}
		run := out[i:j]
		swap := func(a, b int) { run[a], run[b] = run[b], run[a] }
		if rnd != nil {
			rnd.Shuffle(len(run), swap)
		} else {
			rand.Shuffle(len(run), swap)
		}
		i = j
	}
	return out
}

// normalize gives the form names are compared in: lower-case, without the
// trailing dot (the root stays ".").
func normalize(name string) string {
	name = strings.ToLower(name)
	if len(name) > 1 {
		name = strings.TrimSuffix(name, ".")
	}
	return name
}

// validHost reports whether name (normalized, without trailing dot) is a
// host name an SMTP client can use: RFC 5321 section 4.1.2 "Domain", that
// is dot-separated labels of letters, digits and hyphens, not starting or
// ending with a hyphen, each at most 63 octets and at most 253 in all
// (RFC 1035 section 2.3.4). A last label of digits only is refused too:
// that is an IP address written where a name belongs (RFC 3696 section 2),
// a known misconfiguration of MX records.
func validHost(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}
