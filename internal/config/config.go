// Package config owns Posthorn's configuration: it reads the TOML file,
// lays the file's values over built-in defaults, normalises names (lower
// case, IDNA A-labels) and validates the result into plain structs that
// cmd/posthorn hands, piece by piece, to the other packages' Options.
//
// Every problem is reported as file:line: key: message, because an
// administrator editing a file at 3 a.m. needs to know where to look, not
// which Go type failed to decode. Nothing here is global: Load and Parse
// return a new *Config each time, so a reload can build and validate a new
// configuration before switching to it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
)

// Config is the whole validated configuration. After Parse, or after
// Validate returns nil, names are in canonical form: domains are lower-case
// ASCII (A-labels), user names and alias keys are lower case.
type Config struct {
	// Hostname is this server's name in greetings, EHLO and Received
	// headers. It defaults to os.Hostname(), or "localhost" when that is not
	// a valid domain name.
	Hostname string `toml:"hostname"`
	// DataDir holds the spool and the mailboxes. A relative path is relative
	// to the working directory of the process, not to the config file.
	DataDir string `toml:"data_dir"`
	// RecipientDelimiter separates a mailbox from its detail in a local
	// part ("alice+lists" goes to alice). At most one character; "" turns
	// plus-addressing off.
	RecipientDelimiter string `toml:"recipient_delimiter"`
	// Log says how much to log and in which format.
	Log Log `toml:"log"`
	// SMTP holds the listener and the per-session limits.
	SMTP SMTP `toml:"smtp"`
	// TLS says where the certificate for STARTTLS comes from.
	TLS TLS `toml:"tls"`
	// Queue holds the delivery schedule.
	Queue Queue `toml:"queue"`
	// Delivery configures the SMTP client that relays mail to other
	// servers.
	Delivery Delivery `toml:"delivery"`
	// DNS configures the resolver used to route outgoing mail.
	DNS DNS `toml:"dns"`
	// Domains are the local domains, keyed by their canonical name. A
	// [domains] table in the file replaces the default set entirely, so that
	// an MX for example.com does not also accept mail for localhost.
	Domains map[string]Domain `toml:"domains"`
	// Aliases map a local address to one or more addresses, local or remote.
	// An alias may have the same name as a user of its domain: the alias
	// wins, which is how mail for a mailbox is redirected without deleting
	// it. Keys are lower-cased whole (they are local, and local parts are
	// matched case-insensitively); targets keep the case of their local part,
	// which a remote system may care about, and get a canonical domain.
	Aliases map[string][]string `toml:"aliases"`
}

// Log configures logging.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `toml:"level"`
	// Format is text (for people) or json (for log collectors).
	Format string `toml:"format"`
}

// SMTP configures the SMTP server.
type SMTP struct {
	// Listen lists host:port addresses to accept SMTP on. The host is an IP
	// literal, "localhost" or empty (all addresses); names that would need
	// DNS are refused so that startup never waits on a resolver.
	Listen []string `toml:"listen"`
	// MaxMessageSize is the largest message accepted, announced in the EHLO
	// SIZE keyword.
	MaxMessageSize Size `toml:"max_message_size"`
	// MaxRecipients is the most RCPT commands accepted per message.
	MaxRecipients int `toml:"max_recipients"`
	// MaxReceivedHeaders is how many Received headers a message may carry
	// before it is taken to be looping and refused.
	MaxReceivedHeaders int `toml:"max_received_headers"`
	// MaxConnections caps concurrent SMTP sessions.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP caps concurrent sessions from one client address,
	// so one client cannot take every slot.
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
	// MaxErrors is how many error replies a client gets before it is
	// dropped.
	MaxErrors int `toml:"max_errors"`
	// CommandTimeout is how long the server waits for the next command.
	CommandTimeout Duration `toml:"command_timeout"`
	// DataTimeout bounds a whole DATA or BDAT transfer.
	DataTimeout Duration `toml:"data_timeout"`
	// RelayFrom lists the networks whose clients may relay: send to any
	// domain, not only the local ones. An entry is a CIDR prefix or a single
	// IP address; after validation each is the canonical, masked form of a
	// netip.Prefix ("10.0.0.0/8", "192.0.2.7/32"). Empty by default, and
	// loopback is not implied: a local process that can reach the port must
	// not get an open relay unless the administrator lists 127.0.0.0/8. Use
	// Config.RelayNetworks for the parsed prefixes.
	RelayFrom []string `toml:"relay_from"`
}

// TLS configures the certificate offered with STARTTLS.
type TLS struct {
	// Cert is the path of a PEM certificate chain.
	Cert string `toml:"cert"`
	// Key is the path of the PEM private key for Cert.
	Key string `toml:"key"`
	// Disable turns STARTTLS off. With Cert and Key both empty and Disable
	// false, the server makes a self-signed certificate at start: most
	// senders encrypt opportunistically and do not verify, so even that
	// keeps mail off the wire in clear.
	Disable bool `toml:"disable"`
}

// Queue configures delivery scheduling.
type Queue struct {
	// Workers is how many deliveries run at once.
	Workers int `toml:"workers"`
	// RetryIntervals are the waits between delivery attempts; the last one
	// repeats until MaxLifetime.
	RetryIntervals []Duration `toml:"retry_intervals"`
	// MaxLifetime is how long a message may stay queued before it bounces.
	MaxLifetime Duration `toml:"max_lifetime"`
}

// Delivery configures outgoing SMTP: how Posthorn connects to the servers
// responsible for remote recipients.
type Delivery struct {
	// Port is the destination port for MX and address-record delivery. It
	// is 25 on the Internet; tests point it elsewhere on loopback.
	Port int `toml:"port"`
	// HeloName is the name this server gives in EHLO. "" means Hostname;
	// use Config.HeloName for the effective value. Set, it is a domain name
	// in canonical form.
	HeloName string `toml:"helo_name"`
	// ConnectTimeout bounds the TCP connect to one destination address.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// CommandTimeout bounds the wait for the greeting and for the reply to
	// each command before the data (RFC 5321 4.5.3.2 sets 5 minutes); the
	// data phase keeps the RFC's own limits.
	CommandTimeout Duration `toml:"command_timeout"`
	// MaxConnections caps concurrent outgoing connections in total.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerHost caps concurrent connections to one destination
	// host, so that one busy domain does not look like an attack to its
	// MX. It is at most MaxConnections.
	MaxConnectionsPerHost int `toml:"max_connections_per_host"`
	// TLSFallbackPlain makes opportunistic STARTTLS retry a host in plain
	// text when the TLS handshake fails: without it, a server with a broken
	// TLS setup cannot receive mail from us at all. It does not apply to a
	// smarthost, whose TLS says what is required.
	TLSFallbackPlain bool `toml:"tls_fallback_plain"`
	// DelayNotice is how long a message waits before its sender is told
	// that delivery is delayed (RFC 3464 action "delayed"); 0 sends none.
	DelayNotice Duration `toml:"delay_notice"`
	// Smarthost, when its Host is set, receives all outgoing mail instead of
	// the MX hosts of each domain.
	Smarthost Smarthost `toml:"smarthost"`
}

// Smarthost configures a relay host that takes all outgoing mail. The zero
// Host means there is none; then the other fields keep their defaults.
type Smarthost struct {
	// Host is a domain name (canonical after validation) or an IP address,
	// without brackets or port; "" for no smarthost.
	Host string `toml:"host"`
	// Port is the smarthost's port: 587 for submission with STARTTLS, 465
	// for implicit TLS, 25 for a plain relay.
	Port int `toml:"port"`
	// TLS is one of the SmarthostTLS constants.
	TLS string `toml:"tls"`
	// Username, with Password, is sent with AUTH PLAIN (RFC 4616). Both or
	// neither, and only over TLS that is required or implicit, so that the
	// password never crosses the network in clear.
	Username string `toml:"username"`
	// Password goes with Username. Smarthost's String method leaves it out,
	// so a logged configuration does not leak it.
	Password string `toml:"password"`
}

// The values of Smarthost.TLS.
const (
	// SmarthostTLSRequired: STARTTLS must be offered and succeed, or the
	// attempt fails (temporarily).
	SmarthostTLSRequired = "required"
	// SmarthostTLSOpportunistic: STARTTLS when offered, plain text when not
	// or when the handshake fails.
	SmarthostTLSOpportunistic = "opportunistic"
	// SmarthostTLSImplicit: TLS from the first byte (RFC 8314 3.3), usually
	// on port 465.
	SmarthostTLSImplicit = "implicit"
)

// String formats s for logs and test failures with the password, if any,
// replaced, since %v of a Config would otherwise print it.
func (s Smarthost) String() string {
	pw := ""
	if s.Password != "" {
		pw = "(hidden)"
	}
	return fmt.Sprintf("{Host:%s Port:%d TLS:%s Username:%s Password:%s}", s.Host, s.Port, s.TLS, s.Username, pw)
}

// DNS configures the resolver for outgoing mail.
type DNS struct {
	// Servers are the resolvers to ask, as "ip:port" (canonical after
	// validation: "192.0.2.53:53", "[2001:db8::53]:53"). The file may leave
	// out the port, which is then 53. Empty means the servers of
	// /etc/resolv.conf.
	Servers []string `toml:"servers"`
	// Timeout bounds one query to one server.
	Timeout Duration `toml:"timeout"`
}

// Domain configures one local domain.
type Domain struct {
	// Users are the mailboxes of the domain: local parts, lower case, safe
	// to use as directory names.
	Users []string `toml:"users"`
	// CatchAll, when set, receives mail for local parts of this domain that
	// are neither users nor aliases.
	CatchAll string `toml:"catch_all"`
	// AcceptAnyUser makes every safe local part a mailbox of its own,
	// created on first delivery.
	AcceptAnyUser bool `toml:"accept_any_user"`
}

// Default returns the built-in configuration: what `posthorn serve` runs with
// when given no file. It accepts mail for any user at localhost on
// 127.0.0.1:2525, which is safe to start anywhere and useful to try.
func Default() *Config {
	return &Config{
		Hostname:           defaultHostname(),
		DataDir:            "./posthorn-data",
		RecipientDelimiter: "+",
		Log:                Log{Level: "info", Format: "text"},
		SMTP: SMTP{
			Listen:              []string{"127.0.0.1:2525"},
			MaxMessageSize:      25 << 20,
			MaxRecipients:       100,
			MaxReceivedHeaders:  100,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 50,
			MaxErrors:           10,
			// RFC 5321 4.5.3.2.7: the server timeout SHOULD be at least 5
			// minutes.
			CommandTimeout: Duration(5 * time.Minute),
			DataTimeout:    Duration(10 * time.Minute),
		},
		Queue: Queue{
			Workers: 64,
			RetryIntervals: []Duration{
				Duration(time.Minute), Duration(5 * time.Minute), Duration(15 * time.Minute),
				Duration(30 * time.Minute), Duration(time.Hour),
			},
			MaxLifetime: Duration(5 * 24 * time.Hour),
		},
		Delivery: Delivery{
			Port:                  25,
			ConnectTimeout:        Duration(30 * time.Second),
			CommandTimeout:        Duration(5 * time.Minute),
			MaxConnections:        100,
			MaxConnectionsPerHost: 10,
			TLSFallbackPlain:      true,
			DelayNotice:           Duration(4 * time.Hour),
			Smarthost:             Smarthost{Port: 587, TLS: SmarthostTLSRequired},
		},
		DNS:     DNS{Timeout: Duration(5 * time.Second)},
		Domains: defaultDomains(),
	}
}

func defaultDomains() map[string]Domain {
	return map[string]Domain{"localhost": {AcceptAnyUser: true}}
}

// defaultHostname falls back to "localhost" when the system's name is not a
// usable domain name (containers often have odd ones), so that the default
// configuration always validates.
func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "localhost"
	}
	n, err := normalizeDomain(h)
	if err != nil {
		return "localhost"
	}
	return n
}

// Load reads the file at path and parses it with Parse. Errors name the
// path as given.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse builds a Config from the TOML document data: defaults first, then
// every value the document sets, then Validate. filename is used only in
// error messages. Unknown keys, values of the wrong type and invalid values
// are all errors, each reported as filename:line: key: message.
func Parse(data []byte, filename string) (*Config, error) {
	// Cap the capacity so that go-toml's and our own offset arithmetic,
	// which locate sub-slices by their capacity, see exactly the document.
	data = data[:len(data):len(data)]

	// First pass: our own walk over the syntax tree. It reports syntax
	// errors, keys that are unknown or in the wrong case, and values of the
	// wrong type, with messages about TOML rather than Go types, and it
	// records the line of every key for the checks that come after
	// decoding.
	doc, errs := scan(data, filename)
	if len(errs) > 0 {
		return nil, joinErrors(errs)
	}

	c := Default()
	// go-toml merges into maps rather than replacing them; start without
	// domains so that the file's set replaces the default one.
	c.Domains = nil
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		// The scan above should have caught everything the decoder refuses
		// (but duplicate keys); this keeps any other refusal located.
		return nil, joinErrors(decodeErrors(err, filename))
	}
	if !doc.has("domains") {
		c.Domains = defaultDomains()
	} else if c.Domains == nil {
		c.Domains = map[string]Domain{}
	}
	if err := c.validate(doc); err != nil {
		return nil, err
	}
	return c, nil
}

// decodeErrors turns the decoder's error into located Errors.
func decodeErrors(err error, filename string) []*Error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		out := make([]*Error, 0, len(strict.Errors))
		for i := range strict.Errors {
			e := &strict.Errors[i]
			line, _ := e.Position()
			out = append(out, &Error{File: filename, Line: line, Key: joinKey(e.Key()), Msg: "unknown key"})
		}
		return out
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		key := joinKey(de.Key())
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if strings.HasSuffix(msg, " is already defined") || strings.HasSuffix(msg, " already exists") {
			// go-toml repeats the key in its message; we print it in front.
			msg = "is defined twice"
		}
		return []*Error{{File: filename, Line: line, Key: key, Msg: msg}}
	}
	return []*Error{{File: filename, Msg: err.Error()}}
}

// IsLocalDomain reports whether d is one of the configured local domains.
// The comparison ignores case and a trailing dot, and d may be given as a
// U-label ("bücher.example") or an A-label.
func (c *Config) IsLocalDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if _, ok := c.Domains[strings.ToLower(d)]; ok {
		return true
	}
	n, err := normalizeDomain(d)
	if err != nil {
		return false
	}
	_, ok := c.Domains[n]
	return ok
}
