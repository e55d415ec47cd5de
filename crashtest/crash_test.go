package crashtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tunables, overridable from the environment for longer soak runs:
// CRASHTEST_KILLS (default 12), CRASHTEST_CLIENTS (default 8) and
// CRASHTEST_SEED (default: random, logged so a run can be repeated).
const (
	defaultKills   = 12
	defaultClients = 8
	minKillGap     = 100 * time.Millisecond
	maxKillGap     = 700 * time.Millisecond
	drainTimeout   = 30 * time.Second
)

var mailboxes = []string{"alice", "theboss"}

func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// buildServer compiles ./cmd/posthorn of this module into a temporary
// directory.
func buildServer(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("not inside the posthorn module")
	}
	bin := filepath.Join(t.TempDir(), "posthorn")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/posthorn")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/posthorn: %v\n%s", err, out)
	}
	return bin
}

// freePort returns a loopback port that was free a moment ago. It is
// taken below Linux's ephemeral range (32768 and up), so that the outgoing
// connections and ":0" listeners of tests running alongside cannot take it
// while the server is down between a kill and its restart.
func freePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free loopback port between 20000 and 32000")
	return 0
}

// server runs generations of the posthorn process on one config.
type server struct {
	t       testing.TB
	bin     string
	cfg     string
	addr    string
	dataDir string
	logDir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	gen  atomic.Int64 // generation currently running (1-based)
}

func newServer(t testing.TB, bin string) *server {
	t.Helper()
	dir := t.TempDir()
	s := &server{
		t:       t,
		bin:     bin,
		cfg:     filepath.Join(dir, "posthorn.toml"),
		addr:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		dataDir: filepath.Join(dir, "data"),
		logDir:  filepath.Join(dir, "logs"),
	}
	if err := os.MkdirAll(s.logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Short retry interval: a recipient deferred by a crash-time error must
	// come round again within the drain wait.
	config := fmt.Sprintf(`hostname = "mx.example.com"
data_dir = %q

[log]
level = "info"

[smtp]
listen = [%q]
max_connections = 1000
max_connections_per_ip = 1000

[tls]
disable = true

[queue]
retry_intervals = ["1s"]

[domains."example.com"]
users = ["alice", "theboss"]
`, s.dataDir, s.addr)
	if err := os.WriteFile(s.cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cmd != nil {
			s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s
}

// start starts the next generation and waits until it accepts connections.
func (s *server) start() {
	s.t.Helper()
	for try := 0; ; try++ {
		if s.startOnce() {
			return
		}
		if try == 5 {
			s.t.Fatalf("server generation %d did not start; log:\n%s", s.gen.Load(), s.log(int(s.gen.Load())))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *server) startOnce() bool {
	s.t.Helper()
	gen := s.gen.Load() + 1
	logf, err := os.Create(filepath.Join(s.logDir, fmt.Sprintf("gen%03d.log", gen)))
	if err != nil {
		s.t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(s.bin, "serve", "--config", s.cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	s.gen.Store(gen)
	// The process logs "listening for SMTP" once its listener is bound: a
	// successful dial alone could reach some other process on the port.
	logPath := logf.Name()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return false // exited early, e.g. the port was briefly taken
		default:
		}
		if b, _ := os.ReadFile(logPath); bytes.Contains(b, []byte(`msg="listening for SMTP"`)) {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.t.Fatalf("server generation %d not listening after 15s", gen)
	return false
}

// kill SIGKILLs the running generation and reaps it.
func (s *server) kill() {
	s.t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("kill: %v", err)
	}
	<-done
}

// stop ends the running generation with SIGTERM, the graceful way, and
// reports whether it exited cleanly.
func (s *server) stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		return errors.New("no exit within 15s of SIGTERM")
	}
	if !cmd.ProcessState.Success() {
		return fmt.Errorf("exit status %v", cmd.ProcessState)
	}
	return nil
}

func (s *server) log(gen int) string {
	b, _ := os.ReadFile(filepath.Join(s.logDir, fmt.Sprintf("gen%03d.log", gen)))
	return string(b)
}

// Outcomes of one message, as its client saw them.
const (
	unsent  = iota // the transaction broke before any message data was sent
	unknown        // data sent, no final reply: may or may not be delivered, never twice
	acked          // 250 "queued as": must be delivered exactly once
	refused        // a 4xx/5xx final reply: must not be delivered
)

// message is one message a client tried to send.
type message struct {
	client, seq int
	seed        uint64
	mid         string // Message-ID, without the angle brackets
	outcome     int
	queueID     string    // from the 250 reply
	ackGen      int64     // server generation that acknowledged it
	ackAt       time.Time // when the 250 arrived
}

func (m *message) sender() string { return fmt.Sprintf("client%d@crash.test", m.client) }

// content returns the message header and body as sent (CRLF, before dot
// stuffing). Both are derived from the seed, so nothing is kept in memory.
func (m *message) content() (header, body []byte) {
	header = fmt.Appendf(nil, "From: <%s>\r\nTo: <alice@example.com>, <theboss@example.com>\r\nSubject: crash test %d/%d\r\nMessage-ID: <%s>\r\n",
		m.sender(), m.client, m.seq, m.mid)
	rng := rand.New(rand.NewPCG(m.seed, 0x5eed))
	var size int
	switch r := rng.IntN(100); {
	case r < 70:
		size = 100 + rng.IntN(3000)
	case r < 95:
		size = 3000 + rng.IntN(60<<10)
	default:
		size = 64<<10 + rng.IntN(448<<10)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_=+!?()<>@"
	body = make([]byte, 0, size+200)
	for len(body) < size {
		switch rng.IntN(25) {
		case 0:
			body = append(body, '.') // a lone dot, stuffed on the wire
		case 1:
			body = append(body, ".."...)
		case 2:
			// an empty line
		default:
			if rng.IntN(10) == 0 {
				body = append(body, '.')
			}
			for range 1 + rng.IntN(120) {
				body = append(body, alphabet[rng.IntN(len(alphabet))])
			}
		}
		body = append(body, '\r', '\n')
	}
	return header, body
}

// dotStuff prepares body for DATA (RFC 5321 4.5.2): a line that starts
// with a dot gets another one.
func dotStuff(body []byte) []byte {
	out := make([]byte, 0, len(body)+len(body)/50)
	bol := true
	for _, c := range body {
		if bol && c == '.' {
			out = append(out, '.')
		}
		out = append(out, c)
		bol = c == '\n'
	}
	return out
}

// client sends messages over and over, reconnecting after every failure,
// until stop is closed; it records each message's outcome.
type client struct {
	id    int
	srv   *server
	rng   *rand.Rand
	stop  <-chan struct{}
	msgs  []*message
	proto []string // protocol surprises, reported as test errors
}

var errProto = errors.New("unexpected reply")

func (c *client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

func (c *client) run() {
	for !c.stopped() {
		conn, err := net.DialTimeout("tcp", c.srv.addr, time.Second)
		if err != nil {
			time.Sleep(time.Duration(5+c.rng.IntN(15)) * time.Millisecond)
			continue
		}
		c.session(conn)
		conn.Close()
	}
}

// session runs one connection: greeting, EHLO, then messages until the
// connection breaks or the client is told to stop.
func (c *client) session(conn net.Conn) {
	br := bufio.NewReaderSize(conn, 4096)
	bw := bufio.NewWriterSize(conn, 64<<10)
	cmd := func(line string, want int) (int, string, error) {
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if line != "" {
			bw.WriteString(line + "\r\n")
			if err := bw.Flush(); err != nil {
				return 0, "", err
			}
		}
		code, text, err := readReply(br)
		if err != nil {
			return 0, "", err
		}
		if code != want {
			return code, text, fmt.Errorf("%w: %q -> %d %s", errProto, line, code, text)
		}
		return code, text, nil
	}
	if _, _, err := cmd("", 220); err != nil {
		return
	}
	if _, _, err := cmd(fmt.Sprintf("EHLO client%d.crash.test", c.id), 250); err != nil {
		return
	}
	for !c.stopped() {
		m := &message{client: c.id, seq: len(c.msgs), seed: c.rng.Uint64()}
		m.mid = fmt.Sprintf("c%d.%d.%x@crash.test", c.id, m.seq, m.seed&0xFFFFFFFF)
		c.msgs = append(c.msgs, m)
		steps := []struct {
			line string
			want int
		}{
			{"MAIL FROM:<" + m.sender() + ">", 250},
			{"RCPT TO:<alice@example.com>", 250},
			{"RCPT TO:<theboss@example.com>", 250},
			{"DATA", 354},
		}
		for _, st := range steps {
			if _, _, err := cmd(st.line, st.want); err != nil {
				if errors.Is(err, errProto) {
					c.proto = append(c.proto, err.Error())
				}
				return // m stays unsent
			}
		}
		// From here on the server may have the whole message.
		m.outcome = unknown
		header, body := m.content()
		bw.Write(header)
		bw.WriteString("\r\n")
		bw.Write(dotStuff(body))
		bw.WriteString(".\r\n")
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if bw.Flush() != nil {
			return
		}
		code, text, err := readReply(br)
		if err != nil {
			return // no final reply: unknown
		}
		switch {
		case code == 250:
			m.outcome = acked
			m.ackAt = time.Now()
			m.ackGen = c.srv.gen.Load()
			if f := strings.Fields(text); len(f) > 0 && strings.Contains(text, "queued as") {
				m.queueID = f[len(f)-1]
			} else {
				c.proto = append(c.proto, "250 reply without a queue ID: "+text)
			}
		default:
			m.outcome = refused
			c.proto = append(c.proto, fmt.Sprintf("message refused: %d %s", code, text))
			if _, _, err := cmd("RSET", 250); err != nil {
				return
			}
		}
	}
	cmd("QUIT", 221)
}

// readReply reads one SMTP reply, possibly multi-line, and returns its code
// and the text of its last line.
func readReply(br *bufio.Reader) (int, string, error) {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, "", fmt.Errorf("short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, "", fmt.Errorf("bad reply line %q", line)
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.TrimSpace(line[min(4, len(line)):]), nil
		}
	}
}

// copyFile is one file found in a Maildir.
type copyFile struct {
	path string
	data []byte
}

var midRe = regexp.MustCompile(`(?m)^Message-ID: <([^>\n]+)>$`)

func TestCrashRecovery(t *testing.T) {
	kills := envInt(t, "CRASHTEST_KILLS", defaultKills)
	nClients := envInt(t, "CRASHTEST_CLIENTS", defaultClients)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CRASHTEST_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("CRASHTEST_SEED=%q: %v", v, err)
		}
	}
	t.Logf("CRASHTEST_SEED=%d kills=%d clients=%d", seed, kills, nClients)
	rng := rand.New(rand.NewPCG(seed, 1))
	t0 := time.Now()

	srv := newServer(t, buildServer(t))
	t.Logf("built in %v", time.Since(t0).Round(time.Millisecond))

	// For the first half of the kills theboss's Maildir cannot be created
	// (a regular file stands in its place): his copies fail with a 4xx, so
	// every message goes through the spool and the retry queue, and the
	// kills hit messages that were acknowledged but not fully delivered.
	// The block is lifted while the server is down; later generations must
	// recover those messages from the spool. The second half exercises
	// the ordinary path.
	blockedKills := kills / 2
	blocker := filepath.Join(srv.dataDir, "mail", "example.com", "theboss")
	unblockedAt := time.Now()
	if blockedKills > 0 {
		if err := os.MkdirAll(filepath.Dir(blocker), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blocker, []byte("not a Maildir"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srv.start()

	stop := make(chan struct{})
	stopClients := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(stopClients) // also when the test fails half way
	clients := make([]*client, nClients)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = &client{id: i, srv: srv, rng: rand.New(rand.NewPCG(seed, uint64(100+i))), stop: stop}
		wg.Add(1)
		go func() { defer wg.Done(); clients[i].run() }()
	}

	// A mail reader (as an IMAP server would) moves copies it has seen from
	// new/ to cur/, adding flags to the name: a retried delivery must
	// recognise its copy there too, not put a second one in new/. It runs
	// in the background and once while the server is down after each kill,
	// so that the retries of the next generation meet moved copies.
	var moved atomic.Int64
	var readerMu sync.Mutex
	mrng := rand.New(rand.NewPCG(seed, 2))
	readMail := func(share int) {
		readerMu.Lock()
		defer readerMu.Unlock()
		for _, mb := range mailboxes {
			dir := filepath.Join(srv.dataDir, "mail", "example.com", mb)
			ents, _ := os.ReadDir(filepath.Join(dir, "new"))
			for _, e := range ents {
				if mrng.IntN(100) >= share {
					continue // some stay in new/, to test that case too
				}
				// Never over an existing file: a plain rename would
				// silently merge a duplicate copy into the first one.
				if unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, "new", e.Name()),
					unix.AT_FDCWD, filepath.Join(dir, "cur", e.Name()+":2,S"), unix.RENAME_NOREPLACE) == nil {
					moved.Add(1)
				}
			}
		}
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				// Prompt, like a server pushing new mail to an idle
				// client: many copies are in cur/ before the queue's
				// first retry looks for them.
				readMail(50)
			}
		}
	}()

	chaos := time.Now()
	killTimes := make([]time.Time, 0, kills)
	var killWait, restartWait time.Duration // how long reaping and restarting took
	for k := range kills {
		time.Sleep(minKillGap + time.Duration(rng.Int64N(int64(maxKillGap-minKillGap))))
		tk := time.Now()
		srv.kill()
		killTimes = append(killTimes, time.Now())
		killWait += time.Since(tk)
		readMail(80)
		if k+1 == blockedKills {
			if err := os.Remove(blocker); err != nil {
				t.Fatal(err)
			}
			unblockedAt = time.Now()
		}
		ts := time.Now()
		srv.start()
		restartWait += time.Since(ts)
	}
	// Some traffic on the last generation too, then stop sending.
	time.Sleep(300 * time.Millisecond)
	stopClients()
	finished := make(chan struct{})
	go func() { wg.Wait(); <-readerDone; close(finished) }()
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("clients did not finish within 30s of being stopped")
	}
	t.Logf("chaos phase: %v (reaping killed processes %v, restarting %v)", time.Since(chaos).Round(time.Millisecond),
		killWait.Round(time.Millisecond), restartWait.Round(time.Millisecond))

	// Let the last generation deliver what the spool holds.
	queueDir := filepath.Join(srv.dataDir, "spool", "queue")
	drained := time.Now()
	for {
		ents, err := os.ReadDir(queueDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			break
		}
		if time.Since(drained) > drainTimeout {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("spool queue/ not empty %v after the last client stopped: %v\nlog of the last generation:\n%s",
				drainTimeout, names, tail(srv.log(int(srv.gen.Load())), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("spool drained in %v", time.Since(drained).Round(time.Millisecond))
	if err := srv.stop(); err != nil {
		t.Errorf("graceful stop of the last generation: %v", err)
	}
	// Emptied files parked for reuse may stay in tmp/; content may not.
	ents, _ := os.ReadDir(filepath.Join(srv.dataDir, "spool", "tmp"))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Size() > 0 {
			t.Errorf("spool tmp/%s holds %d bytes after every client finished", e.Name(), fi.Size())
		}
	}

	// Gather what the clients saw.
	var all []*message
	for _, c := range clients {
		all = append(all, c.msgs...)
		for _, p := range c.proto {
			t.Errorf("client %d: %s", c.id, p)
		}
	}
	byMID := map[string]*message{}
	count := map[int]int{}
	for _, m := range all {
		byMID[m.mid] = m
		count[m.outcome]++
	}
	if count[acked] == 0 {
		t.Fatal("no message was acknowledged: the test exercised nothing")
	}

	// Every delivered copy must be whole and belong to a message sent.
	copies := map[string]map[string][]string{} // mailbox -> Message-ID -> file names
	tmpLeft := 0
	for _, mb := range mailboxes {
		copies[mb] = map[string][]string{}
		dir := filepath.Join(srv.dataDir, "mail", "example.com", mb)
		for _, sub := range []string{"new", "cur"} {
			for _, f := range readFiles(t, filepath.Join(dir, sub)) {
				mid, err := checkCopy(f.data, byMID)
				if err != nil {
					t.Errorf("%s/%s: %v", mb, filepath.Base(f.path), err)
					continue
				}
				copies[mb][mid] = append(copies[mb][mid], filepath.Base(f.path))
			}
		}
		// A crash between writing into tmp/ and the rename leaves a file
		// there; it must never be the only copy of an acknowledged message.
		for _, f := range readFiles(t, filepath.Join(dir, "tmp")) {
			tmpLeft++
			if sm := midRe.FindSubmatch(f.data); sm != nil {
				if m := byMID[string(sm[1])]; m != nil && m.outcome == acked && len(copies[mb][m.mid]) == 0 {
					t.Errorf("%s tmp/%s is the only copy of acknowledged message %s", mb, filepath.Base(f.path), m.mid)
				}
			}
		}
	}

	deliveredUnknown, partialUnknown := 0, 0
	for _, m := range all {
		for _, mb := range mailboxes {
			n := len(copies[mb][m.mid])
			switch m.outcome {
			case acked:
				if n != 1 {
					t.Errorf("acknowledged message %s (queue ID %s, generation %d) is in %s %d times, want once: %v",
						m.mid, m.queueID, m.ackGen, mb, n, copies[mb][m.mid])
				} else if name := copies[mb][m.mid][0]; m.queueID != "" && !strings.Contains(name, ".M"+m.queueID+"I") {
					t.Errorf("acknowledged message %s was queued as %s but delivered as %s/%s", m.mid, m.queueID, mb, name)
				}
			case unknown:
				if n > 1 {
					t.Errorf("message %s (no final reply) is in %s %d times: %v", m.mid, mb, n, copies[mb][m.mid])
				}
			case unsent, refused:
				if n != 0 {
					t.Errorf("message %s, never accepted, is in %s %d times", m.mid, mb, n)
				}
			}
		}
		if m.outcome == unknown {
			a, b := len(copies["alice"][m.mid]), len(copies["theboss"][m.mid])
			if a > 0 && b > 0 {
				deliveredUnknown++
			} else if a+b > 0 {
				// Possible when a crash hit between the two mailboxes
				// before the 250: the client still holds the message.
				partialUnknown++
			}
		}
	}

	// The acknowledgements that a kill caught before the generation that
	// gave them had delivered: recovery after restart must have done it.
	recovered, blockedAcks := 0, 0
	deliveredBy := deliveredInLogs(srv, int(srv.gen.Load()))
	for _, m := range all {
		if m.outcome != acked || m.queueID == "" {
			continue
		}
		if deliveredBy[m.queueID] != m.ackGen {
			recovered++
		}
		if blockedKills > 0 && m.ackAt.Before(unblockedAt) {
			// Acknowledged while theboss was blocked: the generation that
			// said 250 was killed before it could deliver to him.
			blockedAcks++
			if deliveredBy[m.queueID] <= m.ackGen {
				t.Errorf("message %s (queue ID %s) acknowledged by generation %d while theboss was blocked, but its delivery log is in generation %d",
					m.mid, m.queueID, m.ackGen, deliveredBy[m.queueID])
			}
		}
	}
	if blockedKills > 0 && blockedAcks == 0 {
		t.Error("no message was acknowledged while theboss was blocked: the spool recovery path was not exercised")
	}
	recoveredAtStart := 0
	for g := 1; g <= int(srv.gen.Load()); g++ {
		for _, sm := range recoveredRe.FindAllStringSubmatch(srv.log(g), -1) {
			n, _ := strconv.Atoi(sm[1])
			recoveredAtStart += n
		}
	}
	acksBeforeKill := 0
	for _, m := range all {
		for _, k := range killTimes {
			if m.outcome == acked && m.ackAt.Before(k) && k.Sub(m.ackAt) < 50*time.Millisecond {
				acksBeforeKill++
				break
			}
		}
	}

	t.Logf("kills=%d messages=%d acked=%d unknown=%d (delivered %d, partially %d) unsent=%d refused=%d; acked <50ms before a kill=%d, acked while theboss was blocked=%d, acked but delivered by a later generation=%d; messages recovered from the spool at restarts=%d; moved to cur/=%d; Maildir tmp leftovers=%d; total %v",
		len(killTimes), len(all), count[acked], count[unknown], deliveredUnknown, partialUnknown, count[unsent], count[refused],
		acksBeforeKill, blockedAcks, recovered, recoveredAtStart, moved.Load(), tmpLeft, time.Since(t0).Round(time.Millisecond))
}

func readFiles(t testing.TB, dir string) []copyFile {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	var out []copyFile
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, copyFile{path: p, data: b})
	}
	return out
}

// checkCopy checks one delivered file against the message it names: the
// Return-Path first, the trace header, then exactly the header and body
// the client sent, with LF line endings.
func checkCopy(data []byte, byMID map[string]*message) (string, error) {
	if len(data) == 0 {
		return "", errors.New("empty file")
	}
	sm := midRe.FindSubmatch(data)
	if sm == nil {
		return "", fmt.Errorf("no Message-ID header in %d bytes", len(data))
	}
	mid := string(sm[1])
	m := byMID[mid]
	if m == nil {
		return mid, fmt.Errorf("Message-ID %s was never sent", mid)
	}
	header, body := m.content()
	lf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	if want := "Return-Path: <" + m.sender() + ">"; string(first) != want {
		return mid, fmt.Errorf("first line %q, want %q", first, want)
	}
	if !bytes.HasPrefix(rest, []byte("Received: ")) {
		return mid, errors.New("no Received header after Return-Path")
	}
	gotHeader, gotBody, ok := bytes.Cut(rest, []byte("\n\n"))
	if !ok {
		return mid, errors.New("no end of header")
	}
	if !bytes.HasSuffix(gotHeader, bytes.TrimSuffix(lf(header), []byte("\n"))) {
		return mid, errors.New("header differs from the one sent")
	}
	if want := lf(body); !bytes.Equal(gotBody, want) {
		return mid, fmt.Errorf("body is %d bytes, want %d (truncated or altered)", len(gotBody), len(want))
	}
	return mid, nil
}

var recoveredRe = regexp.MustCompile(`msg="queue: recovered spool" messages=(\d+)`)

var deliveredRe = regexp.MustCompile(`msg=delivered id=(\S+) rcpt=(\S+)`)

// deliveredInLogs maps each queue ID to the generation whose log records
// its delivery to every mailbox (0 when none did).
func deliveredInLogs(s *server, gens int) map[string]int64 {
	perRcpt := map[string]map[string]bool{}
	out := map[string]int64{}
	for g := 1; g <= gens; g++ {
		for _, sm := range deliveredRe.FindAllStringSubmatch(s.log(g), -1) {
			id := sm[1]
			if perRcpt[id] == nil {
				perRcpt[id] = map[string]bool{}
			}
			perRcpt[id][sm[2]] = true
			if len(perRcpt[id]) == len(mailboxes) && out[id] == 0 {
				out[id] = int64(g)
			}
		}
	}
	return out
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
