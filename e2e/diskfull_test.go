package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// TestDiskFull puts the data directory on a small tmpfs and sends messages
// until it is full. Every message answered 250 must be delivered whole; the
// one that does not fit must get 451 4.3.0 (RFC 5321: try again later) and
// leave nothing half-written behind, neither in the spool nor in a Maildir.
func TestDiskFull(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+"[queue]\nretry_intervals = [\"1s\"]\n")
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=768k,mode=0700", "tmpfs", p.DataDir).CombinedOutput(); err != nil {
		// Tests run as root here and on CI; a machine that cannot mount
		// cannot run this test, which must not pass silently there.
		if os.Getenv("CI") != "" {
			t.Fatalf("mount tmpfs: %v: %s", err, out)
		}
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	// Registered after StartPosthorn's own cleanup, so it runs before the
	// server is stopped: a lazy unmount waits for the server to let go.
	t.Cleanup(func() { exec.Command("umount", "-l", p.DataDir).Run() })
	p.Restart()

	line := strings.Repeat("0123456789", 9) + "\r\n" // 92 octets
	var acked []string
	full := false
	for i := 0; i < 20 && !full; i++ {
		body := crlf(fmt.Sprintf("Subject: filler %d", i), "") + strings.Repeat(line, 1500) // ~138 KB: past the in-memory limit
		c := dialSMTP(t, p.Addr)
		c.expect(smtp.CodeReady)
		c.cmd("EHLO client.example.org", smtp.CodeOK)
		c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
		c.cmd("RCPT TO:<alice@example.com>", smtp.CodeOK)
		c.cmd("DATA", smtp.CodeStartData)
		c.send(dotStuff(body) + ".\r\n")
		r := c.readReply()
		switch {
		case r.Code == smtp.CodeOK:
			acked = append(acked, body)
		case r.Code == smtp.CodeLocalError && strings.HasPrefix(r.Text(), smtp.ETempSystem):
			full = true
		default:
			t.Fatalf("message %d: reply %v, want 250 or 451 4.3.0", i, r)
		}
		c.cmd("QUIT", smtp.CodeClosing)
	}
	if !full {
		t.Fatal("the file system never filled up: the test did not test anything")
	}
	if len(acked) == 0 {
		t.Fatal("no message fitted at all: the tmpfs is too small for the test")
	}
	// Nothing half-written: no spool leftovers, no files in Maildir tmp/.
	if left := testutil.SpoolEntries(t, p.DataDir, "tmp"); len(left) != 0 {
		t.Errorf("spool tmp/ holds %v after the disk filled up", left)
	}
	if ents, err := os.ReadDir(filepath.Join(p.DataDir, "mail/example.com/alice/tmp")); err != nil || len(ents) != 0 {
		t.Errorf("Maildir tmp/ holds %d entries (err %v) after the disk filled up", len(ents), err)
	}
	// What got 250 is delivered whole, or queued whole for a retry (the
	// spool had room for it, the mailbox did not).
	delivered := testutil.ReadMaildir(t, p.DataDir, "example.com", "alice")
	queued := testutil.SpoolEntries(t, p.DataDir, "queue")
	checkAcked(t, delivered, acked)
	if len(delivered)+len(queued) < len(acked) {
		t.Fatalf("%d acknowledged, but only %d delivered and %d queued", len(acked), len(delivered), len(queued))
	}
	// The reader deletes its mail; the queue then delivers the rest, and
	// new mail fits again.
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(p.DataDir, "mail/example.com/alice", sub)
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	rest := len(acked) - len(delivered)
	waitMailboxes(t, p, rest, "alice")
	checkAcked(t, testutil.ReadMaildir(t, p.DataDir, "example.com", "alice"), acked)
	sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, crlf("Subject: small", "", "still works"))
	waitMailboxes(t, p, rest+1, "alice")
	if !strings.Contains(p.Log(), "no space left on device") {
		t.Error("the full disk left no trace in the log")
	}
}

// checkAcked checks that every delivered message is one of the acknowledged
// ones, complete, and that none is there twice.
func checkAcked(t *testing.T, delivered []string, acked []string) {
	t.Helper()
	seen := map[int]bool{}
	for _, m := range delivered {
		d := splitDelivered(t, m)
		idx := -1
		for i, b := range acked {
			if d.Rest == strings.ReplaceAll(b, "\r\n", "\n") {
				idx = i
			}
		}
		switch {
		case idx < 0:
			t.Errorf("delivered message is not one that was acknowledged (truncated?): %d bytes", len(m))
		case seen[idx]:
			t.Errorf("acknowledged message %d delivered twice", idx)
		}
		seen[idx] = true
	}
}
