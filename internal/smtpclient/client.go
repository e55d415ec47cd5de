// Package smtpclient owns the sending side of SMTP: one outgoing
// connection to one server (connect, greeting, EHLO with fallback to HELO,
// STARTTLS, AUTH PLAIN), mail transactions over it with per-recipient
// results (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, dot-stuffing), and the
// per-command timeouts of RFC 5321 4.5.3.2. It decides nothing about
// routing, retries or bounces: it reports what the server said, as
// *smtp.Error values, and leaves those decisions to its caller.
//
// Errors come in two kinds. A refusal that concerns one recipient or one
// message (a 4xx or 5xx reply to RCPT, to DATA, at the end of the data, or
// a requirement the server cannot meet, such as SMTPUTF8) is an
// *smtp.Error in that recipient's RcptResult; the connection stays usable.
// Anything else (I/O errors, timeouts, a malformed reply, a 421, a reply
// out of sequence) is returned as the error of the call; the connection
// has then been closed, and errors.As finds the *smtp.Error when a server
// reply caused it.
package smtpclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/posthorn/posthorn/internal/smtp"
)

// Timeouts bounds how long the client waits for each step. The zero value
// of a field takes the default, which for the commands is the minimum RFC
// 5321 4.5.3.2 asks for.
type Timeouts struct {
	Connect   time.Duration // TCP connection; default 1m (not in the RFC)
	Greeting  time.Duration // initial 220 message; 5m (4.5.3.2.1)
	Command   time.Duration // EHLO, HELO, STARTTLS and its handshake, AUTH, RSET, QUIT; 5m (as MAIL)
	Mail      time.Duration // reply to MAIL; 5m (4.5.3.2.2)
	Rcpt      time.Duration // reply to each RCPT; 5m (4.5.3.2.3)
	DataInit  time.Duration // 354 reply to DATA; 2m (4.5.3.2.4)
	DataBlock time.Duration // each write of the message text; 3m (4.5.3.2.5)
	DataEnd   time.Duration // reply to the final "."; 10m (4.5.3.2.6)
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Connect, time.Minute)
	def(&t.Greeting, 5*time.Minute)
	def(&t.Command, 5*time.Minute)
	def(&t.Mail, 5*time.Minute)
	def(&t.Rcpt, 5*time.Minute)
	def(&t.DataInit, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataEnd, 10*time.Minute)
	return t
}

// quitTimeout caps the wait for the reply to QUIT: nothing depends on it.
const quitTimeout = 10 * time.Second

// PlainAuth holds credentials for AUTH PLAIN (RFC 4616, RFC 4954).
type PlainAuth struct {
	Username string
	Password string
}

// Options configures a connection.
type Options struct {
	// Hostname is our name in EHLO/HELO (RFC 5321 4.1.1.1): the fully
	// qualified domain name of this host. Required.
	Hostname string
	// Dialer opens the TCP connection; nil uses a net.Dialer. Tests and
	// the router inject their own (loopback addresses, source addresses).
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLSConfig enables STARTTLS (RFC 3207) whenever the server offers it;
	// nil never starts TLS. When ServerName is empty and the dialled host
	// is a name rather than an IP address, the name is used. Opportunistic
	// TLS between MTAs usually cannot verify the certificate; whether to
	// is this config's business (InsecureSkipVerify).
	TLSConfig *tls.Config
	// RequireTLS makes Dial fail unless TLS was started: the server must
	// offer STARTTLS and the handshake must succeed. Such failures wrap
	// ErrTLSRequired or ErrTLSHandshake and are temporary by nature.
	RequireTLS bool
	// Auth, when set, authenticates with AUTH PLAIN after TLS. Credentials
	// are never sent over a connection without TLS (ErrAuthNeedsTLS).
	Auth *PlainAuth
	// Timeouts for each step; zero fields take their defaults.
	Timeouts Timeouts
}

// Errors that Dial wraps, so that callers can tell why a session could not
// be set up.
var (
	// ErrTLSRequired: RequireTLS is set and the server does not offer
	// STARTTLS, or refused it.
	ErrTLSRequired = errors.New("smtpclient: TLS required but not available")
	// ErrTLSHandshake: the TLS handshake after STARTTLS failed. The
	// connection is lost; a caller whose policy allows it may dial again
	// without TLSConfig.
	ErrTLSHandshake = errors.New("smtpclient: TLS handshake failed")
	// ErrAuthNeedsTLS: Auth is set but TLS is not active.
	ErrAuthNeedsTLS = errors.New("smtpclient: AUTH needs TLS")
	// ErrAuthUnavailable: Auth is set but the server does not offer AUTH PLAIN.
	ErrAuthUnavailable = errors.New("smtpclient: server does not offer AUTH PLAIN")
	// ErrClosed: the connection was closed by Close, Quit or an earlier error.
	ErrClosed = errors.New("smtpclient: connection closed")
)

// Conn is a connection to an SMTP server, in the ready state between mail
// transactions. Its methods must not be called concurrently.
type Conn struct {
	opts Options
	to   Timeouts
	raw  net.Conn // the TCP connection; deadlines set here reach TLS too
	conn net.Conn // raw, or the TLS connection over it
	br   *bufio.Reader
	bw   *bufio.Writer
	ext  map[string]string
	tls  bool
	// dirty: a transaction was opened (MAIL accepted) and not completed;
	// the next Send starts with RSET.
	dirty bool

	ctx context.Context // of the call in progress, for deadlines
	wto time.Duration   // timeout of each write, set per step
	err error           // sticky: the connection failed and is closed
}

// Dial connects to addr ("host:port"), reads the greeting, says EHLO (HELO
// when the server refuses EHLO with 5xx, RFC 5321 4.1.4), starts TLS when
// offered and configured and says EHLO again, and authenticates if
// configured. ctx bounds the whole set-up, on top of the Timeouts.
//
// A greeting other than 220 (such as 554, RFC 5321 3.1) is answered with
// QUIT and returned as an error that wraps the server's *smtp.Error.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	if !validHostname(opts.Hostname) {
		return nil, fmt.Errorf("smtpclient: invalid Hostname %q", opts.Hostname)
	}
	if opts.RequireTLS && opts.TLSConfig == nil {
		return nil, errors.New("smtpclient: RequireTLS without TLSConfig")
	}
	to := opts.Timeouts.withDefaults()
	dial := opts.Dialer
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, to.Connect)
	nc, err := dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("smtpclient: connect to %s: %w", addr, err)
	}
	c := &Conn{opts: opts, to: to, raw: nc, conn: nc}
	// A dialer may hand back a connection that is TLS from the first byte
	// (implicit TLS, RFC 8314 3.3): it counts as TLS for RequireTLS and
	// AUTH, and STARTTLS is not tried over it.
	if _, ok := nc.(*tls.Conn); ok {
		c.tls = true
	}
	c.br = bufio.NewReaderSize(nc, 4096)
	c.bw = bufio.NewWriterSize(deadlineWriter{c}, 32<<10)
	defer c.begin(ctx)()
	if err := c.setup(addr); err != nil {
		c.fail(err)
		return nil, err
	}
	return c, nil
}

func (c *Conn) setup(addr string) error {
	r, err := c.read(c.to.Greeting, "greeting")
	if err != nil {
		return err
	}
	if r.code != smtp.CodeReady {
		// RFC 5321 3.1: the client SHOULD send QUIT after a 554 greeting.
		c.quitQuietly()
		return fmt.Errorf("smtpclient: %s refused the session: %w", addr, r.err())
	}
	if err := c.hello(); err != nil {
		return err
	}
	if _, offered := c.ext["STARTTLS"]; offered && c.opts.TLSConfig != nil && !c.tls {
		if err := c.startTLS(addr); err != nil {
			return err
		}
	}
	if c.opts.RequireTLS && !c.tls {
		c.quitQuietly()
		return fmt.Errorf("%w (%s)", ErrTLSRequired, addr)
	}
	if c.opts.Auth != nil {
		return c.auth()
	}
	return nil
}

// hello says EHLO, and HELO if the server does not know EHLO.
func (c *Conn) hello() error {
	c.ext = nil
	r, err := c.cmd(c.to.Command, "EHLO", "EHLO "+c.opts.Hostname)
	if err != nil {
		return err
	}
	if r.positive() {
		c.ext = parseExtensions(r.lines[1:])
		return nil
	}
	if r.code/100 != 5 {
		return c.unexpected("EHLO", r)
	}
	// RFC 5321 4.1.4 / 3.2: a server that does not support EHLO answers
	// 5xx (502, 500, 504, 550); the client falls back to HELO.
	r, err = c.cmd(c.to.Command, "HELO", "HELO "+c.opts.Hostname)
	if err != nil {
		return err
	}
	if !r.positive() {
		return c.unexpected("HELO", r)
	}
	c.ext = map[string]string{}
	return nil
}

// parseExtensions reads the EHLO keywords (RFC 5321 4.1.1.1 ehlo-line),
// upper-cased, with their parameters as one string.
func parseExtensions(lines []string) map[string]string {
	ext := map[string]string{}
	for _, l := range lines {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		k = strings.ToUpper(k)
		// Old servers announce "AUTH=PLAIN LOGIN" next to (or instead of)
		// the standard form; the standard form wins.
		if rest, ok := strings.CutPrefix(k, "AUTH="); ok {
			if _, dup := ext["AUTH"]; !dup {
				ext["AUTH"] = strings.TrimSpace(rest + " " + v)
			}
			continue
		}
		if k != "" {
			ext[k] = strings.TrimSpace(v)
		}
	}
	return ext
}

func (c *Conn) startTLS(addr string) error {
	r, err := c.cmd(c.to.Command, "STARTTLS", "STARTTLS")
	if err != nil {
		return err
	}
	if r.code != smtp.CodeReady {
		if !r.failure() {
			return c.unexpected("STARTTLS", r)
		}
		if c.opts.RequireTLS {
			c.quitQuietly()
			return fmt.Errorf("%w: STARTTLS refused: %w", ErrTLSRequired, r.err())
		}
		// RFC 3207 4: after a refusal the client may go on without TLS.
		return nil
	}
	// RFC 3207 4.2 / CVE-2011-0411 on our side: whatever the server sent
	// after its 220 and before the handshake is not from inside TLS.
	if c.br.Buffered() > 0 {
		return fmt.Errorf("smtpclient: %w: server sent data after its STARTTLS reply", ErrMalformedReply)
	}
	cfg := c.opts.TLSConfig.Clone()
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) == nil {
			cfg.ServerName = host
		}
	}
	tc := tls.Client(c.raw, cfg)
	if err := c.deadline(c.raw.SetDeadline, c.to.Command); err != nil {
		return err
	}
	if err := tc.HandshakeContext(c.ctx); err != nil {
		return fmt.Errorf("%w with %s: %w", ErrTLSHandshake, addr, c.ioErr(err))
	}
	c.conn, c.tls = tc, true
	c.br.Reset(tc)
	// RFC 3207 4.2: everything learnt before TLS is discarded; EHLO again.
	return c.hello()
}

// auth runs AUTH PLAIN with an initial response (RFC 4954 4, RFC 4616 2).
func (c *Conn) auth() error {
	if !c.tls {
		c.quitQuietly()
		return ErrAuthNeedsTLS
	}
	mechs, ok := c.ext["AUTH"]
	if !ok || !hasWord(mechs, "PLAIN") {
		c.quitQuietly()
		return ErrAuthUnavailable
	}
	a := c.opts.Auth
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + a.Username + "\x00" + a.Password))
	// The logged command name never includes the credentials.
	r, err := c.cmd(c.to.Command, "AUTH", "AUTH PLAIN "+resp)
	if err != nil {
		return err
	}
	if r.code != 235 {
		if r.failure() {
			c.quitQuietly()
			return fmt.Errorf("smtpclient: authentication failed: %w", r.err())
		}
		// A 334 challenge after an initial response: not a PLAIN exchange
		// we take part in. Cancelling needs a round trip; closing is as good.
		return c.unexpected("AUTH", r)
	}
	return nil
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, w) {
			return true
		}
	}
	return false
}

// Extensions returns the extensions the server announced in its EHLO
// reply: keyword in upper case to its parameters ("SIZE" -> "10240000",
// "PIPELINING" -> ""). After HELO it is empty. The map is the caller's.
func (c *Conn) Extensions() map[string]string {
	m := make(map[string]string, len(c.ext))
	for k, v := range c.ext {
		m[k] = v
	}
	return m
}

// TLS reports whether the connection is encrypted (STARTTLS succeeded).
func (c *Conn) TLS() bool { return c.tls }

// Reset sends RSET, ending any transaction: a check that the connection
// still works before it is used again. Send resets by itself when a
// previous transaction was left open, so calling Reset is never required.
func (c *Conn) Reset(ctx context.Context) error {
	if c.err != nil {
		return c.err
	}
	defer c.begin(ctx)()
	if err := c.rset(); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

func (c *Conn) rset() error {
	r, err := c.cmd(c.to.Command, "RSET", "RSET")
	if err != nil {
		return err
	}
	if !r.positive() {
		// RFC 5321 4.1.1.5: RSET MUST be answered 250; anything else
		// means the session is not what we think.
		return c.unexpected("RSET", r)
	}
	c.dirty = false
	return nil
}

// Quit sends QUIT, waits briefly for the reply, and closes the connection.
// The message transactions before it are complete whatever Quit returns.
func (c *Conn) Quit() error {
	if c.err != nil {
		return c.err
	}
	defer c.begin(context.Background())()
	r, err := c.cmd(min(c.to.Command, quitTimeout), "QUIT", "QUIT")
	c.Close()
	if err != nil {
		return err
	}
	if r.code != smtp.CodeClosing {
		return fmt.Errorf("smtpclient: unexpected reply to QUIT: %w", r.err())
	}
	return nil
}

// Close closes the connection without QUIT.
func (c *Conn) Close() error {
	if c.err != nil {
		return nil
	}
	c.err = ErrClosed
	return c.raw.Close()
}

// quitQuietly sends QUIT before giving up on a session, without waiting
// long for the answer; errors do not matter, the connection is closed next.
func (c *Conn) quitQuietly() {
	c.wto = min(c.to.Command, quitTimeout)
	if _, err := c.bw.WriteString("QUIT\r\n"); err == nil && c.bw.Flush() == nil {
		if c.deadline(c.raw.SetReadDeadline, min(c.to.Command, quitTimeout)) == nil {
			readReply(c.br, false)
		}
	}
}

// begin records ctx as the context of the call in progress and makes its
// cancellation interrupt blocked I/O. The returned function undoes that.
func (c *Conn) begin(ctx context.Context) func() {
	c.ctx = ctx
	stop := context.AfterFunc(ctx, func() {
		// A deadline in the past fails the pending read or write at once.
		c.raw.SetDeadline(time.Unix(1, 0))
	})
	return func() {
		stop()
		c.ctx = context.Background()
	}
}

// deadline sets a deadline d from now, or the context's if it is earlier,
// with set (one of the SetDeadline methods of raw).
func (c *Conn) deadline(set func(time.Time) error, d time.Duration) error {
	t := time.Now().Add(d)
	if cd, ok := c.ctx.Deadline(); ok && cd.Before(t) {
		t = cd
	}
	set(t)
	// Checked after setting: if ctx ended before, the deadline just set
	// may have replaced the one its AfterFunc set.
	return c.ctx.Err()
}

// deadlineWriter writes to the connection, giving every write the
// deadline of the current step: for the message text, each block gets
// its own 3 minutes (RFC 5321 4.5.3.2.5), not the whole message.
type deadlineWriter struct{ c *Conn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.c.deadline(w.c.raw.SetWriteDeadline, w.c.wto); err != nil {
		return 0, err
	}
	return w.c.conn.Write(p)
}

// cmd sends one command line and reads its reply. name is what errors
// say: never the line itself, which may carry credentials.
func (c *Conn) cmd(timeout time.Duration, name, line string) (*reply, error) {
	if err := c.write(timeout, line); err != nil {
		return nil, err
	}
	if err := c.flush(name); err != nil {
		return nil, err
	}
	return c.read(timeout, name)
}

// write buffers one command line. Lines are built here from parsed
// addresses and validated names, so they hold no CR or LF of their own.
func (c *Conn) write(timeout time.Duration, line string) error {
	c.wto = timeout
	if _, err := c.bw.WriteString(line); err != nil {
		return err
	}
	_, err := c.bw.WriteString("\r\n")
	return err
}

func (c *Conn) flush(what string) error {
	if err := c.bw.Flush(); err != nil {
		return fmt.Errorf("smtpclient: sending %s: %w", what, c.ioErr(err))
	}
	return nil
}

// read reads one reply. A 421 (RFC 5321 3.8: the server is closing the
// connection) is returned as an error, whatever the command was.
func (c *Conn) read(timeout time.Duration, what string) (*reply, error) {
	if err := c.deadline(c.raw.SetReadDeadline, timeout); err != nil {
		return nil, fmt.Errorf("smtpclient: waiting for reply to %s: %w", what, err)
	}
	r, err := readReply(c.br, c.ext != nil && hasKey(c.ext, "ENHANCEDSTATUSCODES"))
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("smtpclient: reading reply to %s: %w", what, c.ioErr(err))
	}
	if r.code == smtp.CodeServiceNotAvailable {
		return nil, fmt.Errorf("smtpclient: server closing the connection after %s: %w", what, r.err())
	}
	return r, nil
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// ioErr prefers the context's error to the deadline its cancellation set.
func (c *Conn) ioErr(err error) error {
	if cerr := c.ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// unexpected is the error for a reply that does not fit the command.
func (c *Conn) unexpected(what string, r *reply) error {
	return fmt.Errorf("smtpclient: unexpected reply to %s: %w", what, r.err())
}

// fail closes the connection after a connection-level error and makes
// every later call return err.
func (c *Conn) fail(err error) {
	if c.err == nil {
		c.raw.Close()
		c.err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
}

// validHostname checks our EHLO argument: a domain or an address literal,
// nothing that could break the command line.
func validHostname(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
