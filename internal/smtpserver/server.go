// Package smtpserver owns the receiving side of SMTP: listeners, connection
// limits, STARTTLS, and one Session per connection that runs the RFC 5321
// state machine, streams DATA/BDAT into the spool and adds the Received
// trace header. It reaches the spool and the recipient policy through the
// small interfaces declared here.
package smtpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/smtp"
)

// Spooler is where accepted messages go. Create assigns env.ID.
type Spooler interface {
	Create(env *envelope.Envelope) (SpoolWriter, error)
}

// SpoolWriter receives one message. Commit returning nil means the message
// and its envelope are on stable storage: only then does the client get 250.
// A Commit that fails has discarded the message; Abort drops one not
// committed.
type SpoolWriter interface {
	io.Writer
	Commit() error
	Abort()
}

// Policy decides whether a recipient is accepted and where it goes.
type Policy interface {
	// Resolve accepts or refuses a recipient; a domain that is not local
	// is refused with policy.ErrRelayDenied.
	Resolve(addr address.Addr) ([]envelope.Recipient, *smtp.Error)
	// RelayAllowed reports whether a client may send to domains that are
	// not local.
	RelayAllowed(ip netip.Addr) bool
}

// Options configures a Server.
type Options struct {
	Hostname            string // in the greeting and the Received header
	MaxMessageSize      int64
	MaxRecipients       int
	MaxReceivedHeaders  int
	MaxConnections      int
	MaxConnectionsPerIP int
	MaxErrors           int
	CommandTimeout      time.Duration
	DataTimeout         time.Duration
	TLSConfig           *tls.Config // nil: no STARTTLS
	Policy              Policy
	// PostmasterDomain is the domain whose postmaster receives mail sent to
	// the bare "<postmaster>" (RFC 5321 4.5.1); "" refuses that form.
	PostmasterDomain string
	Spooler          Spooler
	Logger           *slog.Logger
	Now              func() time.Time // nil: time.Now
}

// Server accepts SMTP connections.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	perIP     map[string]int
	total     int
	shutdown  atomic.Bool
	wg        sync.WaitGroup
}

// New returns a Server; zero limits take the RFC 5321 minimums or sane defaults.
func New(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxRecipients < 100 {
		opts.MaxRecipients = 100 // RFC 5321 4.5.3.1.8
	}
	if opts.MaxErrors <= 0 {
		opts.MaxErrors = 10
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = 5 * time.Minute // RFC 5321 4.5.3.2.7
	}
	if opts.DataTimeout <= 0 {
		opts.DataTimeout = 10 * time.Minute
	}
	if opts.MaxReceivedHeaders <= 0 {
		opts.MaxReceivedHeaders = 100
	}
	return &Server{
		opts:      opts,
		log:       opts.Logger,
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
		perIP:     map[string]int{},
	}
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("smtpserver: server closed")

// Serve accepts connections on l until Shutdown. Temporary accept errors
// (such as running out of file descriptors) are retried with backoff, never
// fatal.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.shutdown.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept error; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.wg.Add(1)
		go s.handle(c)
	}
}

func isTemporary(err error) bool {
	// EMFILE, ENFILE, ECONNABORTED and friends surface as *net.OpError
	// wrapping a syscall error; all of them pass with time.
	var oe *net.OpError
	return errors.As(err, &oe) && !errors.Is(err, net.ErrClosed)
}

func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	ip := remoteIP(c)
	s.mu.Lock()
	s.total++
	s.perIP[ip]++
	over := s.opts.MaxConnections > 0 && s.total > s.opts.MaxConnections ||
		s.opts.MaxConnectionsPerIP > 0 && s.perIP[ip] > s.opts.MaxConnectionsPerIP
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.total--
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
		s.mu.Unlock()
	}()
	if over || s.shutdown.Load() {
		// RFC 5321 3.1: a server that cannot take the session answers the
		// opening with 421 and closes.
		enh, text, logMsg := smtp.ETempConnLimit, "Too many connections, try again later", "connection refused: limit"
		if !over {
			enh, text, logMsg = smtp.EServiceShutdown, errShuttingDown.Message, "connection refused: shutting down"
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "%d %s %s %s\r\n", smtp.CodeServiceNotAvailable, enh, s.opts.Hostname, text)
		c.Close()
		s.log.Info(logMsg, "client_ip", ip)
		return
	}
	ss := newSession(s, c, ip)
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	ss.run()
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// Shutdown stops accepting, tells idle clients 421 and lets sessions in the
// middle of a transaction finish until ctx is done; then it closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	s.mu.Lock()
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.sessions)
		for ss := range s.sessions {
			if ss.idle.Load() {
				ss.raw.SetReadDeadline(time.Now()) // wake it; it answers 421
			}
		}
		s.mu.Unlock()
		if n == 0 {
			s.wg.Wait()
			return nil
		}
		select {
		case <-ctx.Done():
			s.mu.Lock()
			for ss := range s.sessions {
				ss.raw.Close()
			}
			s.mu.Unlock()
			s.wg.Wait()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// SpoolerFunc adapts a function to the Spooler interface.
type SpoolerFunc func(env *envelope.Envelope) (SpoolWriter, error)

// Create calls f.
func (f SpoolerFunc) Create(env *envelope.Envelope) (SpoolWriter, error) { return f(env) }
