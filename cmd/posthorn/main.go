// Command posthorn is the Posthorn mail transfer agent: one binary that
// receives mail over SMTP, queues it durably and delivers it.
//
//	posthorn serve [--config FILE]        run the server (built-in defaults without --config)
//	posthorn check-config --config FILE   validate a configuration file and exit
//	posthorn queue list|show ID|retry [ID]|delete ID|bounce ID [--config FILE]
//
// This file is the composition root: it reads the configuration and builds
// every component from its Options; no other package sees the config.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/config"
	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/deliver/maildir"
	"github.com/posthorn/posthorn/internal/deliver/remote"
	"github.com/posthorn/posthorn/internal/dnsx"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/policy"
	"github.com/posthorn/posthorn/internal/queue"
	"github.com/posthorn/posthorn/internal/safeio"
	"github.com/posthorn/posthorn/internal/smtpclient"
	"github.com/posthorn/posthorn/internal/smtpserver"
	"github.com/posthorn/posthorn/internal/spool"
)

const usage = `usage:
  posthorn serve [--config FILE]        run the server (built-in defaults without --config)
  posthorn check-config --config FILE   validate a configuration file
  posthorn queue list [--config FILE]   queued messages: ID, age, size, sender, recipients and their state
  posthorn queue show ID                one message: its envelope and content
  posthorn queue retry [ID]             try one message (or all) now, on the running server
  posthorn queue delete ID              remove a message without delivering it
  posthorn queue bounce ID              give up on a message and send its sender a bounce
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration file (TOML)")
	switch args[0] {
	case "serve", "check-config", "queue":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "posthorn: unknown command %q\n%s", args[0], usage)
		return 2
	}
	rest := args[1:]
	if args[0] == "queue" {
		// Flags may follow the subcommand: posthorn queue list --config F.
		rest = flagsFirst(rest)
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if args[0] != "queue" && fs.NArg() > 0 {
		fmt.Fprintf(stderr, "posthorn: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if args[0] == "check-config" && *cfgPath == "" {
		fmt.Fprintln(stderr, "posthorn: check-config needs --config FILE")
		return 2
	}
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			fmt.Fprintf(stderr, "posthorn: %v\n", err)
			return 1
		}
	}
	if args[0] == "queue" {
		return queueCommand(cfg, fs.Args(), stdout, stderr)
	}
	c, err := build(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "posthorn: %v\n", err)
		return 1
	}
	if args[0] == "check-config" {
		fmt.Fprintf(stdout, "%s: ok (%d domains, %d aliases, listening on %v)\n", *cfgPath, len(cfg.Domains), len(cfg.Aliases), cfg.SMTP.Listen)
		return 0
	}
	if err := c.serve(); err != nil {
		c.log.Error("posthorn stopped", "err", err)
		return 1
	}
	return 0
}

// components is everything built from one configuration.
type components struct {
	cfg    *config.Config
	log    *slog.Logger
	tls    *tls.Config
	policy *policy.Policy
}

// build checks everything that can be checked without touching the data
// directory or the network: check-config runs exactly this.
func build(cfg *config.Config, logOut io.Writer) (*components, error) {
	c := &components{cfg: cfg, log: newLogger(cfg.Log, logOut)}
	if !cfg.TLS.Disable && cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		c.tls = smtpserver.ServerTLS(cert)
	}
	domains := map[string]policy.Domain{}
	for name, d := range cfg.Domains {
		domains[name] = policy.Domain{Users: d.Users, CatchAll: d.CatchAll, AcceptAnyUser: d.AcceptAnyUser}
	}
	p, err := policy.New(policy.Options{Domains: domains, Aliases: cfg.Aliases, RecipientDelimiter: cfg.RecipientDelimiter, RelayFrom: cfg.RelayNetworks()})
	if err != nil {
		return nil, err
	}
	c.policy = p
	return c, nil
}

func newLogger(lc config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(lc.Level))
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func (c *components) serve() error {
	cfg := c.cfg
	if !cfg.TLS.Disable && c.tls == nil {
		t, err := smtpserver.SelfSignedTLS(cfg.Hostname, time.Now())
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		c.tls = t
		c.log.Info("no TLS certificate configured: STARTTLS uses a self-signed one")
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	sp, err := spool.Open(filepath.Join(dataDir, "spool"))
	if err != nil {
		return err
	}
	mailRoot := filepath.Join(dataDir, "mail")
	if err := safeio.MkdirAll(mailRoot, 0o700); err != nil {
		return err
	}
	// Listen first: the remote deliverer must know our own addresses to
	// recognise an MX that points back at us.
	var ls []net.Listener
	closeListeners := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	for _, addr := range cfg.SMTP.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeListeners()
			return err
		}
		ls = append(ls, l)
	}
	remoteDeliverer := c.newRemote(ls)
	defer remoteDeliverer.Close()
	syncer := safeio.NewDirSyncer()
	q := queue.New(queue.Options{
		Spool: sp,
		Deliverer: &deliver.Router{
			Local:  maildir.New(maildir.Options{Root: mailRoot, Hostname: cfg.Hostname, Syncer: syncer}),
			Remote: remoteDeliverer,
		},
		Workers:        cfg.Queue.Workers,
		RetryIntervals: durations(cfg.Queue.RetryIntervals),
		MaxLifetime:    cfg.Queue.MaxLifetime.D(),
		Logger:         c.log,
		// Local mail goes straight to its Maildir before the reply: the
		// same durability (fsynced before 250) with half the flushes.
		DeliverOnReceipt: true,
		DelayNotice:      cfg.Delivery.DelayNotice.D(),
		// Intake waits up to 1 s while more messages are due or in delivery
		// than there are workers (Postfix: in_flow_delay).
		FlowBacklog: cfg.Queue.Workers,
		FlowDelay:   time.Second,
		Bounce: queue.BounceOptions{
			ReportingMTA: cfg.Hostname,
			Postmaster:   "postmaster@" + firstNonEmpty(postmasterDomain(cfg), cfg.Hostname),
			Route:        c.routeBounce,
		},
	})
	if err := q.Start(); err != nil {
		closeListeners()
		return err
	}
	if ctl, err := serveControl(dataDir, q, c.log); err != nil {
		// The server works without it; only `posthorn queue retry` and
		// `delete` need it.
		c.log.Warn("no control socket: queue commands cannot reach this server", "err", err)
	} else {
		defer ctl.Close()
	}
	srv := smtpserver.New(smtpserver.Options{
		Hostname:            cfg.Hostname,
		MaxMessageSize:      int64(cfg.SMTP.MaxMessageSize),
		MaxRecipients:       cfg.SMTP.MaxRecipients,
		MaxReceivedHeaders:  cfg.SMTP.MaxReceivedHeaders,
		MaxConnections:      cfg.SMTP.MaxConnections,
		MaxConnectionsPerIP: cfg.SMTP.MaxConnectionsPerIP,
		MaxErrors:           cfg.SMTP.MaxErrors,
		CommandTimeout:      cfg.SMTP.CommandTimeout.D(),
		DataTimeout:         cfg.SMTP.DataTimeout.D(),
		TLSConfig:           c.tls,
		Policy:              c.policy,
		PostmasterDomain:    postmasterDomain(cfg),
		Spooler: smtpserver.SpoolerFunc(func(env *envelope.Envelope) (smtpserver.SpoolWriter, error) {
			in, err := q.Create(env)
			if err != nil {
				return nil, err
			}
			return in, nil
		}),
		Logger: c.log,
	})
	domains := make([]string, 0, len(cfg.Domains))
	for d := range cfg.Domains {
		domains = append(domains, d)
	}
	sort.Strings(domains)
	errc := make(chan error, len(ls))
	for _, l := range ls {
		c.log.Info("listening for SMTP", "addr", l.Addr().String(), "hostname", cfg.Hostname, "starttls", c.tls != nil)
		go func() { errc <- srv.Serve(l) }()
	}
	c.log.Info("delivering local mail", "maildir", filepath.Join(mailRoot, "<domain>", "<user>"), "domains", domains, "spool", filepath.Join(dataDir, "spool"))

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	var serveErr error
	select {
	case s := <-sigc:
		c.log.Info("shutting down", "signal", s.String())
	case serveErr = <-errc:
		c.log.Error("listener failed; shutting down", "err", serveErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		c.log.Warn("shutdown", "err", err)
	}
	q.Stop()
	c.log.Info("stopped")
	return serveErr
}

func durations(ds []config.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.D()
	}
	return out
}

// postmasterDomain picks the domain whose postmaster gets mail for the bare
// "<postmaster>": the host name when it is a local domain, else the first
// local domain in order.
func postmasterDomain(cfg *config.Config) string {
	if cfg.IsLocalDomain(cfg.Hostname) {
		return strings.ToLower(cfg.Hostname)
	}
	names := make([]string, 0, len(cfg.Domains))
	for d := range cfg.Domains {
		names = append(names, d)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

// flagsFirst moves "--config F" / "--config=F" (one or two dashes) ahead of
// the positional arguments, so the flag package sees it wherever it stands.
func flagsFirst(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-config" || a == "--config":
			flags = append(flags, a)
			if i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config=") || a == "-h" || a == "-help" || a == "--help":
			flags = append(flags, a)
		default:
			pos = append(pos, a)
		}
	}
	return append(flags, pos...)
}

// routeBounce resolves the sender of a failed message into the bounce's
// recipients: through aliases to a mailbox when its domain is local, else
// the remote address itself.
func (c *components) routeBounce(sender string) ([]envelope.Recipient, error) {
	a, err := address.Parse(sender)
	if err != nil {
		return nil, err
	}
	if !c.policy.IsLocal(a.Domain) {
		return []envelope.Recipient{{Addr: a.String()}}, nil
	}
	rs, serr := c.policy.Resolve(a)
	if serr != nil {
		return nil, serr
	}
	return rs, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// newRemote builds the deliverer for remote recipients from [delivery] and
// [dns].
func (c *components) newRemote(ls []net.Listener) *remote.Remote {
	cfg := c.cfg
	var own []netip.AddrPort
	for _, l := range ls {
		if ap, err := netip.ParseAddrPort(l.Addr().String()); err == nil {
			own = append(own, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	var sh *remote.Smarthost
	if h := cfg.Delivery.Smarthost; h.Host != "" {
		sh = &remote.Smarthost{Host: h.Host, Port: h.Port, TLS: h.TLS, Username: h.Username, Password: h.Password}
	}
	return remote.New(remote.Options{
		Hostname: cfg.HeloName(),
		// Answers are kept for their TTL (at most 5 minutes): a relay asks
		// the same MX and addresses for every message to a destination.
		Resolver:         dnsx.New(dnsx.Options{Servers: cfg.DNS.Servers, Timeout: cfg.DNS.Timeout.D(), CacheMax: 5 * time.Minute}),
		Port:             cfg.Delivery.Port,
		TLSFallbackPlain: cfg.Delivery.TLSFallbackPlain,
		Smarthost:        sh,
		MaxConnections:   cfg.Delivery.MaxConnections,
		MaxPerHost:       cfg.Delivery.MaxConnectionsPerHost,
		OwnAddrs:         own,
		Timeouts: smtpclient.Timeouts{
			Connect: cfg.Delivery.ConnectTimeout.D(), Greeting: cfg.Delivery.CommandTimeout.D(),
			Command: cfg.Delivery.CommandTimeout.D(), Mail: cfg.Delivery.CommandTimeout.D(), Rcpt: cfg.Delivery.CommandTimeout.D(),
		},
		Logger: c.log,
	})
}
