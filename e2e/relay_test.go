package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/testutil"
)

// startDNS runs dnsmasq, a real DNS server, on 127.0.0.1 with only the
// records given as dnsmasq options (--mx-host=..., --host-record=...). It
// answers nothing else and asks nobody upstream, so no test reaches the
// machine's resolver. It returns "127.0.0.1:port".
func startDNS(t *testing.T, records ...string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "dnsmasq")
	dir := t.TempDir()
	for attempt := 0; attempt < 5; attempt++ {
		port := freeUDPPort(t)
		args := append([]string{
			"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
			"--listen-address=127.0.0.1", "--bind-interfaces", fmt.Sprintf("--port=%d", port),
			"--pid-file=" + filepath.Join(dir, "dnsmasq.pid"), "--user=root", "--log-queries", "--log-facility=-",
		}, records...)
		cmd := exec.Command(bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatalf("dnsmasq: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-done:
				t.Logf("dnsmasq exited: %s", out.String())
				deadline = time.Time{} // try another port
			default:
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				t.Cleanup(func() {
					cmd.Process.Signal(syscall.SIGTERM)
					select {
					case <-done:
					case <-time.After(5 * time.Second):
						cmd.Process.Kill()
						<-done
					}
					if t.Failed() {
						t.Logf("dnsmasq log:\n%s", out.String())
					}
				})
				return addr
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Kill()
	}
	t.Fatal("dnsmasq did not start")
	return ""
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// relayWorld is two Posthorn servers and a DNS server on loopback: "mx"
// serves example.com and relays for 127.0.0.0/8; "remote" is the MX of
// example.net (user carol) according to the DNS server.
type relayWorld struct {
	mx, remote *testutil.Posthorn
}

func newRelayWorld(t *testing.T, mxExtra string) relayWorld {
	t.Helper()
	remote := testutil.StartPosthorn(t, `hostname = "mx1.example.net"
[domains."example.net"]
users = ["carol"]
`)
	dns := startDNS(t, "--mx-host=example.net,mx1.example.net,10", "--host-record=mx1.example.net,127.0.0.1")
	mx := testutil.StartPosthorn(t, fmt.Sprintf(`hostname = "mx.example.com"
[smtp]
relay_from = ["127.0.0.0/8"]
[domains."example.com"]
users = ["alice"]
[delivery]
port = %d
[dns]
servers = [%q]
%s`, remote.Port, dns, mxExtra))
	return relayWorld{mx: mx, remote: remote}
}

// TestRelayThroughMX: a client in relay_from sends to a remote domain; the
// message is queued, the MX is found through DNS, and it arrives in the
// remote server's mailbox once, over STARTTLS, with both trace headers.
func TestRelayThroughMX(t *testing.T) {
	w := newRelayWorld(t, "")
	sendMail(t, w.mx.Addr, "alice@example.com", []string{"carol@example.net"}, crlf("Subject: across", "", "relayed body"))
	testutil.WaitMaildir(t, w.remote.DataDir, "example.net", "carol", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, w.mx.DataDir, deliveryTimeout)
	got := testutil.ReadMaildir(t, w.remote.DataDir, "example.net", "carol")
	if len(got) != 1 {
		t.Fatalf("carol has %d messages, want 1", len(got))
	}
	m := got[0]
	if !strings.HasPrefix(m, "Return-Path: <alice@example.com>\n") {
		t.Errorf("Return-Path is not the original sender:\n%s", m)
	}
	if n := strings.Count(m, "\nReceived: "); n != 2 {
		t.Errorf("%d Received headers, want 2 (ours and the remote's):\n%s", n, m)
	}
	for _, want := range []string{"by mx1.example.net (Posthorn) with ESMTPS", "by mx.example.com (Posthorn) with ESMTP", "Subject: across\n\nrelayed body\n"} {
		if !strings.Contains(m, want) {
			t.Errorf("relayed message lacks %q:\n%s", want, m)
		}
	}
}

// TestRelayRefusedBounces: the remote server refuses the recipient (550
// 5.1.1); the sender, a local user of the relaying server, gets a bounce
// with that status and the remote's reply, and nothing is retried.
func TestRelayRefusedBounces(t *testing.T) {
	w := newRelayWorld(t, "")
	sendMail(t, w.mx.Addr, "alice@example.com", []string{"nobody@example.net"}, crlf("Subject: to nobody", "", "body"))
	testutil.WaitMaildir(t, w.mx.DataDir, "example.com", "alice", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, w.mx.DataDir, deliveryTimeout)
	got := testutil.ReadMaildir(t, w.mx.DataDir, "example.com", "alice")
	checkBounce(t, got[0], "nobody@example.net", "5.1.1", "to nobody")
	if !strings.Contains(got[0], "550 5.1.1 User unknown") {
		t.Errorf("bounce does not quote the remote reply:\n%s", got[0])
	}
}

// TestRelayRetriedAfterOutage: the remote server is down when the message
// is queued; it is retried and delivered exactly once when it comes back,
// also across a restart of the relaying server.
func TestRelayRetriedAfterOutage(t *testing.T) {
	w := newRelayWorld(t, "[queue]\nretry_intervals = [\"300ms\"]\n")
	if err := w.remote.Stop(); err != nil {
		t.Fatal(err)
	}
	sendMail(t, w.mx.Addr, "alice@example.com", []string{"carol@example.net"}, crlf("Subject: patience", "", "body"))
	w.mx.WaitLog("delivery deferred", deliveryTimeout)
	if err := w.mx.Stop(); err != nil {
		t.Fatal(err)
	}
	w.mx.Restart()
	w.remote.Restart()
	testutil.WaitMaildir(t, w.remote.DataDir, "example.net", "carol", 1, deliveryTimeout)
	testutil.WaitQueueEmpty(t, w.mx.DataDir, deliveryTimeout)
	time.Sleep(500 * time.Millisecond)
	if got := testutil.ReadMaildir(t, w.remote.DataDir, "example.net", "carol"); len(got) != 1 {
		t.Errorf("carol has %d copies, want exactly 1", len(got))
	}
	if _, err := os.Stat(filepath.Join(w.mx.DataDir, "mail", "example.com", "alice")); err == nil {
		t.Error("alice got mail (a bounce?) although the message was delivered")
	}
}

// TestAliasToRemoteAndRemoteBounce: an alias that points outside relays
// without relay_from rights, and when the remote refuses the target, the
// bounce itself travels to the (remote) sender through the MX.
func TestAliasToRemoteAndRemoteBounce(t *testing.T) {
	w := newRelayWorld(t, "[aliases]\n\"friend@example.com\" = [\"carol@example.net\"]\n\"ghost@example.com\" = [\"nobody@example.net\"]\n")
	// carol writes from the remote domain to the alias: it comes back to her.
	sendMail(t, w.mx.Addr, "carol@example.net", []string{"friend@example.com"}, crlf("Subject: round trip", "", "body"))
	testutil.WaitMaildir(t, w.remote.DataDir, "example.net", "carol", 1, deliveryTimeout)
	// To an alias whose target the remote refuses: carol gets the bounce.
	sendMail(t, w.mx.Addr, "carol@example.net", []string{"ghost@example.com"}, crlf("Subject: lost", "", "body"))
	testutil.WaitMaildir(t, w.remote.DataDir, "example.net", "carol", 2, deliveryTimeout)
	testutil.WaitQueueEmpty(t, w.mx.DataDir, deliveryTimeout)
	var bounce string
	for _, m := range testutil.ReadMaildir(t, w.remote.DataDir, "example.net", "carol") {
		if strings.Contains(m, "multipart/report") {
			bounce = m
		}
	}
	if bounce == "" {
		t.Fatal("carol got no bounce")
	}
	checkBounce(t, bounce, "nobody@example.net", "5.1.1", "lost")
	if !strings.Contains(bounce, "Original-Recipient: rfc822;ghost@example.com") && !strings.Contains(bounce, "Original-Recipient: rfc822; ghost@example.com") {
		t.Errorf("bounce does not name the alias the sender used:\n%s", bounce)
	}
}

// TestRelayOverIPv6: an MX whose only address is IPv6 (::1) gets the mail.
func TestRelayOverIPv6(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	f := serveFaultyMX(t, l, func(int) string { return "accept" })
	dns := startDNS(t, "--mx-host=example.net,mx6.example.net,10", "--host-record=mx6.example.net,::1", "--local=/mx6.example.net/")
	p := relayingPosthorn(t, f.port(), dns, "")
	sendMail(t, p.Addr, "alice@example.com", []string{"dave@example.net"}, crlf("Subject: over v6", "", "body"))
	got := waitBodies(t, f, 1)
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	if !strings.Contains(got[0], "Subject: over v6") {
		t.Errorf("remote got %q", got[0])
	}
}
