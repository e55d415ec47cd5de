package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

// TestCheckConfig runs `posthorn check-config` on good and bad files: a
// good one exits 0 and says ok; a bad one exits 1 and names the file, the
// line and the key of every problem; usage errors exit 2.
func TestCheckConfig(t *testing.T) {
	bin := testutil.BuildPosthorn(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.toml", `hostname = "mx.example.com"
data_dir = "/nonexistent/is/fine/for/check-config"
[smtp]
listen = ["127.0.0.1:2600"]
max_message_size = "10MB"
[domains."example.com"]
users = ["alice", "theboss"]
[aliases]
"postmaster@example.com" = ["theboss@example.com"]
`)
	out, code := runTool(t, bin, "check-config", "--config", good)
	if code != 0 || !strings.Contains(out, good+": ok (1 domains, 1 aliases, listening on [127.0.0.1:2600])") {
		t.Errorf("check-config on a good file: exit %d:\n%s", code, out)
	}

	for _, tc := range []struct {
		name, content string
		want          []string // each must appear in the output
	}{
		{
			name: "unknown key",
			content: `hostname = "mx.example.com"
[smtp]
listen = ["127.0.0.1:2600"]
max_mesage_size = "10MB"
[domains."example.com"]
users = ["alice"]
`,
			want: []string{":4: smtp.max_mesage_size: unknown key"},
		},
		{
			name: "bad values",
			content: `hostname = "mx.example.com"
[smtp]
max_message_size = "lots"
command_timeout = "soon"
[domains."example.com"]
users = ["alice"]
`,
			want: []string{":3: smtp.max_message_size: ", ":4: smtp.command_timeout: "},
		},
		{
			name: "bad user name",
			content: `hostname = "mx.example.com"
[domains."example.com"]
users = ["alice", "Alice Smith"]
`,
			want: []string{`:3: domains."example.com".users[1]: `},
		},
		{
			name: "alias to unknown user",
			content: `[domains."example.com"]
users = ["alice"]
[aliases]
"postmaster@example.com" = ["bob@example.com"]
`,
			want: []string{`:4: aliases."postmaster@example.com"[0]: `, "bob@example.com"},
		},
		{
			name:    "syntax error",
			content: "hostname = \"mx.example.com\"\n[smtp\nlisten = []\n",
			want:    []string{":2: "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := write(strings.ReplaceAll(tc.name, " ", "_")+".toml", tc.content)
			out, code := runTool(t, bin, "check-config", "--config", f)
			if code != 1 {
				t.Errorf("exit %d, want 1:\n%s", code, out)
			}
			for _, w := range append(tc.want, f+":") {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
		})
	}

	out, code = runTool(t, bin, "check-config", "--config", filepath.Join(dir, "missing.toml"))
	if code != 1 || !strings.Contains(out, "missing.toml") {
		t.Errorf("check-config on a missing file: exit %d:\n%s", code, out)
	}
	out, code = runTool(t, bin, "check-config")
	if code != 2 {
		t.Errorf("check-config without --config: exit %d, want 2:\n%s", code, out)
	}
}

// TestDefaultServe runs `posthorn serve` with no configuration in an empty
// directory: the documented defaults are 127.0.0.1:2525, data in
// ./posthorn-data, and any user at localhost accepted into its own Maildir.
// Port 2525 is fixed by the defaults, so when something else holds it the
// test cannot run.
func TestDefaultServe(t *testing.T) {
	const defaultAddr = "127.0.0.1:2525"
	l, err := net.Listen("tcp", defaultAddr)
	if err != nil {
		t.Skipf("%s is in use, cannot test the default listener: %v", defaultAddr, err)
	}
	l.Close()
	work := t.TempDir()
	p := testutil.ServePosthorn(t, work, "serve")
	if p.Addr != defaultAddr {
		t.Fatalf("default listener %q, want %q", p.Addr, defaultAddr)
	}
	c := dialSMTP(t, defaultAddr)
	greeting := c.expect(smtp.CodeReady)
	if !strings.HasSuffix(greeting.Text(), " ESMTP Posthorn") {
		t.Errorf("greeting %v", greeting)
	}
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<bob@example.org>", smtp.CodeOK)
	c.cmd("RCPT TO:<anything@localhost>", smtp.CodeOK)
	c.cmd("RCPT TO:<someone@example.com>", smtp.CodeTransactionFailed) // not local by default
	c.cmd("DATA", smtp.CodeStartData)
	c.send(crlf("Subject: defaults", "", "hello localhost") + ".\r\n")
	c.expect(smtp.CodeOK)
	c.cmd("QUIT", smtp.CodeClosing)

	data := filepath.Join(work, "posthorn-data")
	msgs := testutil.WaitMaildir(t, data, "localhost", "anything", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, data, deliveryTimeout)
	ents, err := os.ReadDir(filepath.Join(data, "mail", "localhost", "anything", "new"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("./posthorn-data/mail/localhost/anything/new: %d files, err %v", len(ents), err)
	}
	d := splitDelivered(t, msgs[0])
	if d.Rest != lf("Subject: defaults", "", "hello localhost") {
		t.Errorf("delivered %q", d.Rest)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}

// TestIPv6Listener runs two listeners, 127.0.0.1 and [::1], and sends a
// message through each. The Received field names the client by an RFC 5321
// address literal: "[127.0.0.1]" for IPv4, "[IPv6:::1]" for IPv6 (RFC 5321
// 4.1.3: IPv6-address-literal = "IPv6:" IPv6-addr; 4.4: TCP-info).
func TestIPv6Listener(t *testing.T) {
	l6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	port6 := l6.Addr().(*net.TCPAddr).Port
	l6.Close()
	port4 := testutil.FreePort(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "posthorn.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`hostname = "mx.example.com"
data_dir = %q
[smtp]
listen = ["127.0.0.1:%d", "[::1]:%d"]
[domains."example.com"]
users = ["alice"]
`, data, port4, port6)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testutil.ServePosthorn(t, dir, "serve", "--config", cfg)
	if p.Port != port4 {
		t.Errorf("first listener on port %d, want %d", p.Port, port4)
	}
	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", port4), fmt.Sprintf("[::1]:%d", port6)} {
		sendMail(t, addr, "bob@example.org", []string{"alice@example.com"}, crlf("Subject: via "+addr, "", "x"))
	}
	msgs := testutil.WaitMaildir(t, data, "example.com", "alice", 2, deliveryTimeout)
	testutil.WaitQueueEmpty(t, data, deliveryTimeout)
	want := map[string]string{
		"127.0.0.1": "from client.example.org ([127.0.0.1]) ",
		"[::1]":     "from client.example.org ([IPv6:::1]) ",
	}
	for _, m := range msgs {
		d := splitDelivered(t, m)
		for prefix, w := range want {
			if strings.HasPrefix(d.Rest, "Subject: via "+prefix) && !strings.HasPrefix(d.Received, w) {
				t.Errorf("message via %s: Received %q, want it to start %q", prefix, d.Received, w)
			}
		}
	}
	if err := p.Stop(); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}
