package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWithRuntimeKeys(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{
			name: "smtp table present",
			in:   "hostname = \"mx.example.com\"\n[smtp]\nmax_errors = 5\n",
			want: "data_dir = \"/d\"\nhostname = \"mx.example.com\"\n[smtp]\nlisten = [\"127.0.0.1:1\"]\nmax_errors = 5\n",
		},
		{
			name: "no smtp table",
			in:   "[domains.\"example.com\"]\nusers = [\"alice\"]\n",
			want: "data_dir = \"/d\"\n[domains.\"example.com\"]\nusers = [\"alice\"]\n\n[smtp]\nlisten = [\"127.0.0.1:1\"]\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := withRuntimeKeys(tc.in, "/d", "127.0.0.1:1"); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestListeningAddr(t *testing.T) {
	log := `time=x level=INFO msg="no TLS certificate configured"
time=x level=INFO msg="listening for SMTP" addr=127.0.0.1:2525 hostname=h starttls=true
time=x level=INFO msg="listening for SMTP" addr=[::1]:2525 hostname=h starttls=true
`
	if a, ok := listeningAddr(log); !ok || a != "127.0.0.1:2525" {
		t.Errorf("listeningAddr = %q, %v", a, ok)
	}
	if _, ok := listeningAddr(`msg="starting"`); ok {
		t.Error("listeningAddr found a listener in a log without one")
	}
}

func TestRequireToolFindsPrograms(t *testing.T) {
	if p := RequireTool(t, "sh"); !filepath.IsAbs(p) {
		t.Errorf("RequireTool(sh) = %q", p)
	}
	if p := RequireTool(t, "/bin/sh"); p != "/bin/sh" {
		t.Errorf("RequireTool(/bin/sh) = %q", p)
	}
}

func TestMaildirHelpers(t *testing.T) {
	data := t.TempDir()
	if got := ReadMaildir(t, data, "example.com", "alice"); len(got) != 0 {
		t.Fatalf("missing mailbox: %v", got)
	}
	mb := MaildirPath(data, "example.com", "alice")
	for name, content := range map[string]string{"new/2.b": "second", "cur/1.a:2,S": "first"} {
		p := filepath.Join(mb, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := ReadMaildirFiles(t, data, "example.com", "alice")
	if len(got) != 2 || got[0].Data != "first" || got[0].Sub != "cur" || got[1].Data != "second" || got[1].Sub != "new" {
		t.Errorf("ReadMaildirFiles = %+v", got)
	}
	if msgs := WaitMaildir(t, data, "example.com", "alice", 2, 0); strings.Join(msgs, ",") != "first,second" {
		t.Errorf("WaitMaildir = %v", msgs)
	}
}

// TestRequireToolMissing runs a test that needs a program that does not
// exist, in a child test process: without CI it is skipped, with CI=true
// it fails.
func TestRequireToolMissing(t *testing.T) {
	if os.Getenv("TESTUTIL_CHILD") == "1" {
		RequireTool(t, "posthorn-no-such-program")
		t.Log("RequireTool returned for a missing program")
		return
	}
	for _, tc := range []struct {
		ci   string
		want string
	}{
		{"", "--- SKIP: TestRequireToolMissing"},
		{"true", "--- FAIL: TestRequireToolMissing"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireToolMissing$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTUTIL_CHILD=1", "CI="+tc.ci)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "RequireTool returned") {
			t.Errorf("CI=%q: child test output:\n%s\nwant %q", tc.ci, out, tc.want)
		}
	}
}
