package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/smtpclient"
)

// try delivers the pending recipients of t through the server at ap
// (named host) and reports whether the group is settled. It is not when
// the server could not be reached or talked to, or refused the whole
// transaction temporarily: RFC 5321 section 5.1 then has the client try
// the next address or host. Any answer about individual recipients
// settles the group; those refused with 4xx stay Pending and are retried
// later, not sent elsewhere, since the host did answer for them.
//
// kind separates pooled connections that were set up differently to the
// same address (MX, smarthost). fallback allows the plain-text retry
// after a failed STARTTLS handshake when Options.TLSFallbackPlain is set.
func (t *txn) try(ctx context.Context, host string, ap netip.AddrPort, kind string,
	cfg *tls.Config, requireTLS bool, auth *smtpclient.PlainAuth, fallback bool) bool {
	r := t.r
	release, err := r.acquire(ctx, ap.String())
	if err != nil {
		if t.lastErr == nil {
			t.lastErr = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "Delivery interrupted").Wrap(err)
		}
		return false
	}
	defer release()

	key := kind + "|" + ap.String()
	c := r.takeIdle(ctx, key)
	if c == nil {
		c, err = r.dial(ctx, host, ap, kind, cfg, requireTLS, auth)
		if err != nil && fallback && r.opts.TLSFallbackPlain && errors.Is(err, smtpclient.ErrTLSHandshake) {
			// Opportunistic TLS (RFC 3207 section 4 leaves the decision to
			// the client's policy): this policy prefers plain text to a
			// host whose TLS is broken over not delivering at all.
			r.log.Warn("STARTTLS handshake failed, retrying without TLS", "host", host, "addr", ap.String(), "err", err)
			c, err = r.dial(ctx, host, ap, kind, nil, false, auth)
		}
		if err != nil {
			r.log.Info("remote host unusable", "host", host, "addr", ap.String(), "err", err)
			t.lastErr = sessionError(host, err)
			return false
		}
	}

	env := t.req.Env
	to := make([]string, len(t.positions))
	for k, pos := range t.positions {
		to[k] = env.Recipients[t.req.Rcpts[pos]].Addr
	}
	size := t.req.Body.Size()
	res, err := c.Send(ctx, smtpclient.Message{
		From:     env.Sender,
		To:       to,
		Size:     size,
		Body8Bit: env.Body8Bit,
		SMTPUTF8: env.SMTPUTF8,
		// A reader of its own: an earlier attempt may have read part of it.
		Body: io.NewSectionReader(t.req.Body, 0, size),
	})
	if err != nil {
		// The connection is gone (Send closed it). What the server did with
		// the message is unknown; trying the next host may deliver twice,
		// which RFC 5321 section 6.1 accepts over losing it.
		r.log.Info("connection lost during transaction", "host", host, "addr", ap.String(), "err", err)
		var se *smtp.Error
		if errors.As(err, &se) {
			t.lastErr = temporary(se).Wrap(err)
		} else {
			t.lastErr = smtp.Errorf(smtp.CodeLocalError, smtp.ETempNetwork, "Connection to %s lost", host).Wrap(err)
		}
		return false
	}
	r.putIdle(key, c)

	allTemp := true
	for _, rr := range res {
		if rr.Err == nil || !rr.Err.Temporary() {
			allTemp = false
		}
	}
	if allTemp {
		// Nobody accepted, nobody refused for good: a 4xx to MAIL or DATA,
		// or to every RCPT. Another host may do better.
		t.lastErr = withEnhanced(res[0].Err)
		return false
	}
	for k, rr := range res {
		pos := t.positions[k]
		switch {
		case rr.Err == nil:
			t.results[pos] = deliver.Result{Status: envelope.Delivered}
		case rr.Err.Temporary():
			t.results[pos] = deliver.Result{Status: envelope.Pending, Err: withEnhanced(rr.Err)}
		default:
			t.results[pos] = deliver.Result{Status: envelope.Failed, Err: withEnhanced(rr.Err)}
		}
		r.log.Debug("remote delivery", "host", host, "addr", ap.String(), "rcpt", rr.Addr, "reply", rr.Reply)
	}
	t.positions = nil
	return true
}

// sessionError turns a failure to set up a session with host into the
// temporary error recipients are left Pending with if no other host takes
// the mail.
func sessionError(host string, err error) *smtp.Error {
	var se *smtp.Error
	switch {
	case errors.Is(err, smtpclient.ErrTLSRequired):
		return smtp.Errorf(smtp.CodeLocalError, eTempTLS, "TLS is required and %s does not offer it", host).Wrap(err)
	case errors.Is(err, smtpclient.ErrTLSHandshake):
		return smtp.Errorf(smtp.CodeLocalError, eTempTLS, "TLS handshake with %s failed", host).Wrap(err)
	case errors.Is(err, smtpclient.ErrAuthNeedsTLS), errors.Is(err, smtpclient.ErrAuthUnavailable):
		return smtp.Errorf(smtp.CodeLocalError, smtp.ETempPolicy, "Cannot authenticate to %s", host).Wrap(err)
	case errors.As(err, &se):
		// The server's own words (a 421 or 554 greeting, a refused EHLO or
		// AUTH), kept as the message; temporary, since other hosts or a
		// later attempt may succeed.
		return temporary(se).Wrap(err)
	}
	return smtp.Errorf(smtp.CodeLocalError, eNoAnswer, "No answer from host %s", host).Wrap(err)
}

// temporary returns a copy of e as a 4xx error, keeping the server's text.
func temporary(e *smtp.Error) *smtp.Error {
	c := *withEnhanced(e)
	if c.Code >= 500 {
		c.Code = smtp.CodeLocalError
		c.Enhanced = "4" + c.Enhanced[1:]
	}
	return &c
}

// withEnhanced returns e with an enhanced status code, the generic one of
// its class when the server sent none (RFC 3463 section 3.1), so that
// DSNs always have one to quote.
func withEnhanced(e *smtp.Error) *smtp.Error {
	c := *e
	// Before EHLO (the greeting) or from servers that do not announce
	// ENHANCEDSTATUSCODES, smtpclient leaves the code in the text (with
	// the generic X.0.0, or none, as the code); many servers do send one
	// there. Take it when its class matches.
	if e.Enhanced == "" || e.Enhanced == strconv.Itoa(e.Code/100)+".0.0" {
		if code, rest, ok := strings.Cut(c.Message, " "); ok && isEnhanced(code, c.Code/100) {
			c.Enhanced, c.Message = code, rest
			return &c
		}
	}
	if e.Enhanced != "" {
		return e
	}
	switch {
	case c.Code >= 500:
		c.Enhanced = smtp.EOtherPermanent
	default:
		c.Enhanced = smtp.EOtherTransient
	}
	return &c
}

// isEnhanced reports whether s is an enhanced status code (RFC 3463
// section 2: class "." subject "." detail, at most 3 digits each) of class.
func isEnhanced(s string, class int) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] != strconv.Itoa(class) {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// dial sets up a session with the server at ap.
func (r *Remote) dial(ctx context.Context, host string, ap netip.AddrPort, kind string,
	cfg *tls.Config, requireTLS bool, auth *smtpclient.PlainAuth) (*smtpclient.Conn, error) {
	opts := smtpclient.Options{
		Hostname:   r.opts.Hostname,
		Dialer:     r.opts.Dialer,
		TLSConfig:  cfg,
		RequireTLS: requireTLS,
		Auth:       auth,
		Timeouts:   r.opts.Timeouts,
	}
	if kind == "smarthost-implicit" {
		// RFC 8314 section 3.3: TLS from the first byte. smtpclient has no
		// such mode, so the dialer hands it a connection already in TLS.
		base := r.opts.Dialer
		if base == nil {
			base = (&net.Dialer{}).DialContext
		}
		opts.TLSConfig = nil
		opts.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := base(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(nc, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				nc.Close()
				return nil, fmt.Errorf("%w: %w", smtpclient.ErrTLSHandshake, err)
			}
			return tc, nil
		}
	}
	return smtpclient.Dial(ctx, ap.String(), opts)
}

// acquire takes a connection slot for the destination key and one of the
// total, waiting as long as ctx allows. The per-destination slot is taken
// first so that a busy destination does not hold total slots that others
// could use.
func (r *Remote) acquire(ctx context.Context, key string) (func(), error) {
	r.mu.Lock()
	hs := r.hosts[key]
	if hs == nil {
		hs = &hostSem{ch: make(chan struct{}, r.opts.MaxPerHost)}
		r.hosts[key] = hs
	}
	hs.users++
	r.mu.Unlock()
	drop := func() {
		r.mu.Lock()
		if hs.users--; hs.users == 0 {
			delete(r.hosts, key)
		}
		r.mu.Unlock()
	}
	select {
	case hs.ch <- struct{}{}:
	case <-ctx.Done():
		drop()
		return nil, ctx.Err()
	}
	select {
	case r.total <- struct{}{}:
	case <-ctx.Done():
		<-hs.ch
		drop()
		return nil, ctx.Err()
	}
	return func() {
		<-r.total
		<-hs.ch
		drop()
	}, nil
}

// takeIdle returns a pooled connection for key that still works, or nil.
// RSET checks that it does (RFC 5321 section 4.1.1.5) before a new
// transaction goes over it.
func (r *Remote) takeIdle(ctx context.Context, key string) *smtpclient.Conn {
	for {
		r.mu.Lock()
		list := r.idle[key]
		if len(list) == 0 {
			r.mu.Unlock()
			return nil
		}
		ic := list[len(list)-1]
		list[len(list)-1] = nil
		if len(list) == 1 {
			delete(r.idle, key)
		} else {
			r.idle[key] = list[:len(list)-1]
		}
		r.mu.Unlock()
		if time.Since(ic.since) > r.opts.IdleTimeout {
			r.quit(ic.c)
			continue
		}
		if err := ic.c.Reset(ctx); err != nil {
			// Reset closed it; the server probably timed the session out.
			r.log.Debug("pooled connection unusable", "dest", key, "err", err)
			continue
		}
		return ic.c
	}
}

// putIdle keeps c for the next delivery to key, at most MaxPerHost per
// key, and no longer than IdleTimeout.
func (r *Remote) putIdle(key string, c *smtpclient.Conn) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		c.Quit()
		return
	}
	if len(r.idle[key]) >= r.opts.MaxPerHost {
		r.mu.Unlock()
		r.quit(c)
		return
	}
	r.idle[key] = append(r.idle[key], &idleConn{c: c, since: time.Now()})
	r.mu.Unlock()
	time.AfterFunc(r.opts.IdleTimeout+10*time.Millisecond, r.sweep)
}

// sweep ends the idle connections older than IdleTimeout, so that they do
// not hold a session slot on the remote server.
func (r *Remote) sweep() {
	var old []*smtpclient.Conn
	r.mu.Lock()
	for key, list := range r.idle {
		kept := list[:0]
		for _, ic := range list {
			if time.Since(ic.since) > r.opts.IdleTimeout {
				old = append(old, ic.c)
			} else {
				kept = append(kept, ic)
			}
		}
		if len(kept) == 0 {
			delete(r.idle, key)
		} else {
			r.idle[key] = kept
		}
	}
	r.mu.Unlock()
	for _, c := range old {
		r.quit(c)
	}
}

// quit ends a session politely (RFC 5321 section 4.1.1.10) without making
// the caller wait for the reply.
func (r *Remote) quit(c *smtpclient.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		// Close may be waiting on r.quits already: adding to it now would
		// race with that Wait. The connection is closed right away instead.
		c.Close()
		return
	}
	r.quits.Go(func() { c.Quit() })
}

// Close ends the pooled idle connections with QUIT and waits for them.
// Deliveries may still run; their connections are closed when they end.
func (r *Remote) Close() {
	r.mu.Lock()
	r.closed = true
	idle := r.idle
	r.idle = map[string][]*idleConn{}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, list := range idle {
		for _, ic := range list {
			wg.Go(func() { ic.c.Quit() })
		}
	}
	wg.Wait()
	r.quits.Wait()
}
