package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// dovecotConf is a self-contained Dovecot 2.3 configuration: IMAP only, on
// one loopback port, without TLS, with one password user and every
// runtime directory inside the test's own. Dovecot will not read mail as
// root (it refuses uid 0 from the userdb and for mail access), so the
// mail user is an unprivileged one, the same that posthorn runs as.
const dovecotConf = `protocols = imap
listen = 127.0.0.1
base_dir = {{dir}}/run
state_dir = {{dir}}/state
log_path = {{dir}}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{{data}}/mail/%d/%n
first_valid_uid = {{uid}}
first_valid_gid = {{gid}}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {{dir}}/passwd
}
userdb {
  driver = static
  args = uid={{uid}} gid={{gid}}
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{port}}
  }
  inet_listener imaps {
    port = 0
  }
}
`

// startDovecot runs `dovecot -F` with dovecotConf serving the Maildirs
// under dataDir, and returns its IMAP address. It is stopped when the test
// ends.
func startDovecot(t *testing.T, dataDir string, uid, gid int) string {
	t.Helper()
	bin := testutil.RequireTool(t, "dovecot")
	dir := t.TempDir()
	// Dovecot's login processes run as dovenull and must reach the sockets
	// in base_dir.
	testutil.MakeTraversable(t, dir)
	port := testutil.FreePort(t)
	conf := strings.NewReplacer("{{dir}}", dir, "{{data}}", dataDir, "{{uid}}", strconv.Itoa(uid),
		"{{gid}}", strconv.Itoa(gid), "{{port}}", strconv.Itoa(port)).Replace(dovecotConf)
	confPath := filepath.Join(dir, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte("alice@example.com:{PLAIN}wonderland\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := runTool(t, bin, "-n", "-c", confPath); code != 0 {
		t.Fatalf("dovecot -n rejects the configuration:\n%s", out)
	}
	cmd := exec.Command(bin, "-F", "-c", confPath)
	out, err := os.Create(filepath.Join(dir, "dovecot.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dovecot: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	logs := func() string {
		a, _ := os.ReadFile(filepath.Join(dir, "dovecot.out"))
		b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		return string(a) + string(b)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("dovecot did not stop on SIGTERM")
		}
		out.Close()
		if t.Failed() {
			t.Logf("dovecot log:\n%s", logs())
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case <-done:
			t.Fatalf("dovecot exited:\n%s", logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dovecot not listening on %s:\n%s", addr, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// imapMailbox is what testdata/imap_fetch.py reports.
type imapMailbox struct {
	Exists   int `json:"exists"`
	Messages []struct {
		UID  int    `json:"uid"`
		Body string `json:"body"` // base64
	} `json:"messages"`
}

// imapFetch logs in as alice@example.com with Python's imaplib and fetches
// her INBOX.
func imapFetch(t *testing.T, addr string) []string {
	t.Helper()
	py := testutil.RequireTool(t, "/usr/bin/python3")
	script, err := filepath.Abs("testdata/imap_fetch.py")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	out, code := runTool(t, py, script, host, port, "alice@example.com", "wonderland")
	if code != 0 {
		t.Fatalf("imap_fetch.py exited %d:\n%s", code, out)
	}
	var mb imapMailbox
	if err := json.Unmarshal([]byte(lastLine(out)), &mb); err != nil {
		t.Fatalf("imap_fetch.py output %q: %v", out, err)
	}
	if mb.Exists != len(mb.Messages) {
		t.Errorf("IMAP: %d messages exist, %d fetched", mb.Exists, len(mb.Messages))
	}
	var bodies []string
	for _, m := range mb.Messages {
		b, err := base64.StdEncoding.DecodeString(m.Body)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(b))
	}
	return bodies
}

// TestDovecotReadsMaildir: Dovecot, over IMAP, reads what Posthorn wrote.
// Posthorn runs as nobody (as it would as a mail user in production) so
// that Dovecot can serve the files. The first message is delivered before
// Dovecot starts and the second while it runs; IMAP returns both, byte for
// byte as in the Maildir (with CRLF line endings, as IMAP sends them), and
// Dovecot has taken the first into cur/ as a Maildir reader does.
func TestDovecotReadsMaildir(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "needs root to run posthorn and dovecot as the mail user"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	testutil.RequireTool(t, "dovecot")
	testutil.RequireTool(t, "/usr/bin/python3")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody: %v", err)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	p := testutil.StartPosthornAs(t, baseConfig, uint32(uid), uint32(gid))

	first := crlf(seedMessage(t)...)
	id1 := sendMail(t, p.Addr, "bob@example.org", []string{"alice@example.com"}, first)
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 1, deliveryTimeout)
	waitIdle(t, p)

	addr := startDovecot(t, p.DataDir, uid, gid)
	got := imapFetch(t, addr)
	if len(got) != 1 {
		t.Fatalf("IMAP INBOX has %d messages, want 1", len(got))
	}
	checkIMAPCopy(t, p, got[0], id1, strings.ReplaceAll(first, "\r\n", "\n"))

	second := crlf("From: carol@example.org", "Subject: while Dovecot runs", "", "Grüße", ".", "end")
	id2 := sendMail(t, p.Addr, "carol@example.org", []string{"alice@example.com"}, second)
	testutil.WaitMaildir(t, p.DataDir, "example.com", "alice", 2, deliveryTimeout)
	waitIdle(t, p)
	got = imapFetch(t, addr)
	if len(got) != 2 {
		t.Fatalf("IMAP INBOX has %d messages, want 2", len(got))
	}
	checkIMAPCopy(t, p, got[0], id1, strings.ReplaceAll(first, "\r\n", "\n"))
	checkIMAPCopy(t, p, got[1], id2, strings.ReplaceAll(second, "\r\n", "\n"))

	files := testutil.ReadMaildirFiles(t, p.DataDir, "example.com", "alice")
	for _, f := range files {
		if f.Sub != "cur" || !strings.Contains(f.Name, ":2,") {
			t.Errorf("Dovecot did not take %s/%s into cur/ with flags", f.Sub, f.Name)
		}
	}
}

// checkIMAPCopy checks one message fetched over IMAP against the Maildir
// file of queue ID id, and its content after the trace fields against
// want (LF line endings).
func checkIMAPCopy(t *testing.T, p *testutil.Posthorn, imapBody, id, want string) {
	t.Helper()
	var file string
	for _, f := range testutil.ReadMaildirFiles(t, p.DataDir, "example.com", "alice") {
		if strings.Contains(f.Name, ".M"+id+"I") {
			file = f.Data
		}
	}
	if file == "" {
		t.Fatalf("no Maildir file for %s", id)
	}
	if imapBody != strings.ReplaceAll(file, "\n", "\r\n") {
		t.Errorf("IMAP body of %s differs from the Maildir file:\nIMAP:    %q\nMaildir: %q", id, imapBody, file)
	}
	d := splitDelivered(t, strings.ReplaceAll(imapBody, "\r\n", "\n"))
	if d.Rest != want {
		t.Errorf("IMAP message %s:\n%q\nwant:\n%q", id, d.Rest, want)
	}
	if !strings.Contains(d.Received, " id "+id) {
		t.Errorf("IMAP message %s has Received %q", id, d.Received)
	}
}
