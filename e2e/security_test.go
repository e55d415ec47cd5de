package e2e

import (
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// TestSMTPSmuggling tries to hide a second transaction inside the data of
// a first one behind an end-of-data look-alike made with bare CR or LF
// (the SMTP smuggling attacks of 2023). Posthorn ends data only at
// CRLF.CRLF; bare line endings get the whole message refused with a 5xx
// once the real end arrives. So: one 5xx reply, the connection still in
// step (the next command gets its own reply), and neither the outer nor
// the smuggled message in any mailbox.
func TestSMTPSmuggling(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	smuggled := "MAIL FROM:<ceo@example.com>\r\nRCPT TO:<theboss@example.com>\r\nDATA\r\n" +
		"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nwire the money\r\n"
	for _, tc := range []struct{ name, fake string }{
		{"LF.LF", "\n.\n"},
		{"CRLF.LF", "\r\n.\n"},
		{"LF.CRLF", "\n.\r\n"},
		{"CR.CRLF", "\r.\r\n"},
		{"CR.CR", "\r.\r"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialSMTP(t, p.Addr)
			c.expect(smtp.CodeReady)
			c.cmd("EHLO attacker.example.org", smtp.CodeOK)
			c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
			c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
			c.cmd("DATA", smtp.CodeStartData)
			c.send("From: bob@example.org\r\nSubject: outer\r\n\r\nouter body" + tc.fake + smuggled + ".\r\n")
			r := c.readReply()
			if r.Code/100 != 5 {
				t.Errorf("reply to data with %q: %v, want 5xx", tc.fake, r)
			}
			// Had the look-alike ended the data, the replies to the
			// smuggled MAIL, RCPT and DATA would come next instead.
			c.cmd("NOOP", smtp.CodeOK)
			c.cmd("QUIT", smtp.CodeClosing)
			c.expectClosed()
		})
	}
	waitIdle(t, p)
	for _, u := range []string{"alice", "theboss"} {
		for _, m := range testutil.ReadMaildir(t, p.DataDir, "example.com", u) {
			t.Errorf("%s received a message from a smuggling attempt:\n%s", u, m)
		}
	}
}

// TestStartTLSSwaks: swaks --tls upgrades the session; the message is
// delivered and its Received field says ESMTPS (RFC 3848) with the TLS
// version and cipher.
func TestStartTLSSwaks(t *testing.T) {
	testutil.RequireTool(t, "swaks")
	p := testutil.StartPosthorn(t, baseConfig)
	out, code := swaks(t, p.Addr, "--tls", "--helo", "relay.example.org", "-f", "bob@example.org",
		"-t", "alice@example.com", "--data", "@"+writeFile(t, "m.eml", "Subject: secret\n\nover TLS"))
	if code != 0 {
		t.Fatalf("swaks exited %d:\n%s", code, out)
	}
	if !strings.Contains(out, "=== TLS started") {
		t.Errorf("swaks did not start TLS:\n%s", out)
	}
	d := checkOnlyMessage(t, p, "alice", lf("Subject: secret", "", "over TLS"))
	checkReceived(t, d.Received, "relay.example.org", "ESMTPS", "")
	if !strings.Contains(d.Received, "ESMTPS (TLS 1.") {
		t.Errorf("Received %q does not give the TLS version", d.Received)
	}
}

// TestStartTLSInjection is the STARTTLS command injection of CVE-2011-0411:
// commands written in clear text in the same packet as STARTTLS must not
// be executed inside the TLS session, where they would pass for the
// client's (RFC 3207 4.2: the client must start over). Had the server kept
// an injected command, its reply would arrive inside TLS ahead of ours and
// the replies would be out of step: an injected MAIL FROM would make the
// server answer 503 (no EHLO yet) where our EHLO expects 250, an injected
// EHLO would greet evil.example.net. Instead our EHLO gets its own
// greeting, our MAIL FROM gets 250, and the message carries our sender.
func TestStartTLSInjection(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig)
	injections := []struct{ name, cmds string }{
		{"MAIL", "MAIL FROM:<evil@example.net>\r\n"},
		{"EHLO+MAIL+RCPT", "EHLO evil.example.net\r\nMAIL FROM:<evil@example.net>\r\nRCPT TO:<theboss@example.com>\r\n"},
		{"RSET", "RSET\r\n"},
	}
	for _, inj := range injections {
		t.Run(inj.name, func(t *testing.T) {
			c := dialSMTP(t, p.Addr)
			c.expect(smtp.CodeReady)
			ehlo := c.cmd("EHLO client.example.org", smtp.CodeOK)
			if !contains(ehlo.Lines, "STARTTLS") {
				t.Fatalf("EHLO %v does not offer STARTTLS", ehlo)
			}
			c.send("STARTTLS\r\n" + inj.cmds)
			c.expectEnh(smtp.CodeReady, smtp.ESuccess)
			st := c.startTLS()
			if err := st.PeerCertificates[0].VerifyHostname(hostname); err != nil {
				t.Errorf("certificate: %v", err)
			}
			ehlo = c.cmd("EHLO client.example.org", smtp.CodeOK)
			if ehlo.Text() != hostname+" Hello client.example.org" {
				t.Errorf("first reply inside TLS is %v, want the reply to our EHLO", ehlo)
			}
			if contains(ehlo.Lines, "STARTTLS") {
				t.Errorf("EHLO inside TLS %v still offers STARTTLS", ehlo)
			}
			c.send("MAIL FROM:<a@example.org>\r\n")
			c.expectEnh(smtp.CodeOK, smtp.ESenderOK)
			c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
			c.cmd("DATA", smtp.CodeStartData)
			c.send(crlf("Subject: after STARTTLS", "", inj.name) + ".\r\n")
			c.expectEnh(smtp.CodeOK, smtp.ESuccess)
			c.cmd("QUIT", smtp.CodeClosing)
		})
	}
	msgs := testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", len(injections), deliveryTimeout)
	waitIdle(t, p)
	if len(msgs) != len(injections) {
		t.Errorf("alice has %d messages, want %d", len(msgs), len(injections))
	}
	for _, m := range msgs {
		d := splitDelivered(t, m)
		if d.ReturnPath != "a@example.org" {
			t.Errorf("Return-Path <%s>, want <a@example.org>", d.ReturnPath)
		}
		checkReceived(t, d.Received, "client.example.org", "ESMTPS", "")
	}
	if n := len(testutil.ReadMaildir(t, p.DataDir, "example.com", "theboss")); n != 0 {
		t.Errorf("theboss, named only by an injected RCPT, got %d messages", n)
	}
	waitLogCount(t, p, "discarded commands pipelined after STARTTLS", len(injections))
}
