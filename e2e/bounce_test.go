package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// blockMailbox puts a regular file where user's Maildir would be, so every
// delivery to it fails temporarily.
func blockMailbox(t *testing.T, p *testutil.Posthorn, user string) {
	t.Helper()
	path := filepath.Join(p.DataDir, "mail", "example.com", user)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("not a mailbox"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkBounce checks a delivered RFC 3464 report: from <>, a multipart/report
// with the failed recipient, the status and the original's headers.
func checkBounce(t *testing.T, msg, failedRcpt, status, subject string) {
	t.Helper()
	// RFC 3464 / RFC 5321 4.5.5: bounces go out from the null sender.
	if !strings.HasPrefix(msg, "Return-Path: <>\n") {
		t.Errorf("bounce does not start with Return-Path: <>:\n%s", abbrev(msg))
	}
	for _, want := range []string{
		"Content-Type: multipart/report; report-type=delivery-status",
		"Auto-Submitted: auto-replied",
		"Final-Recipient: rfc822;" + failedRcpt,
		"Action: failed",
		"Status: " + status,
		"Subject: " + subject, // the original's header section
	} {
		if !strings.Contains(strings.ReplaceAll(msg, "; ", ";"), strings.ReplaceAll(want, "; ", ";")) {
			t.Errorf("bounce lacks %q:\n%s", want, msg)
		}
	}
}

// TestBounceOnExpiry: a recipient that stays undeliverable past the queue
// lifetime fails, and the sender (a local user here) gets a bounce with
// status 4.4.7; the original leaves the queue.
func TestBounceOnExpiry(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+"[queue]\nretry_intervals = [\"300ms\"]\nmax_lifetime = \"1s\"\n")
	blockMailbox(t, p, "theboss")
	sendMail(t, p.Addr, "alice@example.com", []string{"theboss@example.com"}, crlf("Subject: will expire", "", "body"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	got := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	checkBounce(t, got[0], "theboss@example.com", "4.4.7", "will expire")
}

// TestBounceByOperator: `posthorn queue bounce ID` gives up on a message at
// once and bounces it; a message from the null sender is never bounced
// (no bounce loops) but kept for the operator.
func TestBounceByOperator(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+"[queue]\nretry_intervals = [\"1h\"]\n")
	blockMailbox(t, p, "theboss")
	id := sendMail(t, p.Addr, "alice@example.com", []string{"theboss@example.com"}, crlf("Subject: given up", "", "body"))
	p.WaitLog(`deferred" id=`+id, deliveryTimeout)
	out, code := runTool(t, p.Bin, "queue", "bounce", id, "--config", p.ConfigPath)
	if code != 0 {
		t.Fatalf("queue bounce: exit %d\n%s", code, out)
	}
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	got := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	checkBounce(t, got[0], "theboss@example.com", "5.0.0", "given up")
	if !strings.Contains(got[0], "cancelled by the postmaster") {
		t.Errorf("bounce does not say why:\n%s", got[0])
	}
	if left := testutil.SpoolEntries(t, p.DataDir, "queue"); len(left) != 0 {
		t.Errorf("queue holds %v after the bounce", left)
	}

	// From <>: bounce refused, message kept.
	id2 := sendMail(t, p.Addr, "", []string{"theboss@example.com"}, crlf("Subject: a bounce itself", "", "body"))
	p.WaitLog(`deferred" id=`+id2, deliveryTimeout)
	out, code = runTool(t, p.Bin, "queue", "bounce", id2, "--config", p.ConfigPath)
	if code == 0 || !strings.Contains(out, "no bounce sent") {
		t.Errorf("queue bounce of a message from <>: exit %d\n%s", code, out)
	}
	time.Sleep(200 * time.Millisecond)
	if got := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice"); len(got) != 1 {
		t.Errorf("alice has %d messages, want only the first bounce", len(got))
	}
	out, _ = runTool(t, p.Bin, "queue", "list", "--config", p.ConfigPath)
	if !strings.Contains(out, id2) || !strings.Contains(out, "failed") {
		t.Errorf("the unbounceable message is not kept for the operator:\n%s", out)
	}
}

// TestBounceHonoursDSNParameters: RFC 3461 on the receiving side. RET=FULL
// returns the whole message and ENVID comes back in the report; a
// recipient with NOTIFY=NEVER fails silently.
func TestBounceHonoursDSNParameters(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+"[queue]\nretry_intervals = [\"300ms\"]\nmax_lifetime = \"1s\"\n")
	blockMailbox(t, p, "theboss")
	send := func(mail, rcpt, subject string) {
		c := dialSMTP(t, p.Addr)
		c.expect(220)
		ehlo := c.cmd("EHLO client.example.org", 250)
		if !contains(ehlo.Lines, "DSN") {
			t.Fatalf("EHLO %v does not offer DSN", ehlo)
		}
		c.cmd(mail, 250)
		c.cmd(rcpt, 250)
		c.cmd("DATA", 354)
		c.send(crlf("Subject: "+subject, "", "the body line") + ".\r\n")
		c.expect(250)
		c.cmd("QUIT", 221)
	}
	send("MAIL FROM:<alice@example.com>", "RCPT TO:<theboss@example.com> NOTIFY=NEVER", "silent failure")
	send("MAIL FROM:<alice@example.com> RET=FULL ENVID=env+2B42", "RCPT TO:<theboss@example.com> ORCPT=rfc822;boss+2Bx@example.com", "full return")
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	time.Sleep(300 * time.Millisecond)
	got := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	if len(got) != 1 {
		t.Fatalf("alice has %d bounces, want 1 (NOTIFY=NEVER asks for none)", len(got))
	}
	checkBounce(t, got[0], "theboss@example.com", "4.4.7", "full return")
	for _, want := range []string{"Original-Envelope-Id: env+42", "Original-Recipient: rfc822;boss+x@example.com", "message/rfc822", "the body line"} {
		if !strings.Contains(strings.ReplaceAll(got[0], "; ", ";"), strings.ReplaceAll(want, "; ", ";")) {
			t.Errorf("bounce lacks %q:\n%s", want, got[0])
		}
	}
}

// TestDelayNotice: a recipient still pending after delivery.delay_notice
// gets its sender one "delayed" report (RFC 3464), not one per retry, and
// the message is still delivered once the mailbox comes back.
func TestDelayNotice(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+"[queue]\nretry_intervals = [\"200ms\"]\n[delivery]\ndelay_notice = \"500ms\"\n")
	blockMailbox(t, p, "theboss")
	sendMail(t, p.Addr, "alice@example.com", []string{"theboss@example.com"}, crlf("Subject: slow", "", "body"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	time.Sleep(800 * time.Millisecond) // several more retries
	got := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	if len(got) != 1 {
		t.Fatalf("alice has %d delay reports, want exactly 1", len(got))
	}
	for _, want := range []string{"Action: delayed", "Final-Recipient: rfc822;theboss@example.com", "Status: 4.", "Will-Retry-Until:"} {
		if !strings.Contains(strings.ReplaceAll(got[0], "; ", ";"), want) {
			t.Errorf("delay report lacks %q:\n%s", want, got[0])
		}
	}
	os.Remove(filepath.Join(p.DataDir, "mail", "example.com", "theboss"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "theboss", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
}
