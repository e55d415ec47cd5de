package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Readiness and shutdown bounds. Generous, because two cores running a
// whole test suite can be slow, but finite: a test must stop by itself.
const (
	startTimeout = 20 * time.Second
	// stopTimeout is longer than the server's own 30 s grace period for
	// sessions, so that a clean shutdown is never mistaken for a hang.
	stopTimeout = 40 * time.Second
)

// The posthorn binary, built once per test binary run.
var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// BuildPosthorn builds ./cmd/posthorn of the module the test runs in (found
// with `go env GOMOD`) and returns the binary's path. The first call builds;
// later calls in the same test binary return the same file. A package that
// uses it should call CleanupBuild from its TestMain to remove the binary.
func BuildPosthorn(t testing.TB) string {
	t.Helper()
	build.once.Do(func() { build.path, build.err = buildPosthorn() })
	if build.err != nil {
		t.Fatalf("build posthorn: %v", build.err)
	}
	return build.path
}

func buildPosthorn() (string, error) {
	gobin := goTool()
	out, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module")
	}
	dir, err := os.MkdirTemp("", "posthorn-bin-")
	if err != nil {
		return "", err
	}
	build.dir = dir
	// Tests may run the binary as an unprivileged user.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "posthorn")
	cmd := exec.Command(gobin, "build", "-o", bin, "./cmd/posthorn")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/posthorn: %v\n%s", err, out)
	}
	return bin, nil
}

// goTool finds the go command: `go test` puts GOROOT/bin first in PATH,
// and /usr/local/go is where the project's machines keep it otherwise.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// CleanupBuild removes the binary BuildPosthorn built, if any. Call it from
// TestMain after m.Run.
func CleanupBuild() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// Posthorn is a posthorn server running as a child process of the test.
type Posthorn struct {
	// Addr is the SMTP listener, "127.0.0.1:PORT".
	Addr string
	// Port is the port of Addr.
	Port int
	// Dir is the test's directory for this server: config, data, log.
	Dir string
	// DataDir is the server's data_dir (spool and mailboxes).
	DataDir string
	// ConfigPath is the configuration file the server was started with.
	ConfigPath string
	// LogPath is a file holding everything the server wrote to stdout and
	// stderr, across restarts.
	LogPath string
	// Bin is the posthorn binary.
	Bin string

	t      testing.TB
	args   []string // after the binary name
	config string   // as the test gave it; "" for ServePosthorn
	cred   *syscall.Credential
	log    *logSink

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has exited
	waitErr  error
	stopping bool // the test ended the process (or saw it fail to start)
}

// logSink collects the server's output in memory (for WaitLog) and in a
// file (for a person reading a failed run).
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
	f   *os.File
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.f.Write(p)
	return len(p), nil
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logSink) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// StartPosthorn builds posthorn if needed and runs `posthorn serve` with
// configTOML, to which it adds data_dir (a fresh temporary directory) and
// smtp.listen (a free port on 127.0.0.1): configTOML must set neither, and
// must keep the default text log format, which the helper reads. It
// returns once the server logged "listening for SMTP", and stops the server
// with SIGTERM when the test ends; a server that does not then exit with
// status 0 fails the test.
func StartPosthorn(t testing.TB, configTOML string) *Posthorn {
	t.Helper()
	return start(t, configTOML, nil)
}

// StartPosthornAs is StartPosthorn with the server running as uid:gid
// instead of the test's user, for tests where another program (Dovecot)
// must read what the server wrote and refuses to do so as root. The data
// directory is owned by uid:gid; the directories above it are made
// traversable.
func StartPosthornAs(t testing.TB, configTOML string, uid, gid uint32) *Posthorn {
	t.Helper()
	return start(t, configTOML, &syscall.Credential{Uid: uid, Gid: gid})
}

func start(t testing.TB, configTOML string, cred *syscall.Credential) *Posthorn {
	t.Helper()
	bin := BuildPosthorn(t)
	dir := t.TempDir()
	p := &Posthorn{
		Dir:        dir,
		DataDir:    filepath.Join(dir, "data"),
		ConfigPath: filepath.Join(dir, "posthorn.toml"),
		LogPath:    filepath.Join(dir, "posthorn.log"),
		Bin:        bin,
		t:          t,
		config:     configTOML,
		cred:       cred,
	}
	p.args = []string{"serve", "--config", p.ConfigPath}
	if err := os.Mkdir(p.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if cred != nil {
		MakeTraversable(t, dir)
		if err := os.Chown(p.DataDir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	p.log = &logSink{f: f}
	t.Cleanup(func() {
		p.cleanup()
		f.Close()
	})
	// The port FreePort found may be taken before posthorn binds it (other
	// tests, other people's tests): try a few.
	for attempt := 1; ; attempt++ {
		p.Port = FreePort(t)
		p.Addr = "127.0.0.1:" + strconv.Itoa(p.Port)
		err := p.launch()
		if err == nil {
			return p
		}
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatalf("start posthorn: %v\nlog:\n%s", err, p.Log())
	}
}

// ServePosthorn runs `posthorn ARGS...` in workDir exactly as given, with no
// configuration written by the helper: for tests of the command line and
// of the built-in defaults. Addr and Port are read from the
// "listening for SMTP" log line (the first one, when there are several);
// DataDir and ConfigPath are left empty. The addresses are the caller's
// choice (often a fixed default), so when one is taken by another process
// the test is skipped rather than failed: that is the machine's state, not
// a fault of the server.
func ServePosthorn(t testing.TB, workDir string, args ...string) *Posthorn {
	t.Helper()
	bin := BuildPosthorn(t)
	dir := t.TempDir()
	p := &Posthorn{Dir: workDir, LogPath: filepath.Join(dir, "posthorn.log"), Bin: bin, t: t, args: args}
	f, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	p.log = &logSink{f: f}
	t.Cleanup(func() {
		p.cleanup()
		f.Close()
	})
	if err := p.launch(); err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			t.Skipf("posthorn %s: listen address taken by another process: %v", strings.Join(args, " "), err)
		}
		t.Fatalf("start posthorn: %v\nlog:\n%s", err, p.Log())
	}
	return p
}

// withRuntimeKeys adds data_dir at the top of cfg and listen to its [smtp]
// table (creating the table when cfg has none).
func withRuntimeKeys(cfg, dataDir, addr string) string {
	listen := fmt.Sprintf("listen = [%q]", addr)
	lines := strings.Split(cfg, "\n")
	found := false
	for i, l := range lines {
		if strings.TrimSpace(l) == "[smtp]" {
			lines[i] = l + "\n" + listen
			found = true
			break
		}
	}
	out := fmt.Sprintf("data_dir = %q\n", dataDir) + strings.Join(lines, "\n")
	if !found {
		out += "\n[smtp]\n" + listen + "\n"
	}
	return out
}

// launch writes the configuration, starts the process and waits until it
// listens.
func (p *Posthorn) launch() error {
	if p.ConfigPath != "" {
		cfg := withRuntimeKeys(p.config, p.DataDir, p.Addr)
		if err := os.WriteFile(p.ConfigPath, []byte(cfg), 0o644); err != nil {
			return err
		}
	}
	from := p.log.Len()
	fmt.Fprintf(p.log, "=== testutil: starting posthorn %s\n", strings.Join(p.args, " "))
	cmd := exec.Command(p.Bin, p.args...)
	cmd.Dir = p.Dir
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	cmd.SysProcAttr = procAttr()
	cmd.SysProcAttr.Credential = p.cred
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.waitErr, p.stopping = cmd, done, nil, false
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		if addr, ok := listeningAddr(p.log.String()[from:]); ok {
			if p.Addr == "" {
				p.Addr = addr
				if _, port, err := net.SplitHostPort(addr); err == nil {
					p.Port, _ = strconv.Atoi(port)
				}
			}
			return nil
		}
		select {
		case <-done:
			p.mu.Lock()
			p.stopping = true // reported here, not again at cleanup
			p.mu.Unlock()
			return fmt.Errorf("posthorn exited before listening (%v): %s", p.exitErr(), tail(p.log.String()[from:], 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("posthorn did not log \"listening for SMTP\" within %v", startTimeout)
		}
	}
}

// listeningAddr finds the first "listening for SMTP" line in log (slog text
// format) and returns its addr attribute.
func listeningAddr(log string) (string, bool) {
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, `msg="listening for SMTP"`) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if a, ok := strings.CutPrefix(f, "addr="); ok {
				return a, true
			}
		}
		return "", true
	}
	return "", false
}

func (p *Posthorn) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Running reports whether the server process is alive.
func (p *Posthorn) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Log returns everything the server has written so far.
func (p *Posthorn) Log() string { return p.log.String() }

// WaitLog waits up to timeout for substr to appear in the server's output
// and fails the test if it does not.
func (p *Posthorn) WaitLog(substr string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Log(), substr) {
		if time.Now().After(deadline) {
			p.t.Fatalf("posthorn did not log %q within %v; log:\n%s", substr, timeout, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL, as a crash or a power cut would, and
// waits for it to exit.
func (p *Posthorn) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Stop asks the server to shut down with SIGTERM and waits for it; it
// returns the process's exit error (nil for status 0). A server that has
// not exited after stopTimeout is killed and reported as an error, and so
// is one that had already died by itself with a non-zero status. After
// Kill or an earlier Stop it returns nil.
func (p *Posthorn) Stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	stopping := p.stopping
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		if !stopping && p.exitErr() != nil {
			return fmt.Errorf("posthorn had already exited on its own: %w", p.exitErr())
		}
		return nil
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if err := p.exitErr(); err != nil {
			return fmt.Errorf("posthorn after SIGTERM: %w", err)
		}
		return nil
	case <-time.After(stopTimeout):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("posthorn did not exit within %v of SIGTERM", stopTimeout)
	}
}

// Restart stops the server (SIGTERM) if it is running and starts it again
// with the same configuration, data directory and port, as an operator
// restarting the service would.
func (p *Posthorn) Restart() {
	p.t.Helper()
	if p.Running() {
		if err := p.Stop(); err != nil {
			p.t.Fatalf("stop before restart: %v\nlog:\n%s", err, p.Log())
		}
	}
	if err := p.launch(); err != nil {
		p.t.Fatalf("restart posthorn: %v\nlog:\n%s", err, p.Log())
	}
}

func (p *Posthorn) cleanup() {
	// A server that crashed during the test, or does not shut down
	// cleanly at its end, fails the test even if every check passed.
	if err := p.Stop(); err != nil {
		p.t.Errorf("posthorn: %v", err)
	}
	if p.t.Failed() {
		p.t.Logf("posthorn log (%s):\n%s", p.LogPath, tail(p.Log(), 200))
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d lines ...]\n", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "")
}
