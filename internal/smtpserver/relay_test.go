package smtpserver

import (
	"net/netip"
	"testing"

	"github.com/posthorn/posthorn/internal/policy"
)

// TestRelayFrom: a client in relay_from may send to any domain; the
// recipient is queued as remote (no mailbox). Others get 554 5.7.1.
func TestRelayFrom(t *testing.T) {
	relayPolicy := func(prefix string) func(*Options) {
		return func(o *Options) {
			p, err := policy.New(policy.Options{
				Domains:   map[string]policy.Domain{"example.com": {Users: []string{"alice"}}},
				RelayFrom: []netip.Prefix{netip.MustParsePrefix(prefix)},
			})
			if err != nil {
				t.Fatal(err)
			}
			o.Policy = p
		}
	}
	ts := startServer(t, relayPolicy("127.0.0.0/8"))
	c := dial(t, ts.addr)
	c.expect("220 {*}")
	c.send("EHLO relay.example.org")
	c.reply()
	c.send("MAIL FROM:<bob@example.org>")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<friend@remote.example>")
	c.expect("250 2.1.5 Ok")
	c.send("RCPT TO:<alice@example.com>")
	c.expect("250 2.1.5 Ok")
	c.send("RCPT TO:<nobody@example.com>")
	c.expect("550 5.1.1 User unknown") // relay rights do not make local users up
	c.send("DATA")
	c.expect("354 {*}")
	c.send("Subject: relayed", "", ".")
	c.expect("250 2.0.0 Ok: queued as {id}")
	ms := ts.spool.messages()
	if len(ms) != 1 {
		t.Fatalf("%d messages committed, want 1", len(ms))
	}
	rs := ms[0].env.Recipients
	if len(rs) != 2 || rs[0].Addr != "friend@remote.example" || rs[0].Mailbox != "" || rs[1].Mailbox != "example.com/alice" {
		t.Errorf("recipients %+v, want the remote one without mailbox and alice's", rs)
	}

	other := startServer(t, relayPolicy("192.0.2.0/24"))
	c = dial(t, other.addr)
	c.expect("220 {*}")
	c.send("EHLO relay.example.org")
	c.reply()
	c.send("MAIL FROM:<bob@example.org>")
	c.expect("250 2.1.0 Ok")
	c.send("RCPT TO:<friend@remote.example>")
	c.expect("554 5.7.1 Relay access denied")
}
