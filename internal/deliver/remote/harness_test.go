package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/dnsx"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/policy"
	"github.com/posthorn/posthorn/internal/smtpserver"
)

// This file is the test world: SMTP servers on 127.0.0.2, .3 and .4 that
// all listen on one port (MX delivery uses one destination port), either
// real internal/smtpserver servers with an in-memory spool or scripted
// fakes for the behaviours a real server does not show.

// world holds one listener per address, all on the same port.
type world struct {
	port int
	lns  map[string]*countListener
}

// newWorld listens on each of ips with a common free port.
func newWorld(tb testing.TB, ips ...string) *world {
	tb.Helper()
	for range 20 {
		first, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			tb.Fatal(err)
		}
		w := &world{port: first.Addr().(*net.TCPAddr).Port, lns: map[string]*countListener{}}
		w.lns[ips[0]] = &countListener{Listener: first}
		ok := true
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(w.port)))
			if err != nil {
				if errors.Is(err, syscall.EADDRINUSE) {
					ok = false
					break
				}
				tb.Fatal(err)
			}
			w.lns[ip] = &countListener{Listener: ln}
		}
		if !ok {
			for _, ln := range w.lns {
				ln.Close()
			}
			continue
		}
		tb.Cleanup(func() {
			for _, ln := range w.lns {
				ln.Close()
			}
		})
		return w
	}
	tb.Fatal("no port free on all of", ips)
	return nil
}

// addr returns ip as a netip.Addr.
func addr(ip string) netip.Addr { return netip.MustParseAddr(ip) }

// countListener counts accepted connections.
type countListener struct {
	net.Listener
	accepts atomic.Int32
}

func (l *countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepts.Add(1)
	}
	return c, err
}

// received is one message a memSpool took.
type received struct {
	env  envelope.Envelope
	data []byte
}

// memSpool is an smtpserver.Spooler keeping messages in memory.
type memSpool struct {
	mu   sync.Mutex
	seq  int
	msgs []received
}

func (s *memSpool) Create(env *envelope.Envelope) (smtpserver.SpoolWriter, error) {
	s.mu.Lock()
	s.seq++
	env.ID = fmt.Sprintf("M%04d", s.seq)
	s.mu.Unlock()
	return &memWriter{s: s, env: env}, nil
}

func (s *memSpool) messages() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

type memWriter struct {
	s   *memSpool
	env *envelope.Envelope
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *memWriter) Abort()                      {}
func (w *memWriter) Commit() error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	env := *w.env
	env.Recipients = append([]envelope.Recipient(nil), w.env.Recipients...)
	w.s.msgs = append(w.s.msgs, received{env: env, data: bytes.Clone(w.buf.Bytes())})
	return nil
}

// rcptAddrs lists the recipient addresses of a received envelope.
func (r received) rcptAddrs() []string {
	var out []string
	for _, rc := range r.env.Recipients {
		out = append(out, rc.Addr)
	}
	return out
}

// realServer runs an smtpserver.Server on w's listener for ip, local for
// domains; tlsCfg nil means no STARTTLS.
func realServer(tb testing.TB, w *world, ip string, domains map[string]policy.Domain, tlsCfg *tls.Config) *memSpool {
	tb.Helper()
	p, err := policy.New(policy.Options{Domains: domains})
	if err != nil {
		tb.Fatal(err)
	}
	sp := &memSpool{}
	srv := smtpserver.New(smtpserver.Options{
		Hostname:  "mx-" + ip + ".test",
		Policy:    p,
		Spooler:   sp,
		TLSConfig: tlsCfg,
		Logger:    slog.New(slog.DiscardHandler),
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(w.lns[ip])
	}()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return sp
}

// anyUser is a policy domain set accepting every user of the given domains.
func anyUser(domains ...string) map[string]policy.Domain {
	m := map[string]policy.Domain{}
	for _, d := range domains {
		m[d] = policy.Domain{AcceptAnyUser: true}
	}
	return m
}

var (
	tlsOnce sync.Once
	tlsConf *tls.Config
	tlsErr  error
)

// serverTLS is a self-signed server configuration for "smarthost.test".
func serverTLS(tb testing.TB) *tls.Config {
	tb.Helper()
	tlsOnce.Do(func() { tlsConf, tlsErr = smtpserver.SelfSignedTLS("smarthost.test", time.Now()) })
	if tlsErr != nil {
		tb.Fatal(tlsErr)
	}
	return tlsConf
}

// script describes a fake server's behaviour.
type script struct {
	greeting  string      // default "220 fake ESMTP"
	silent    bool        // accept and never say anything
	implicit  *tls.Config // TLS from the first byte
	startTLS  *tls.Config // offer STARTTLS and do the handshake
	garbage   bool        // offer STARTTLS, say 220, then send garbage instead of TLS
	authPlain string      // offer AUTH PLAIN after TLS; the expected base64 response
	dataReply string      // reply to DATA, default "354 go ahead"
	endReply  string      // reply to the end of data, default "250 2.0.0 queued"
}

// fake is a running scripted server and what it saw.
type fake struct {
	sc    script
	mu    sync.Mutex
	lines []string // commands received, in order, over all connections
	msgs  int      // messages received completely
	conns int
}

func (f *fake) record(l string) {
	f.mu.Lock()
	f.lines = append(f.lines, l)
	f.mu.Unlock()
}

// saw returns the commands received that start with prefix.
func (f *fake) saw(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, l := range f.lines {
		if strings.HasPrefix(strings.ToUpper(l), prefix) {
			out = append(out, l)
		}
	}
	return out
}

func (f *fake) counts() (conns, msgs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns, f.msgs
}

// fakeServer serves sc on w's listener for ip until the test ends.
func fakeServer(tb testing.TB, w *world, ip string, sc script) *fake {
	tb.Helper()
	f := &fake{sc: sc}
	ln := w.lns[ip]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				// Unblock a session stuck in a read when the test ends.
				go func() { <-stop; c.Close() }()
				f.session(c, stop)
			})
		}
	})
	tb.Cleanup(func() {
		close(stop)
		ln.Close()
		wg.Wait()
	})
	return f
}

func (f *fake) session(c net.Conn, stop chan struct{}) {
	sc := f.sc
	if sc.silent {
		<-stop
		return
	}
	if sc.implicit != nil {
		tc := tls.Server(c, sc.implicit)
		if tc.Handshake() != nil {
			return
		}
		c = tc
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	say := func(s string) { io.WriteString(c, s+"\r\n") }
	greeting := sc.greeting
	if greeting == "" {
		greeting = "220 fake ESMTP"
	}
	say(greeting)
	if !strings.HasPrefix(greeting, "220") {
		return
	}
	inTLS := sc.implicit != nil
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.record(line)
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		switch verb {
		case "EHLO":
			ext := []string{"250-fake", "250-8BITMIME"}
			if (sc.startTLS != nil || sc.garbage) && !inTLS {
				ext = append(ext, "250-STARTTLS")
			}
			if sc.authPlain != "" && inTLS {
				ext = append(ext, "250-AUTH PLAIN")
			}
			ext = append(ext, "250 ENHANCEDSTATUSCODES")
			say(strings.Join(ext, "\r\n"))
		case "STARTTLS":
			say("220 2.0.0 go ahead")
			if sc.garbage {
				// Wait for the ClientHello, so that the garbage is read by
				// the TLS handshake and not as part of the 220 reply.
				buf := make([]byte, 512)
				c.Read(buf)
				io.WriteString(c, "this is not a TLS server hello\r\n")
				return
			}
			tc := tls.Server(c, sc.startTLS)
			if tc.Handshake() != nil {
				return
			}
			c, inTLS = tc, true
			br = bufio.NewReader(c)
		case "AUTH":
			if line == "AUTH PLAIN "+sc.authPlain {
				say("235 2.7.0 Authentication successful")
			} else {
				say("535 5.7.8 Authentication credentials invalid")
			}
		case "MAIL", "RCPT", "RSET", "HELO":
			say("250 2.0.0 ok")
		case "DATA":
			reply := sc.dataReply
			if reply == "" {
				reply = "354 go ahead"
			}
			say(reply)
			if !strings.HasPrefix(reply, "354") {
				continue
			}
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
			}
			end := sc.endReply
			if end == "" {
				end = "250 2.0.0 queued"
			}
			f.mu.Lock()
			f.msgs++
			f.mu.Unlock()
			say(end)
		case "QUIT":
			say("221 2.0.0 bye")
			return
		default:
			say("502 5.5.1 not implemented")
		}
	}
}

// testEnv is an envelope from sender@here.test to rcpts (all remote).
func testEnv(rcpts ...string) *envelope.Envelope {
	env := &envelope.Envelope{ID: "T0001", Sender: "sender@here.test", Received: time.Now()}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: r})
	}
	return env
}

const testBody = "From: sender@here.test\r\nSubject: test\r\n\r\nHello.\r\n.leading dot\r\n"

// request asks for every recipient of env.
func request(env *envelope.Envelope) deliver.Request {
	idx := make([]int, len(env.Recipients))
	for i := range idx {
		idx[i] = i
	}
	return deliver.Request{Env: env, Body: io.NewSectionReader(strings.NewReader(testBody), 0, int64(len(testBody))), Rcpts: idx}
}

// shortTimeouts keep failing cases quick; nothing here is slow on loopback.
var shortTimeouts = struct{ connect, step time.Duration }{2 * time.Second, 3 * time.Second}

// newRemote returns a Remote delivering to w's port with resolver res,
// after mod adjusted its options; it is closed when the test ends.
func newRemote(tb testing.TB, port int, res *dnsx.Mock, mod func(*Options)) *Remote {
	tb.Helper()
	opts := Options{
		Hostname: "client.here.test",
		Resolver: res,
		Port:     port,
		Logger:   slog.New(slog.DiscardHandler),
	}
	opts.Timeouts.Connect = shortTimeouts.connect
	opts.Timeouts.Greeting = shortTimeouts.step
	opts.Timeouts.Command = shortTimeouts.step
	opts.Timeouts.Mail = shortTimeouts.step
	opts.Timeouts.Rcpt = shortTimeouts.step
	opts.Timeouts.DataInit = shortTimeouts.step
	opts.Timeouts.DataBlock = shortTimeouts.step
	opts.Timeouts.DataEnd = shortTimeouts.step
	if mod != nil {
		mod(&opts)
	}
	r := New(opts)
	tb.Cleanup(r.Close)
	return r
}

func deliverCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
