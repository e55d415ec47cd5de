package dnsx

import (
	"context"
	"net/netip"
	"slices"
)

// Mock is a Resolver answering from maps, for tests of packages that
// deliver mail. Keys are domain or host names; they are matched without
// regard to case or a trailing dot. The maps must not change while
// lookups run; reading them concurrently is safe.
//
// A lookup of name returns, in this order:
//   - Fail[name] as is, if present (use an *Error to control NotFound and
//     Temporary);
//   - for LookupMX, a copy of MX[name] if present; for LookupIP, a copy of
//     IP[name] if present;
//   - an empty slice and nil if name is a key of the other map (the name
//     exists, without records of the asked type);
//   - otherwise an *Error with NotFound set, as for NXDOMAIN.
//
// A context that is already done gives a Temporary *Error.
type Mock struct {
	MX   map[string][]MX
	IP   map[string][]netip.Addr
	Fail map[string]error
}

var _ Resolver = (*Mock)(nil)

// LookupMX implements Resolver.
func (m *Mock) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	if err := m.check(ctx, domain); err != nil {
		return nil, err
	}
	if mxs, ok := find(m.MX, domain); ok {
		return append([]MX{}, mxs...), nil
	}
	if _, ok := find(m.IP, domain); ok {
		return []MX{}, nil
	}
	return nil, &Error{Name: domain, Err: ErrNotFound, NotFound: true}
}

// LookupIP implements Resolver.
func (m *Mock) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if err := m.check(ctx, host); err != nil {
		return nil, err
	}
	if addrs, ok := find(m.IP, host); ok {
		return append([]netip.Addr{}, addrs...), nil
	}
	if _, ok := find(m.MX, host); ok {
		return []netip.Addr{}, nil
	}
	return nil, &Error{Name: host, Err: ErrNotFound, NotFound: true}
}

// check returns the error a lookup of name must fail with, if any.
func (m *Mock) check(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return &Error{Name: name, Err: err, Temporary: true}
	}
	if err, ok := find(m.Fail, name); ok {
		return err
	}
	return nil
}

// find looks name up in m by its normalized form. The exact key is tried
// first; the scan covers maps written with capitals or trailing dots.
func find[V any](m map[string]V, name string) (V, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	want := normalize(name)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Sorted so that two keys differing only in case resolve the same way
	// on every run.
	slices.Sort(keys)
	for _, k := range keys {
		if normalize(k) == want {
			return m[k], true
		}
	}
	var zero V
	return zero, false
}
