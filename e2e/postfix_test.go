package e2e

// This file owns the interoperation tests with a real peer: Postfix from
// Debian receiving what Posthorn relays, and Postfix relaying into
// Posthorn. Each test runs its own Postfix instance, configured from
// scratch in the test's temporary directory, on one loopback port, with
// every DNS lookup turned off.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	"github.com/posthorn/posthorn/internal/testutil"
)

// postfixMainCF is the part of main.cf that both tests share. {{...}} are
// filled in by startPostfix; each test appends its routing and access
// settings.
const postfixMainCF = `# Written by e2e/postfix_test.go: a private Postfix instance on loopback.
compatibility_level = 3.6
queue_directory = {{dir}}/spool
data_directory = {{dir}}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = {{dir}}/maillog
maillog_file_prefixes = {{dir}}

myhostname = {{hostname}}
mydomain = {{hostname}}
myorigin = $myhostname
# example.com and example.org must not be local to Postfix: it is the
# peer of Posthorn here, not its replacement.
mydestination = localhost
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
readme_directory = no

inet_interfaces = 127.0.0.1
inet_protocols = ipv4

# Never touch the machine's resolver: it is off-machine and stalls. No
# MX or address lookups for outgoing mail (the relay host is an IP
# literal in brackets), no reverse lookups of clients.
disable_dns_lookups = yes
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtpd_peername_lookup = no

smtpd_banner = $myhostname ESMTP $mail_name
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
`

// postfixMasterCF runs the smtpd listener on one loopback port and the
// services a relay and a virtual(8) delivery need, none chrooted (the
// instance has no chroot tree).
const postfixMasterCF = `# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:{{port}} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfixInstance is a Postfix mail system started by a test.
type postfixInstance struct {
	// Addr is smtpd's listener, "127.0.0.1:PORT".
	Addr string
	// Dir holds the instance: conf/, spool/ (queue_directory), data/,
	// mail/ (virtual_mailbox_base) and maillog.
	Dir string
	// Conf is the config directory given to every command with -c.
	Conf string

	postfix, postqueue string
}

// startPostfix configures and starts a Postfix instance named hostname
// with postfixMainCF plus extraMainCF, in which {{dir}}, {{mail}},
// {{mailuid}} and {{mailgid}} are replaced: the mail owner is nobody, whom
// virtual(8) delivers as. smtpd offers STARTTLS with a fresh self-signed
// certificate. The instance is stopped when the test ends.
func startPostfix(t *testing.T, hostname, extraMainCF string) *postfixInstance {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "needs root to run a Postfix instance"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	pf := &postfixInstance{
		postfix:   testutil.RequireTool(t, "postfix"),
		postqueue: testutil.RequireTool(t, "postqueue"),
	}
	postconf := testutil.RequireTool(t, "postconf")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("user nobody: %v", err)
	}
	postfixUser, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("user postfix: %v", err)
	}

	pf.Dir = t.TempDir()
	pf.Conf = filepath.Join(pf.Dir, "conf")
	// Postfix's daemons drop to the postfix user, and virtual(8) writes as
	// nobody: both must reach into the test's 0700 temporary directory.
	testutil.MakeTraversable(t, pf.Dir)
	for _, d := range []string{"conf", "spool", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(pf.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	chownTo(t, filepath.Join(pf.Dir, "data"), postfixUser)
	chownTo(t, filepath.Join(pf.Dir, "mail"), nobody)
	writePostfixCert(t, pf.Conf, hostname)

	mainCF := postfixMainCF + `smtpd_tls_security_level = may
smtpd_tls_cert_file = {{dir}}/conf/cert.pem
smtpd_tls_key_file = {{dir}}/conf/key.pem
` + extraMainCF
	mainCF = strings.NewReplacer("{{dir}}", pf.Dir, "{{hostname}}", hostname,
		"{{mail}}", filepath.Join(pf.Dir, "mail"), "{{mailuid}}", nobody.Uid, "{{mailgid}}", nobody.Gid).Replace(mainCF)
	if err := os.WriteFile(filepath.Join(pf.Conf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	allowPostfixConfigDir(t, postconf, pf.Conf)

	// The free port may be taken before master binds it; then `postfix
	// start` fails (master -w reports the bind error) and we try another.
	for attempt := 1; ; attempt++ {
		port := testutil.FreePort(t)
		pf.Addr = "127.0.0.1:" + strconv.Itoa(port)
		master := strings.ReplaceAll(postfixMasterCF, "{{port}}", strconv.Itoa(port))
		if err := os.WriteFile(filepath.Join(pf.Conf, "master.cf"), []byte(master), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code := runTool(t, pf.postfix, "-c", pf.Conf, "start")
		if code == 0 {
			t.Cleanup(func() { pf.stop(t) })
			break
		}
		if attempt < 3 && strings.Contains(pf.maillog(), "in use") {
			continue
		}
		t.Fatalf("postfix start: exit %d\n%s\nmaillog:\n%s", code, out, pf.maillog())
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", pf.Addr, time.Second)
		if err == nil {
			c.Close()
			return pf
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix not listening on %s:\n%s", pf.Addr, pf.maillog())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func chownTo(t *testing.T, path string, u *user.User) {
	t.Helper()
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// writePostfixCert writes cert.pem and key.pem (a self-signed ECDSA
// certificate for hostname) into dir, so that the Posthorn client can
// negotiate STARTTLS with a real server.
func writePostfixCert(t *testing.T, dir, hostname string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: hostname},
		DNSNames:     []string{hostname},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	// smtpd reads the key as root before it drops privileges.
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// defaultPostfixMainCF is the default instance's main.cf. Postfix accepts
// `-c DIR` only for a directory that it lists in alternate_config_directories
// (postfix(1)), so each test adds its own directory there and takes it out
// again when it ends.
const defaultPostfixMainCF = "/etc/postfix/main.cf"

// allowPostfixConfigDir adds dir to alternate_config_directories of the
// default instance, keeping what is there, and registers its removal.
// Other processes (the other test, bench/run, other test binaries) edit the
// same parameter: the read-modify-write runs under an exclusive lock.
func allowPostfixConfigDir(t *testing.T, postconf, dir string) {
	t.Helper()
	editAltDirs := func(edit func([]string) []string) {
		unlock := lockPostfixMainCF(t)
		defer unlock()
		if _, err := os.Stat(defaultPostfixMainCF); os.IsNotExist(err) {
			// A package installed with "No configuration" has none.
			seed, err := os.ReadFile("/usr/share/postfix/main.cf.debian")
			if err != nil {
				seed = nil
			}
			if err := os.WriteFile(defaultPostfixMainCF, seed, 0o644); err != nil {
				t.Fatalf("create %s: %v", defaultPostfixMainCF, err)
			}
		}
		out, code := runTool(t, postconf, "-h", "alternate_config_directories")
		if code != 0 {
			t.Fatalf("postconf -h alternate_config_directories: exit %d\n%s", code, out)
		}
		// The value is a list separated by commas and/or white space.
		old := strings.FieldsFunc(out, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
		next := edit(old)
		if strings.Join(next, ",") == strings.Join(old, ",") {
			return
		}
		args := []string{"-e", "alternate_config_directories = " + strings.Join(next, ", ")}
		if len(next) == 0 {
			args = []string{"-X", "alternate_config_directories"}
		}
		if out, code := runTool(t, postconf, args...); code != 0 {
			t.Fatalf("postconf %v: exit %d\n%s", args, code, out)
		}
	}
	editAltDirs(func(dirs []string) []string {
		for _, d := range dirs {
			if d == dir {
				return dirs
			}
		}
		return append(append([]string(nil), dirs...), dir)
	})
	t.Cleanup(func() {
		editAltDirs(func(dirs []string) []string {
			var keep []string
			for _, d := range dirs {
				if d != dir {
					keep = append(keep, d)
				}
			}
			return keep
		})
	})
}

// lockPostfixMainCF takes an exclusive flock on a lock file next to the
// system's temporary files (not on main.cf, which postconf replaces by
// rename) and returns its release.
func lockPostfixMainCF(t *testing.T) func() {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "posthorn-e2e-postfix-main-cf.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock: %v", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// maillog returns Postfix's log so far.
func (pf *postfixInstance) maillog() string {
	b, _ := os.ReadFile(filepath.Join(pf.Dir, "maillog"))
	return string(b)
}

// stop runs `postfix -c CONF stop` and waits until every process of this
// instance is gone, so that the temporary directory can be removed. The
// master runs in a process group of its own (its PID), which holds
// exactly this instance's processes.
func (pf *postfixInstance) stop(t *testing.T) {
	t.Helper()
	pidText, err := os.ReadFile(filepath.Join(pf.Dir, "spool", "pid", "master.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil || pid <= 1 {
		t.Errorf("postfix master.pid: %q, %v", pidText, err)
	}
	if out, code := runTool(t, pf.postfix, "-c", pf.Conf, "stop"); code != 0 {
		t.Errorf("postfix stop: exit %d\n%s", code, out)
	}
	if pid > 1 && !waitGroupGone(pid, 15*time.Second) {
		t.Errorf("postfix (process group %d) still running 15s after stop; killing it", pid)
		syscall.Kill(-pid, syscall.SIGKILL)
		waitGroupGone(pid, 5*time.Second)
	}
	if t.Failed() {
		t.Logf("postfix maillog:\n%s", pf.maillog())
	}
}

// waitGroupGone waits until no live process has process group pgid.
// Zombies count as gone: the master is not our child, and PID 1 of some
// containers never reaps them.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !groupAlive(pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func groupAlive(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		// No /proc: fall back to the signal test, which counts zombies.
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ")".
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			return true
		}
	}
	return false
}

// waitQueueEmpty waits until `postqueue -p` reports an empty queue: every
// message Postfix accepted has been delivered or bounced.
func (pf *postfixInstance) waitQueueEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(deliveryTimeout)
	for {
		out, code := runTool(t, pf.postqueue, "-c", pf.Conf, "-p")
		if code == 0 && strings.Contains(out, "Mail queue is empty") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix queue not empty after %v:\n%s", deliveryTimeout, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readMaildir returns the messages virtual(8) delivered for user@domain
// (new/ and cur/). A Maildir not created yet holds none.
func (pf *postfixInstance) readMaildir(t *testing.T, domain, user string) []string {
	t.Helper()
	// virtual_mailbox_maps maps user@domain to domain/user/ under mail/,
	// which is where testutil looks for <dataDir>/mail/<domain>/<user>.
	return testutil.ReadMaildir(t, pf.Dir, domain, user)
}

// waitMaildir waits until user@domain has at least n messages.
func (pf *postfixInstance) waitMaildir(t *testing.T, domain, user string, n int) []string {
	t.Helper()
	return testutil.WaitMaildir(t, pf.Dir, domain, user, n, deliveryTimeout)
}

// headerField finds, in the header section of msg (LF line endings), the
// first field called name whose value contains marker, and returns that
// value unfolded and the field's position among all fields (0 = first);
// "", -1 when there is none.
func headerField(msg, name, marker string) (string, int) {
	head, _, _ := strings.Cut(msg, "\n\n")
	var fields []string
	for _, line := range strings.Split(head, "\n") {
		if (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimLeft(line, " \t")
			continue
		}
		fields = append(fields, line)
	}
	for i, f := range fields {
		if v, ok := strings.CutPrefix(f, name+": "); ok && strings.Contains(v, marker) {
			return v, i
		}
	}
	return "", -1
}

// TestPostfixReceivesFromPosthorn: Posthorn relays to Postfix, found as
// the MX of example.org through DNS. Postfix delivers the message once,
// intact, with Posthorn's trace field below its own, after STARTTLS; a
// recipient Postfix refuses in the same transaction comes back to the
// sender as a bounce quoting Postfix's reply, while the other recipient
// gets the message.
func TestPostfixReceivesFromPosthorn(t *testing.T) {
	start := time.Now()
	pf := startPostfix(t, "mx.example.org", `# Receive for example.org only; nobody may relay.
mynetworks =
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = example.org
virtual_mailbox_base = {{mail}}
virtual_mailbox_maps = inline:{ dave@example.org=example.org/dave/ }
virtual_uid_maps = static:{{mailuid}}
virtual_gid_maps = static:{{mailgid}}
`)
	_, port, _ := net.SplitHostPort(pf.Addr)
	dns := startDNS(t, "--mx-host=example.org,mx.example.org,10", "--host-record=mx.example.org,127.0.0.1")
	ph := testutil.StartPosthorn(t, fmt.Sprintf(`hostname = "mx.example.com"
[smtp]
relay_from = ["127.0.0.0/8"]
[domains."example.com"]
users = ["alice"]
[delivery]
port = %s
[dns]
servers = [%q]
`, port, dns))
	t.Logf("postfix and posthorn up after %v", time.Since(start).Round(time.Millisecond))

	// Complete header section, so that Postfix's cleanup adds nothing but
	// its Received field; lines with leading dots cross two dot-stuffing
	// hops.
	msg := []string{
		"From: Alice <alice@example.com>",
		"To: Dave <dave@example.org>",
		"Subject: to a real peer",
		"Date: Mon, 2 Feb 2026 10:00:00 +0000",
		"Message-ID: <postfix-interop-1@example.com>",
		"",
		"first line",
		".a line with a leading dot",
		"..",
		".",
		"last line",
	}
	id := sendMail(t, ph.Addr, "alice@example.com", []string{"dave@example.org"}, crlf(msg...))
	pf.waitMaildir(t, "example.org", "dave", 1)
	testutil.WaitQueueEmpty(t, ph.DataDir, deliveryTimeout)
	pf.waitQueueEmpty(t)
	got := pf.readMaildir(t, "example.org", "dave")
	if len(got) != 1 {
		t.Fatalf("dave has %d messages, want 1", len(got))
	}
	m := got[0]
	// virtual(8) writes Return-Path, X-Original-To and Delivered-To above
	// the message it received.
	if want := "Return-Path: <alice@example.com>\nX-Original-To: dave@example.org\nDelivered-To: dave@example.org\nReceived: "; !strings.HasPrefix(m, want) {
		t.Errorf("delivered message does not start with %q:\n%s", want, m)
	}
	if !strings.HasSuffix(m, "\n"+lf(msg...)) {
		t.Errorf("message not delivered intact; want it to end with\n%s\ngot:\n%s", lf(msg...), m)
	}
	if n := strings.Count(m, "\nReceived: "); n != 2 {
		t.Errorf("%d Received fields, want 2 (Posthorn's and Postfix's):\n%s", n, m)
	}
	ours, oursAt := headerField(m, "Received", "(Posthorn)")
	theirs, theirsAt := headerField(m, "Received", "(Postfix)")
	if ours == "" || theirs == "" {
		t.Fatalf("Received fields of Posthorn and Postfix not both present:\n%s", m)
	}
	checkReceived(t, ours, "client.example.org", "ESMTP", id)
	// Postfix saw Posthorn's EHLO name and address, and TLS (ESMTPS).
	if want := "from mx.example.com (unknown [127.0.0.1]) by mx.example.org (Postfix) with ESMTPS id "; !strings.HasPrefix(theirs, want) {
		t.Errorf("Postfix's Received: %q\nwant it to start with %q", theirs, want)
	}
	if !strings.Contains(theirs, "for <dave@example.org>") {
		t.Errorf("Postfix's Received: %q does not name the recipient", theirs)
	}
	if theirsAt > oursAt {
		t.Errorf("Postfix's Received field is below Posthorn's (RFC 5321 4.4: prepend):\n%s", m)
	}

	// One transaction, two recipients: Postfix accepts dave and refuses
	// unknown with 550 5.1.1. Dave gets the message; alice, the local
	// sender, gets a bounce for unknown only; nothing is retried.
	sendMail(t, ph.Addr, "alice@example.com", []string{"unknown@example.org", "dave@example.org"},
		crlf("From: alice@example.com", "Subject: partly refused", "", "body"))
	testutil.WaitMaildir(t, ph.DataDir, "example.com", "alice", 1, deliveryTimeout)
	pf.waitMaildir(t, "example.org", "dave", 2)
	testutil.WaitQueueEmpty(t, ph.DataDir, deliveryTimeout)
	pf.waitQueueEmpty(t)
	bounces := testutil.ReadMaildir(t, ph.DataDir, "example.com", "alice")
	if len(bounces) != 1 {
		t.Fatalf("alice has %d messages, want 1 bounce", len(bounces))
	}
	checkBounce(t, bounces[0], "unknown@example.org", "5.1.1", "partly refused")
	if !strings.Contains(bounces[0], "User unknown in virtual mailbox table") {
		t.Errorf("bounce does not quote Postfix's reply:\n%s", bounces[0])
	}
	if strings.Contains(bounces[0], "Final-Recipient: rfc822;dave@example.org") ||
		strings.Contains(bounces[0], "Final-Recipient: rfc822; dave@example.org") {
		t.Errorf("bounce reports dave, who was accepted:\n%s", bounces[0])
	}
	// This message lacks Date and Message-ID, which Postfix adds for a
	// loopback client (local_header_rewrite_clients): look for the rest.
	second := 0
	got = pf.readMaildir(t, "example.org", "dave")
	for _, m := range got {
		if strings.Contains(m, "\nSubject: partly refused\n") && strings.HasSuffix(m, "\n\nbody\n") {
			second++
		}
	}
	if len(got) != 2 || second != 1 {
		t.Errorf("dave has %d messages, %d of them the second one; want 2 and 1:\n%s", len(got), second, strings.Join(got, "\n---\n"))
	}
	t.Logf("test body done after %v", time.Since(start).Round(time.Millisecond))
}

// TestPostfixRelaysIntoPosthorn: Postfix, with Posthorn as its relayhost,
// passes on a message for a Posthorn mailbox. It arrives once, over
// STARTTLS, with Postfix's trace field below Posthorn's, and Postfix's
// queue drains.
func TestPostfixRelaysIntoPosthorn(t *testing.T) {
	start := time.Now()
	ph := testutil.StartPosthorn(t, baseConfig)
	pf := startPostfix(t, "pf.example.net", fmt.Sprintf(`# Relay for loopback clients, everything to Posthorn.
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains =
default_transport = smtp
# Brackets: the IP literal itself, no MX or address lookup.
relayhost = [127.0.0.1]:%d
smtp_tls_security_level = may
`, ph.Port))
	t.Logf("postfix and posthorn up after %v", time.Since(start).Round(time.Millisecond))

	msg := []string{
		"From: Bob <bob@example.net>",
		"To: Alice <alice@example.com>",
		"Subject: through Postfix",
		"Date: Mon, 2 Feb 2026 10:00:00 +0000",
		"Message-ID: <postfix-interop-2@example.net>",
		"",
		"relayed by Postfix",
		".leading dot",
		"end",
	}
	pfID := sendMail(t, pf.Addr, "bob@example.net", []string{"alice@example.com"}, crlf(msg...))
	testutil.WaitMaildir(t, ph.DataDir, "example.com", "alice", 1, deliveryTimeout)
	pf.waitQueueEmpty(t)
	waitIdle(t, ph)
	got := testutil.ReadMaildir(t, ph.DataDir, "example.com", "alice")
	if len(got) != 1 {
		t.Fatalf("alice has %d messages, want 1", len(got))
	}
	d := splitDelivered(t, got[0])
	if d.ReturnPath != "bob@example.net" {
		t.Errorf("Return-Path <%s>, want <bob@example.net>", d.ReturnPath)
	}
	// Postfix's smtp client gave its hostname in EHLO and used STARTTLS.
	checkReceived(t, d.Received, "pf.example.net", "ESMTPS", "")
	theirs, at := headerField(d.Rest, "Received", "(Postfix)")
	if at != 0 {
		t.Fatalf("Postfix's Received field is not right below Posthorn's:\n%s", got[0])
	}
	if want := "from client.example.org (unknown [127.0.0.1]) by pf.example.net (Postfix) with ESMTP id " + pfID; !strings.HasPrefix(theirs, want) {
		t.Errorf("Postfix's Received: %q\nwant it to start with %q", theirs, want)
	}
	if n := strings.Count(got[0], "\nReceived: "); n != 2 {
		t.Errorf("%d Received fields, want 2:\n%s", n, got[0])
	}
	if !strings.HasSuffix(d.Rest, "\n"+lf(msg...)) {
		t.Errorf("message not delivered intact; want it to end with\n%s\ngot:\n%s", lf(msg...), got[0])
	}
	t.Logf("test body done after %v", time.Since(start).Round(time.Millisecond))
}
