package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// TestQueueCommands drives `posthorn queue list|show|retry|delete` against
// a running server whose queue holds a deferred message: theboss's
// mailbox cannot be written (a file stands where its directory should be),
// and the next attempt is an hour away.
func TestQueueCommands(t *testing.T) {
	p := testutil.StartPosthorn(t, baseConfig+"[queue]\nretry_intervals = [\"1h\"]\n")
	queue := func(args ...string) (string, int) {
		t.Helper()
		return runTool(t, p.Bin, append([]string{"queue"}, append(args, "--config", p.ConfigPath)...)...)
	}
	blocker := filepath.Join(p.DataDir, "mail", "example.com", "theboss")
	if err := os.MkdirAll(filepath.Dir(blocker), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blocker, []byte("not a mailbox"), 0o600); err != nil {
		t.Fatal(err)
	}
	id := sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com", "theboss@example.com"},
		crlf("Subject: deferred for theboss", "", "body"))
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	p.WaitLog("delivery deferred", deliveryTimeout)

	out, code := queue("list")
	if code != 0 {
		t.Fatalf("queue list: exit %d\n%s", code, out)
	}
	for _, want := range []string{id, "<bob@example.org>", "theboss@example.com", "queued, next try in", "Mailbox unavailable", "alice@example.com", "delivered", "1 messages"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue list does not show %q:\n%s", want, out)
		}
	}
	// The operator sees the cause behind the reply, path included.
	if !strings.Contains(out, "451 4.3.0 Mailbox unavailable (") || !strings.Contains(out, "not a directory)") {
		t.Errorf("queue list does not show the reply and its cause:\n%s", out)
	}
	out, code = queue("show", id)
	if code != 0 || !strings.Contains(out, `"sender": "bob@example.org"`) || !strings.Contains(out, "Subject: deferred for theboss") {
		t.Errorf("queue show %s: exit %d\n%s", id, code, out)
	}

	// The mailbox is repaired; retry delivers now, not in an hour.
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	out, code = queue("retry", id)
	if code != 0 || !strings.Contains(out, "scheduled") {
		t.Fatalf("queue retry %s: exit %d\n%s", id, code, out)
	}
	testutil.WaitMaildir(t, p.DataDir, "example.com", "theboss", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)

	// A deleted message is not delivered, even when its mailbox comes back.
	if err := os.RemoveAll(filepath.Join(p.DataDir, "mail", "example.com", "theboss")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blocker, []byte("not a mailbox"), 0o600); err != nil {
		t.Fatal(err)
	}
	id2 := sendMail(t, p.Addr, "bob@example.org", []string{"theboss@example.com"}, crlf("Subject: to be deleted", "", "body"))
	deadline := time.Now().Add(deliveryTimeout)
	for !strings.Contains(p.Log(), `deferred" id=`+id2) {
		if time.Now().After(deadline) {
			t.Fatalf("message %s was not deferred", id2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, code = queue("delete", id2); code != 0 {
		t.Fatalf("queue delete %s: exit %d\n%s", id2, code, out)
	}
	if out, _ = queue("list"); strings.Contains(out, id2) {
		t.Errorf("queue list still shows deleted %s:\n%s", id2, out)
	}
	os.Remove(blocker)
	if out, code = queue("retry"); code != 0 {
		t.Fatalf("queue retry: exit %d\n%s", code, out)
	}
	time.Sleep(300 * time.Millisecond)
	if got := testutil.ReadMaildir(t, p.DataDir, "example.com", "theboss"); len(got) != 0 {
		t.Errorf("deleted message delivered anyway: %d messages", len(got))
	}
	if out, code = queue("delete", "661D5D25F1106FEEA8"); code != 1 || !strings.Contains(out, "no such message") {
		t.Errorf("queue delete of an unknown ID: exit %d\n%s", code, out)
	}

	// Without a server, retry says so; delete works on the spool directly.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, code = queue("retry"); code != 1 || !strings.Contains(out, "no server is running") {
		t.Errorf("queue retry without a server: exit %d\n%s", code, out)
	}
}
