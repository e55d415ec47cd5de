package maildir

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/envelope"
)

func newEnv(mailboxes ...string) *envelope.Envelope {
	env := &envelope.Envelope{
		ID:       "18C2A0B3C4D5E00001",
		Sender:   "bob@example.org",
		Received: time.Unix(1_770_000_000, 0),
	}
	for _, mb := range mailboxes {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: strings.Replace(mb, "/", "@", 1), Mailbox: mb})
	}
	return env
}

func request(env *envelope.Envelope, body []byte, retry bool, rcpts ...int) deliver.Request {
	if len(rcpts) == 0 {
		for i := range env.Recipients {
			rcpts = append(rcpts, i)
		}
	}
	return deliver.Request{Env: env, Body: io.NewSectionReader(bytes.NewReader(body), 0, int64(len(body))), Rcpts: rcpts, Retry: retry}
}

func newMaildir(t testing.TB) (*Maildir, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "mail")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	return New(Options{Root: root, Hostname: "mx.example.com"}), root
}

func mustDeliver(t testing.TB, m *Maildir, req deliver.Request) {
	t.Helper()
	for k, res := range m.Deliver(context.Background(), req) {
		if res.Status != envelope.Delivered || res.Err != nil {
			t.Fatalf("recipient %d: %v %v", req.Rcpts[k], res.Status, res.Err)
		}
	}
}

func names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// reference is what a delivered file must hold, computed the slow and
// obvious way: every CRLF becomes LF, then the header fields named
// Return-Path (with their continuation lines) are dropped and one with the
// envelope sender is put first.
func reference(body []byte, sender string) []byte {
	lf := bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	out := []byte("Return-Path: <" + sender + ">\n")
	dropping := false
	for len(lf) > 0 {
		line := lf
		if i := bytes.IndexByte(lf, '\n'); i >= 0 {
			line = lf[:i+1]
		}
		if line[0] == '\n' {
			return append(out, lf...) // end of header: the rest is body
		}
		if line[0] != ' ' && line[0] != '\t' {
			dropping = len(line) >= 12 && strings.EqualFold(string(line[:12]), "return-path:")
		}
		if !dropping {
			out = append(out, line...)
		}
		lf = lf[len(line):]
	}
	return out
}

func TestDeliverCreatesMaildirAndFile(t *testing.T) {
	m, root := newMaildir(t)
	env := newEnv("example.com/alice")
	body := []byte("Subject: hi\r\nMessage-ID: <1@x>\r\n\r\nHello\r\n")
	mustDeliver(t, m, request(env, body, false))
	mb := filepath.Join(root, "example.com", "alice")
	for _, sub := range []string{"tmp", "new", "cur"} {
		if fi, err := os.Stat(filepath.Join(mb, sub)); err != nil || !fi.IsDir() {
			t.Errorf("%s/ missing: %v", sub, err)
		}
	}
	if n := names(t, filepath.Join(mb, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ holds %v after delivery", n)
	}
	want := m.FileName(env, 0)
	if n := names(t, filepath.Join(mb, "new")); !slices.Equal(n, []string{want}) {
		t.Fatalf("new/ holds %v, want [%s]", n, want)
	}
	if !strings.Contains(want, env.ID) || strings.ContainsAny(want, "/:") {
		t.Errorf("file name %q", want)
	}
	got, err := os.ReadFile(filepath.Join(mb, "new", want))
	if err != nil {
		t.Fatal(err)
	}
	exp := "Return-Path: <bob@example.org>\nSubject: hi\nMessage-ID: <1@x>\n\nHello\n"
	if string(got) != exp {
		t.Errorf("file holds %q, want %q", got, exp)
	}
}

func TestNullSenderAndHostnameEscaping(t *testing.T) {
	root := filepath.Join(t.TempDir(), "mail")
	m := New(Options{Root: root, Hostname: "odd/host:name"})
	env := newEnv("example.com/alice")
	env.Sender = ""
	mustDeliver(t, m, request(env, []byte("Subject: bounce\r\n\r\nx\r\n"), false))
	name := m.FileName(env, 0)
	if strings.ContainsAny(name, "/:") {
		t.Errorf("file name %q contains / or :", name)
	}
	got, err := os.ReadFile(filepath.Join(root, "example.com", "alice", "new", name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, []byte("Return-Path: <>\nSubject: bounce\n")) {
		t.Errorf("file starts %q", got)
	}
}

func TestReturnPathReplaced(t *testing.T) {
	m, root := newMaildir(t)
	env := newEnv("example.com/alice")
	body := "Return-Path: <forged@evil.example>\r\n" +
		"Received: from a\r\n\tby b\r\n" +
		"RETURN-PATH: <x@y>\r\n (folded\r\n\tcontinuation)\r\n" +
		"Subject: Return-Path: in a value stays\r\n" +
		" folded subject\r\n" +
		"X-Return-Path: stays\r\n" +
		"return-path:<z@z>\r\n" +
		"\r\n" +
		"Return-Path: <in-body@stays>\r\n" +
		" indented body line\r\n"
	mustDeliver(t, m, request(env, []byte(body), false))
	got, err := os.ReadFile(filepath.Join(root, "example.com", "alice", "new", m.FileName(env, 0)))
	if err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <bob@example.org>\n" +
		"Received: from a\n\tby b\n" +
		"Subject: Return-Path: in a value stays\n" +
		" folded subject\n" +
		"X-Return-Path: stays\n" +
		"\n" +
		"Return-Path: <in-body@stays>\n" +
		" indented body line\n"
	if string(got) != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if string(got) != string(reference([]byte(body), env.Sender)) {
		t.Error("the reference transformation disagrees with the expected text")
	}
}

// TestBodyConversion runs message shapes past the boundaries of the 32 KB
// read buffer: every file must equal the reference transformation, which
// keeps all bytes but the CR of each CRLF.
func TestBodyConversion(t *testing.T) {
	const bufSize = 32 << 10
	long := func(n int, b byte) string { return strings.Repeat(string(b), n) }
	cases := map[string]string{
		"8-bit and NUL":         "Subject: caf\xc3\xa9\r\n\r\n\x00\x80\xff\xfe\r\nend",
		"bare CR and LF kept":   "Subject: x\r\n\r\na\rb\nc\r\r\n\r",
		"no header":             "\r\nbody only\r\n",
		"empty":                 "",
		"no final newline":      "Subject: x\r\n\r\nlast line",
		"header only":           "Subject: x\r\nX: y\r\n",
		"CRLF at boundary":      "Subject: x\r\n\r\n" + long(bufSize-1, 'a') + "\r\nnext\r\n",
		"CR at boundary, no LF": "Subject: x\r\n\r\n" + long(bufSize-1, 'a') + "\rnext\r\n",
		"CR ends message":       "Subject: x\r\n\r\n" + long(bufSize-1, 'a') + "\r",
		"LF after boundary":     "Subject: x\r\n\r\n" + long(bufSize, 'a') + "\r\n",
		"three buffers":         "Subject: x\r\n\r\n" + long(3*bufSize+17, 'b') + "\r\n" + long(bufSize-1, 'c') + "\r\n",
		"long header line":      "Subject: " + long(2*bufSize, 's') + "\r\n\r\nbody\r\n",
		"long header, CR split": "X-Long: " + long(bufSize-9, 'h') + "\r\nSubject: after\r\n\r\nbody\r\n",
		// A Return-Path field longer than the buffer, split right after a
		// bare CR: nothing of the dropped field may leak into the file.
		"long Return-Path, CR at boundary": "Return-Path: <" + long(bufSize-15, 'r') + "\r" + long(100, 'r') + ">\r\nSubject: s\r\n\r\nb\r\n",
		"long Return-Path continuation":    "Return-Path: <a@b>\r\n " + long(bufSize+5, 'c') + "\r\nSubject: s\r\n\r\nb\r\n",
		"blank line at boundary":           "X-A: " + long(bufSize-7, 'h') + "\r\n\r\nReturn-Path: body\r\n",
	}
	m, root := newMaildir(t)
	env := newEnv("example.com/alice")
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			env.ID = strings.ToUpper(strings.NewReplacer(" ", "", ",", "", "-", "").Replace(name))
			mustDeliver(t, m, request(env, []byte(body), false))
			got, err := os.ReadFile(filepath.Join(root, "example.com", "alice", "new", m.FileName(env, 0)))
			if err != nil {
				t.Fatal(err)
			}
			if want := reference([]byte(body), env.Sender); !bytes.Equal(got, want) {
				t.Errorf("file differs from the reference: %d bytes, want %d; first difference at %d", len(got), len(want), firstDiff(got, want))
			}
		})
	}
}

// TestBodyConversionRandom compares writeMessage with the reference on
// random messages built from CR, LF, header-like and long pieces.
func TestBodyConversionRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"\r", "\n", "\r\n", "\r\n\r\n", " ", "\t", "Return-Path: <x>", "return-path:", "Subject: s", "a", "\xff", "."}
	for iter := range 300 {
		var b strings.Builder
		for range rng.IntN(40) {
			if rng.IntN(10) == 0 {
				b.WriteString(strings.Repeat("z", rng.IntN(70<<10)))
			} else {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
		}
		body := b.String()
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 32<<10)
		if err := writeMessage(w, strings.NewReader(body), "s@x"); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if want := reference([]byte(body), "s@x"); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("iteration %d: output differs from the reference at %d (input %d bytes)", iter, firstDiff(out.Bytes(), want), len(body))
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestRetryDoesNotDuplicate(t *testing.T) {
	m, root := newMaildir(t)
	env := newEnv("example.com/alice", "example.com/theboss")
	body := []byte("Subject: once\r\n\r\nbody\r\n")
	mustDeliver(t, m, request(env, body, false))
	// The same delivery again, as after a crash before the queue recorded it.
	mustDeliver(t, m, request(env, body, true))
	for i, user := range []string{"alice", "theboss"} {
		mb := filepath.Join(root, "example.com", user)
		if n := names(t, filepath.Join(mb, "new")); !slices.Equal(n, []string{m.FileName(env, i)}) {
			t.Errorf("%s new/ holds %v, want one file", user, n)
		}
		if n := names(t, filepath.Join(mb, "tmp")); len(n) != 0 {
			t.Errorf("%s tmp/ holds %v", user, n)
		}
	}

	// A reader has seen alice's copy and moved it to cur/ with flags.
	mb := filepath.Join(root, "example.com", "alice")
	name := m.FileName(env, 0)
	if err := os.Rename(filepath.Join(mb, "new", name), filepath.Join(mb, "cur", name+":2,S")); err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, m, request(env, body, true, 0))
	// A fresh deliverer (a restarted process) must find it too.
	m2 := New(Options{Root: root, Hostname: "mx.example.com"})
	mustDeliver(t, m2, request(env, body, true, 0))
	if n := names(t, filepath.Join(mb, "new")); len(n) != 0 {
		t.Errorf("new/ holds %v after a retry of a message already in cur/", n)
	}
	if n := names(t, filepath.Join(mb, "cur")); !slices.Equal(n, []string{name + ":2,S"}) {
		t.Errorf("cur/ holds %v", n)
	}

	// A different message, or another recipient index, is a different file.
	other := newEnv("example.com/alice", "example.com/alice")
	other.ID = "18C2A0B3C4D5E00002"
	mustDeliver(t, m, request(other, body, true))
	if n := names(t, filepath.Join(mb, "new")); len(n) != 2 {
		t.Errorf("new/ holds %v, want the two copies of the other message", n)
	}
}

// TestRetryAfterPartialWrite: a crash left a half-written copy in tmp/.
// The retry writes the whole message and tmp/ ends up empty.
func TestRetryAfterPartialWrite(t *testing.T) {
	m, root := newMaildir(t)
	env := newEnv("example.com/alice")
	body := []byte("Subject: x\r\n\r\n" + strings.Repeat("line\r\n", 10000))
	mb := filepath.Join(root, "example.com", "alice")
	for _, sub := range []string{"tmp", "new", "cur"} {
		os.MkdirAll(filepath.Join(mb, sub), 0o700)
	}
	name := m.FileName(env, 0)
	if err := os.WriteFile(filepath.Join(mb, "tmp", name), []byte("Return-Path: <bob@example.org>\nSubj"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDeliver(t, m, request(env, body, true))
	got, err := os.ReadFile(filepath.Join(mb, "new", name))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, reference(body, env.Sender)) {
		t.Errorf("delivered %d bytes, want %d", len(got), len(reference(body, env.Sender)))
	}
	if n := names(t, filepath.Join(mb, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ holds %v", n)
	}
}

func TestFirstDeliveryWithoutRetry(t *testing.T) {
	m, root := newMaildir(t)
	env := newEnv("example.org/new-user")
	mustDeliver(t, m, request(env, []byte("Subject: x\r\n\r\n"), false))
	if n := names(t, filepath.Join(root, "example.org", "new-user", "new")); len(n) != 1 {
		t.Errorf("new/ holds %v", n)
	}
}

func TestUnwritableMailboxIsTemporary(t *testing.T) {
	m, root := newMaildir(t)
	if err := os.MkdirAll(filepath.Join(root, "example.com"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A regular file where alice's Maildir should be.
	if err := os.WriteFile(filepath.Join(root, "example.com", "alice"), []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := newEnv("example.com/alice", "example.com/theboss")
	res := m.Deliver(context.Background(), request(env, []byte("Subject: x\r\n\r\n"), false))
	if len(res) != 2 {
		t.Fatalf("%d results for 2 recipients", len(res))
	}
	if res[0].Status != envelope.Pending || res[0].Err == nil || !res[0].Err.Temporary() {
		t.Errorf("unwritable mailbox: %v %v, want Pending with a 4xx error", res[0].Status, res[0].Err)
	}
	if res[0].Err != nil && strings.Contains(res[0].Err.Message, root) {
		t.Errorf("reply text %q reveals a path", res[0].Err.Message)
	}
	if res[1].Status != envelope.Delivered {
		t.Errorf("the other recipient: %v %v, want Delivered", res[1].Status, res[1].Err)
	}
	// Once the problem is fixed, the retry delivers.
	os.Remove(filepath.Join(root, "example.com", "alice"))
	res = m.Deliver(context.Background(), request(env, []byte("Subject: x\r\n\r\n"), true, 0))
	if res[0].Status != envelope.Delivered {
		t.Errorf("after the fix: %v %v", res[0].Status, res[0].Err)
	}
}

func TestInvalidMailboxNamesRefused(t *testing.T) {
	m, root := newMaildir(t)
	parent := filepath.Dir(root)
	before := names(t, parent)
	for _, mb := range []string{"../x", "a/b/c", "x", "../../etc", "a/..", "a/.", "./x", "/x", "x/", "a//b", "..", "a/b/"} {
		env := newEnv(mb)
		res := m.Deliver(context.Background(), request(env, []byte("Subject: x\r\n\r\n"), false))
		if res[0].Status == envelope.Delivered || res[0].Err == nil {
			t.Errorf("mailbox %q accepted", mb)
		}
	}
	if after := names(t, parent); !slices.Equal(before, after) {
		t.Errorf("files appeared next to the mail root: %v -> %v", before, after)
	}
	if n := names(t, root); len(n) != 0 {
		t.Errorf("mail root holds %v after refused deliveries", n)
	}
}

func TestCanceledContextDefers(t *testing.T) {
	m, root := newMaildir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	env := newEnv("example.com/alice")
	res := m.Deliver(ctx, request(env, []byte("Subject: x\r\n\r\n"), false))
	if res[0].Status != envelope.Pending || res[0].Err == nil || !res[0].Err.Temporary() {
		t.Errorf("canceled delivery: %v %v", res[0].Status, res[0].Err)
	}
	if _, err := os.Stat(filepath.Join(root, "example.com", "alice", "new", m.FileName(env, 0))); err == nil {
		t.Error("delivered despite a canceled context")
	}
}

func TestResultsFollowRequestOrder(t *testing.T) {
	m, root := newMaildir(t)
	os.MkdirAll(filepath.Join(root, "example.com"), 0o700)
	os.WriteFile(filepath.Join(root, "example.com", "broken"), nil, 0o600)
	env := newEnv("example.com/alice", "example.com/broken", "example.com/theboss")
	res := m.Deliver(context.Background(), request(env, []byte("Subject: x\r\n\r\n"), false, 2, 1, 0))
	want := []envelope.Status{envelope.Delivered, envelope.Pending, envelope.Delivered}
	for k := range want {
		if res[k].Status != want[k] {
			t.Errorf("result %d: %v, want %v", k, res[k].Status, want[k])
		}
	}
}
