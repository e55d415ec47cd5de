package smtpclient

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// startSink runs Postfix's smtp-sink on a free loopback port, dumping
// each transaction into a file of dir, and returns its address.
func startSink(t testing.TB, dir string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "smtp-sink")
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	// smtp-sink writes its dumps after dropping privileges.
	testutil.MakeTraversable(t, dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	var args []string
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // required when run as root
	}
	args = append(args, "-d", filepath.Join(dir, "%H%M%S."), addr, "10")
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return addr
		}
		if i == 50 {
			t.Fatalf("smtp-sink not listening on %s: %v\n%s", addr, err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSmtpSink(t *testing.T) {
	dir := t.TempDir()
	addr := startSink(t, dir)
	ctx := testCtx(t)
	c, err := Dial(ctx, addr, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.Extensions()["PIPELINING"]; !ok {
		t.Errorf("smtp-sink offers PIPELINING; parsed %v", c.Extensions())
	}
	var bodies []string
	for i := range 3 {
		body := fmt.Sprintf("Subject: sink %d\r\n\r\n.\r\n..leading dots\r\nmessage %d\r\n", i, i)
		bodies = append(bodies, body)
		res, err := c.Send(ctx, Message{
			From:     "sender@example.org",
			To:       []string{"a@example.net", "b@example.net"},
			Body8Bit: true,
			Body:     strings.NewReader(body),
		})
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		for _, r := range res {
			if r.Err != nil || !strings.HasPrefix(r.Reply, "250 2.0.0") {
				t.Errorf("message %d, %s: %+v", i, r.Addr, r)
			}
		}
	}
	if err := c.Quit(); err != nil {
		t.Errorf("Quit: %v", err)
	}
	// smtp-sink writes a dump per transaction: its own header lines, then
	// the message with LF line endings, dots unstuffed, and an empty line.
	var dumps []string
	for i := 0; i < 50; i++ {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		if len(files) == 3 {
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				dumps = append(dumps, string(b))
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(dumps) != 3 {
		t.Fatalf("smtp-sink dumped %d transactions, want 3", len(dumps))
	}
	for _, b := range bodies {
		want := strings.ReplaceAll(b, "\r\n", "\n") + "\n"
		if !slices.ContainsFunc(dumps, func(d string) bool {
			return strings.HasSuffix(d, want) && strings.Contains(d, "X-Mail-Args: <sender@example.org> BODY=8BITMIME\n") &&
				strings.Contains(d, "X-Rcpt-Args: <a@example.net>\n") && strings.Contains(d, "X-Rcpt-Args: <b@example.net>\n")
		}) {
			t.Errorf("no dump ends with %q and has the envelope; dumps:\n%s", want, strings.Join(dumps, "\n----\n"))
		}
	}
}
