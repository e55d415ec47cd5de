// Package testutil owns the helpers that Posthorn's tests share: finding
// the external programs a test drives (swaks, python3, postfix, dovecot),
// picking free loopback ports, building and running the posthorn binary as
// a child process, and reading the Maildirs it delivers into.
//
// Everything here takes a testing.TB, marks itself a helper, and cleans up
// after the test with t.Cleanup, so that a failing test never leaves a
// server running.
package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// RequireTool returns the path of the program name (looked up in PATH, and
// in /usr/sbin for the Postfix and Dovecot tools, which a non-root PATH
// often lacks). name may also be an absolute path, such as
// "/usr/bin/python3". When the program is missing the test is skipped on a
// developer's machine, but fails when the environment variable CI is set:
// on CI a missing tool means a broken set-up, and a skipped test would hide
// it.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if !strings.ContainsRune(name, '/') {
		p := filepath.Join("/usr/sbin", name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("required program %q not found (scripts/test installs it)", name)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before FreePort returns, so another process may take it
// first; StartPosthorn retries with a new port when that happens.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// MakeTraversable lets other users reach dir: it sets the search (x) and
// read bits on dir and on every parent up to, but not including, the
// system temporary directory. t.TempDir makes its directories 0700, which
// keeps out the unprivileged processes some tests start (posthorn running
// as nobody, Dovecot's login and mail processes).
func MakeTraversable(t testing.TB, dir string) {
	t.Helper()
	stop := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); d != stop && d != "/" && d != "."; d = filepath.Dir(d) {
		if !strings.HasPrefix(d, stop+string(filepath.Separator)) {
			break // never touch anything outside the temporary directory
		}
		st, err := os.Stat(d)
		if err != nil {
			t.Fatalf("make traversable: %v", err)
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o755); err != nil {
			t.Fatalf("make traversable: %v", err)
		}
	}
}
