package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.CleanupBuild()
	os.Exit(code)
}

// hostname is the name every test server gives itself.
const hostname = "mx.example.com"

// baseConfig is the server most tests run: example.com with the two
// mailboxes of the seed session. testutil adds data_dir and smtp.listen.
const baseConfig = `hostname = "mx.example.com"
[smtp]
max_connections_per_ip = 300
[domains."example.com"]
users = ["alice", "theboss"]
`

// Bounds for waiting on the server. Delivery takes milliseconds; the
// bounds are for a loaded two-core machine.
const (
	ioTimeout       = 20 * time.Second
	deliveryTimeout = 20 * time.Second
	toolTimeout     = 60 * time.Second
)

// rawClient speaks SMTP over a plain TCP socket, byte by byte as the test
// writes it: nothing is stuffed, fixed or reordered, so the test controls
// exactly what the server sees.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// smtpReply is one (possibly multi-line) SMTP reply.
type smtpReply struct {
	Code  int
	Lines []string // the text of each line, after "NNN-" or "NNN "
}

func (r smtpReply) String() string {
	return fmt.Sprintf("%d %s", r.Code, strings.Join(r.Lines, " | "))
}

// Text is the text of the first line.
func (r smtpReply) Text() string {
	if len(r.Lines) == 0 {
		return ""
	}
	return r.Lines[0]
}

func dialSMTP(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// send writes s as it is.
func (c *rawClient) send(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", abbrev(s), err)
	}
}

// readReply reads one reply, failing the test on a malformed one.
func (c *rawClient) readReply() smtpReply {
	c.t.Helper()
	r, err := c.tryReadReply()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	return r
}

func (c *rawClient) tryReadReply() (smtpReply, error) {
	var r smtpReply
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return r, fmt.Errorf("after %v: %w", r, err)
		}
		if !strings.HasSuffix(line, "\r\n") {
			return r, fmt.Errorf("reply line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if len(line) < 4 || (line[3] != ' ' && line[3] != '-') {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		if r.Code != 0 && code != r.Code {
			return r, fmt.Errorf("reply line %q changes the code of %v", line, r)
		}
		r.Code = code
		r.Lines = append(r.Lines, line[4:])
		if line[3] == ' ' {
			return r, nil
		}
	}
}

// expect reads a reply and checks its code.
func (c *rawClient) expect(code int) smtpReply {
	c.t.Helper()
	r := c.readReply()
	if r.Code != code {
		c.t.Fatalf("got reply %v, want code %d", r, code)
	}
	return r
}

// expectEnh reads a reply and checks its code and enhanced status code
// (which starts the text once the client said EHLO).
func (c *rawClient) expectEnh(code int, enh string) smtpReply {
	c.t.Helper()
	r := c.expect(code)
	if !strings.HasPrefix(r.Text(), enh+" ") {
		c.t.Fatalf("got reply %v, want enhanced code %s", r, enh)
	}
	return r
}

// cmd sends one command line and checks the reply's code.
func (c *rawClient) cmd(line string, code int) smtpReply {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// expectClosed checks that the server closes the connection: the next read
// ends with EOF, with no more bytes.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.Peek(c.r.Buffered())
		c.t.Fatalf("server sent %q after the last reply, want the connection closed", string(b)+string(rest))
	}
	if !errors.Is(err, io.EOF) {
		c.t.Fatalf("want EOF from a closed connection, got %v", err)
	}
}

// expectGone checks that the connection is gone: closed, or reset (which
// is how the kernel closes a socket that still had unread input when its
// process died).
func (c *rawClient) expectGone() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err := c.r.ReadByte()
	if err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		c.t.Fatalf("want the connection closed, got %v", err)
	}
}

// startTLS runs the TLS handshake on the connection (after the server's
// 220 to STARTTLS) and continues the session inside it.
func (c *rawClient) startTLS() *tls.ConnectionState {
	c.t.Helper()
	if n := c.r.Buffered(); n > 0 {
		b, _ := c.r.Peek(n)
		c.t.Fatalf("server sent %q in clear text after 220 to STARTTLS", b)
	}
	// The server's certificate is self-signed: nothing to verify against.
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: hostname})
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

// sendMail runs a complete EHLO session that delivers body (with CRLF
// line endings, not yet dot-stuffed) and returns the queue ID.
func sendMail(t testing.TB, addr, from string, rcpts []string, body string) string {
	t.Helper()
	c := dialSMTP(t, addr)
	c.expect(smtp.CodeReady)
	c.cmd("EHLO client.example.org", smtp.CodeOK)
	c.cmd("MAIL FROM:<"+from+">", smtp.CodeOK)
	for _, r := range rcpts {
		c.cmd("RCPT TO:<"+r+">", smtp.CodeOK)
	}
	c.cmd("DATA", smtp.CodeStartData)
	c.send(dotStuff(body) + ".\r\n")
	id := queueID(t, c.expect(smtp.CodeOK))
	c.cmd("QUIT", smtp.CodeClosing)
	return id
}

// dotStuff doubles leading dots (RFC 5321 4.5.2) and makes sure the text
// ends with CRLF, ready for the terminating ".".
func dotStuff(body string) string {
	lines := strings.SplitAfter(body, "\r\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") {
			lines[i] = "." + l
		}
	}
	s := strings.Join(lines, "")
	if !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

// queueID extracts the ID from the reply to the end of data.
func queueID(t testing.TB, r smtpReply) string {
	t.Helper()
	_, id, ok := strings.Cut(r.Text(), "queued as ")
	if !ok || id == "" || strings.ContainsAny(id, " /") {
		t.Fatalf("reply %v does not name a queue ID", r)
	}
	return id
}

// crlf joins lines with CRLF and ends the result with one.
func crlf(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

// lf joins lines with LF and ends the result with one: how a Maildir
// stores what was sent as crlf(lines...).
func lf(lines ...string) string { return strings.Join(lines, "\n") + "\n" }

// delivered is a Maildir copy taken apart: the trace fields Posthorn adds
// at the top, and the message as the client sent it.
type delivered struct {
	ReturnPath string // the address inside <>
	Received   string // unfolded, without the "Received: " name
	Rest       string // everything after the Received field
}

// splitDelivered checks that msg starts with a Return-Path field and then
// one Received field, as Posthorn writes them, and takes them off.
func splitDelivered(t testing.TB, msg string) delivered {
	t.Helper()
	var d delivered
	first, rest, _ := strings.Cut(msg, "\n")
	rp, ok := strings.CutPrefix(first, "Return-Path: <")
	if !ok || !strings.HasSuffix(rp, ">") {
		t.Fatalf("delivered message does not start with a Return-Path field:\n%s", msg)
	}
	d.ReturnPath = strings.TrimSuffix(rp, ">")
	if !strings.HasPrefix(rest, "Received: ") {
		t.Fatalf("Return-Path is not followed by a Received field:\n%s", msg)
	}
	var field []string
	for {
		line, more, found := strings.Cut(rest, "\n")
		if !found {
			t.Fatalf("message ends inside the Received field:\n%s", msg)
		}
		if len(field) > 0 && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			break
		}
		field = append(field, strings.TrimLeft(line, " \t"))
		rest = more
	}
	d.Received = strings.TrimPrefix(strings.Join(field, " "), "Received: ")
	d.Rest = rest
	return d
}

// checkReceived checks the parts of a Received field that a test can
// predict: who sent, who received with which protocol, the queue ID, and a
// date within a minute of now.
func checkReceived(t testing.TB, received, helo, proto, id string) {
	t.Helper()
	want := "from " + helo + " ([127.0.0.1]) by " + hostname + " (Posthorn) with " + proto + " "
	if !strings.HasPrefix(received, want) {
		t.Errorf("Received: %q\nwant it to start with %q", received, want)
	}
	if id != "" && !strings.Contains(received, " id "+id+" ") && !strings.Contains(received, " id "+id+";") {
		t.Errorf("Received: %q does not name queue ID %s", received, id)
	}
	_, date, ok := strings.Cut(received, "; ")
	if !ok {
		t.Errorf("Received: %q has no date", received)
		return
	}
	when, err := time.Parse(time.RFC1123Z, date)
	if err != nil {
		t.Errorf("Received date %q: %v", date, err)
	} else if d := time.Since(when); d < -time.Minute || d > time.Minute {
		t.Errorf("Received date %v is not now", when)
	}
}

// runTool runs an external program with a timeout and returns its
// combined output and exit code.
func runTool(t testing.TB, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish within %v:\n%s", name, toolTimeout, out.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return out.String(), 0
}

// swaks runs swaks against the server at addr with the given options.
func swaks(t testing.TB, addr string, args ...string) (string, int) {
	t.Helper()
	bin := testutil.RequireTool(t, "swaks")
	host, port, _ := net.SplitHostPort(addr)
	all := append([]string{"--server", host, "--port", port, "--timeout", "20"}, args...)
	return runTool(t, bin, all...)
}

// writeFile writes content into a new file in a temporary directory.
func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pySend describes one smtplib session for testdata/smtplib_send.py.
type pySend struct {
	Host        string   `json:"host"`
	Port        int      `json:"port"`
	Helo        string   `json:"helo,omitempty"` // HELO instead of EHLO
	Ehlo        string   `json:"ehlo,omitempty"`
	From        string   `json:"from"`
	To          []string `json:"to"`
	Message     string   `json:"message"` // path of a file holding the message
	MailOptions []string `json:"mail_options,omitempty"`
}

// pyResult is what smtplib_send.py prints.
type pyResult struct {
	OK      bool                      `json:"ok"`
	Code    int                       `json:"code"`
	Error   string                    `json:"error"`
	Refused map[string][2]interface{} `json:"refused"`
}

// pythonSend sends a message with Python's smtplib (Debian's python3, not
// whatever python3 comes first in PATH).
func pythonSend(t testing.TB, p *testutil.Posthorn, s pySend, message []byte) pyResult {
	t.Helper()
	py := testutil.RequireTool(t, "/usr/bin/python3")
	s.Host, s.Port = "127.0.0.1", p.Port
	s.Message = writeFile(t, "message.eml", string(message))
	spec, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("testdata/smtplib_send.py")
	if err != nil {
		t.Fatal(err)
	}
	out, code := runTool(t, py, script, writeFile(t, "spec.json", string(spec)))
	if code != 0 {
		t.Fatalf("smtplib_send.py exited %d:\n%s", code, out)
	}
	var res pyResult
	if err := json.Unmarshal([]byte(lastLine(out)), &res); err != nil {
		t.Fatalf("smtplib_send.py output %q: %v", out, err)
	}
	return res
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// abbrev shortens s for an error message.
func abbrev(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// waitMailboxes waits until each user@example.com has at least n messages,
// then until the server is idle (see waitIdle).
func waitMailboxes(t testing.TB, p *testutil.Posthorn, n int, users ...string) {
	t.Helper()
	for _, u := range users {
		testutil.WaitMaildir(t, p.DataDir, "example.com", u, n, deliveryTimeout)
	}
	waitIdle(t, p)
}

// waitIdle waits until everything accepted so far is delivered, and checks
// that no message is left half-received in the spool.
func waitIdle(t testing.TB, p *testutil.Posthorn) {
	t.Helper()
	testutil.WaitQueueEmpty(t, p.DataDir, deliveryTimeout)
	if left := testutil.SpoolEntries(t, p.DataDir, "tmp"); len(left) > 0 {
		t.Errorf("spool tmp/ not empty: %v", left)
	}
}
