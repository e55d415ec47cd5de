package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/envelope"
)

func openSpool(t testing.TB, dir string) *Spool {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testEnvelope() *envelope.Envelope {
	return &envelope.Envelope{
		Sender: "bob@example.org",
		Recipients: []envelope.Recipient{
			{Addr: "alice@example.com", Mailbox: "example.com/alice"},
			{Addr: "carol@remote.example", Orig: "list@example.com"},
		},
		Received:   time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC),
		ClientIP:   "127.0.0.1",
		ClientHelo: "client.example.org",
		Body8Bit:   true,
	}
}

// commit spools body under env and returns the ID.
func commit(t testing.TB, s *Spool, env *envelope.Envelope, body []byte) string {
	t.Helper()
	w, err := s.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return env.ID
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func readBody(t testing.TB, m *Message) []byte {
	t.Helper()
	b, err := io.ReadAll(m.Body())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCommitThenOpen(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	// 8-bit bytes, CRLF, a bare LF, and more than one write buffer's worth.
	body := []byte("Subject: caf\xc3\xa9\r\n\r\nline\r\n\x00\xff bytes\nno final newline")
	body = append(body, bytes.Repeat([]byte("0123456789abcdef"), 5000)...)
	env := testEnvelope()
	w, err := s.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	if env.ID == "" || !validID(env.ID) {
		t.Fatalf("Create assigned ID %q", env.ID)
	}
	// Written in uneven pieces, as a session does.
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)%7919)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if ids, _ := s.List(); len(ids) != 0 {
		t.Fatalf("uncommitted message listed: %v", ids)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil {
		t.Error("second Commit succeeded")
	}
	if n := contentIn(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ holds %v after commit", n)
	}

	// A fresh Spool over the same directory, as after a restart.
	s2 := openSpool(t, dir)
	ids, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []string{env.ID}) {
		t.Fatalf("List = %v, want [%s]", ids, env.ID)
	}
	m, err := s2.Open(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := readBody(t, m); !bytes.Equal(got, body) {
		t.Errorf("body differs: got %d bytes, want %d", len(got), len(body))
	}
	if m.Size() != int64(len(body)) {
		t.Errorf("Size = %d, want %d", m.Size(), len(body))
	}
	got := m.Env
	if got.ID != env.ID || got.Sender != env.Sender || !got.Received.Equal(env.Received) ||
		got.ClientIP != env.ClientIP || got.ClientHelo != env.ClientHelo || !got.Body8Bit ||
		!slices.Equal(got.Recipients, env.Recipients) {
		t.Errorf("envelope read back as %+v, want %+v", got, env)
	}
}

func TestEmptyBody(t *testing.T) {
	s := openSpool(t, t.TempDir())
	id := commit(t, s, testEnvelope(), nil)
	m, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Size() != 0 || len(readBody(t, m)) != 0 {
		t.Errorf("empty message has size %d", m.Size())
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	w, err := s.Create(testEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	w.Abort()
	w.Abort() // harmless
	if err := w.Commit(); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	for _, sub := range []string{"tmp", "queue"} {
		if n := leftovers(t, dir, sub); len(n) != 0 {
			t.Errorf("%s/ holds %v after Abort", sub, n)
		}
	}
}

// TestUncommittedWriterCleanedOnOpen is a crash in the middle of receiving:
// the writer is neither committed nor aborted, and the next Open removes
// its file without ever listing it.
func TestUncommittedWriterCleanedOnOpen(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	w, err := s.Create(testEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("x"), 100<<10)) // past the buffer: on disk
	if n := dirNames(t, filepath.Join(dir, "tmp")); len(n) != 1 {
		t.Fatalf("tmp/ holds %v while receiving, want one file", n)
	}
	s2 := openSpool(t, dir)
	if n := contentIn(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ holds %v after reopening", n)
	}
	if ids, _ := s2.List(); len(ids) != 0 {
		t.Errorf("uncommitted message listed after reopening: %v", ids)
	}
	w.Abort()
}

func TestSaveStateAppliedOnReopen(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	id := commit(t, s, testEnvelope(), []byte("body\r\n"))
	m, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	env := m.Env
	m.Close()
	for _, r := range env.Recipients {
		if r.State != (envelope.State{}) {
			t.Fatalf("fresh message has state %+v", r.State)
		}
	}
	next := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
	env.Recipients[0].State = envelope.State{Status: envelope.Delivered, Attempts: 1}
	env.Recipients[1].State = envelope.State{Attempts: 2, LastError: "451 4.3.0 later", NextAttempt: next}
	if err := s.SaveState(env); err != nil {
		t.Fatal(err)
	}
	// Saving again replaces the state.
	env.Recipients[1].Attempts = 3
	if err := s.SaveState(env); err != nil {
		t.Fatal(err)
	}

	s2 := openSpool(t, dir)
	m, err = s2.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := m.Env.Recipients
	if got[0].State != env.Recipients[0].State {
		t.Errorf("recipient 0 state %+v, want %+v", got[0].State, env.Recipients[0].State)
	}
	if got[1].Status != envelope.Pending || got[1].Attempts != 3 || got[1].LastError != "451 4.3.0 later" || !got[1].NextAttempt.Equal(next) {
		t.Errorf("recipient 1 state %+v", got[1].State)
	}
	if p := m.Env.Pending(); !slices.Equal(p, []int{1}) {
		t.Errorf("Pending = %v, want [1]", p)
	}
	// The state file is not a message.
	if ids, _ := s2.List(); !slices.Equal(ids, []string{id}) {
		t.Errorf("List = %v, want [%s]", ids, id)
	}
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	id := commit(t, s, testEnvelope(), []byte("x"))
	keep := commit(t, s, testEnvelope(), []byte("y"))
	m, _ := s.Open(id)
	env := m.Env
	m.Close()
	env.Recipients[0].Status = envelope.Delivered
	if err := s.SaveState(env); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, filepath.Join(dir, "queue")); !slices.Equal(names, []string{keep}) {
		t.Errorf("queue/ holds %v after Remove, want only %s", names, keep)
	}
	if _, err := s.Open(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of removed message: %v, want ErrNotFound", err)
	}
	if err := s.Remove(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "../queue", "a/b", id + ".state", "lower"} {
		if err := s.Remove(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Remove(%q) = %v, want ErrNotFound", bad, err)
		}
		if _, err := s.Open(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", bad, err)
		}
	}
}

func TestOpenCleansOrphanStateAndTempFiles(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	live := commit(t, s, testEnvelope(), []byte("x"))
	m, _ := s.Open(live)
	env := m.Env
	m.Close()
	if err := s.SaveState(env); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "queue")
	// The state of a message removed before the crash, and a state file
	// that a crash interrupted inside safeio.WriteFile.
	for _, n := range []string{"18C0FFEE0000000001.state", "." + live + ".state.tmp123"} {
		if err := os.WriteFile(filepath.Join(q, n), []byte("[]"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	openSpool(t, dir)
	want := []string{live, live + ".state"}
	if names := dirNames(t, q); !slices.Equal(names, want) {
		t.Errorf("queue/ holds %v after Open, want %v", names, want)
	}
}

func TestCorruptFilesAreErrors(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	q := filepath.Join(dir, "queue")
	good := commit(t, s, testEnvelope(), []byte("x"))
	cases := map[string]string{
		"000000000000100001": "{not json\nbody",
		"000000000000100002": "no newline at all",
		"000000000000100003": "",
		"000000000000100004": `{"id":"SOMETHINGELSE","recipients":[]}` + "\nbody",
		"000000000000100005": "\x00\x01\x02\n",
		"000000000000100006": `{"id":"000000000000100006","recipients":"x"}` + "\n",
	}
	for id, content := range cases {
		if err := os.WriteFile(filepath.Join(q, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for id := range cases {
		m, err := s.Open(id)
		if err == nil {
			m.Close()
			t.Errorf("Open(%s) of %q succeeded", id, cases[id])
		} else if errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%s) of a corrupt file: ErrNotFound, want a read error", id)
		}
	}
	// A corrupt or mismatched state file is an error too, not a silent reset.
	for _, st := range []string{"{bad", `[{"status":"delivered"}]`} {
		if err := os.WriteFile(filepath.Join(q, good+".state"), []byte(st), 0o600); err != nil {
			t.Fatal(err)
		}
		if m, err := s.Open(good); err == nil {
			m.Close()
			t.Errorf("Open with state %q succeeded", st)
		}
	}
	// The corrupt files stay listed (for the operator) and reopening works.
	s2 := openSpool(t, dir)
	ids, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(cases)+1 {
		t.Errorf("List = %v, want %d entries", ids, len(cases)+1)
	}
}

func TestConcurrentCreatesUniqueSortedIDs(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	const n = 1000
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := testEnvelope()
			w, err := s.Create(env)
			if err != nil {
				errs[i] = err
				return
			}
			fmt.Fprintf(w, "Message-ID: <%d@test>\r\n\r\n", i)
			errs[i] = w.Commit()
			ids[i] = env.ID
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("ID %s assigned twice", id)
		}
		seen[id] = true
	}
	listed, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != n {
		t.Fatalf("List has %d IDs, want %d", len(listed), n)
	}
	if !sort.StringsAreSorted(listed) {
		t.Error("List is not sorted")
	}
	sort.Strings(ids)
	if !slices.Equal(listed, ids) {
		t.Error("List differs from the IDs Create assigned")
	}
	// Each file holds its own message.
	for i, id := range listed[:10] {
		m, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		if b := readBody(t, m); !bytes.HasPrefix(b, []byte("Message-ID: <")) {
			t.Errorf("message %d body %q", i, b)
		}
		m.Close()
	}
}

func TestIDsIncreaseOverTime(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	a := testEnvelope()
	commit(t, s, a, nil)
	time.Sleep(2 * time.Millisecond)
	b := testEnvelope()
	commit(t, s, b, nil)
	if !(a.ID < b.ID) {
		t.Errorf("later ID %s does not sort after %s", b.ID, a.ID)
	}
	// A new process (a new Spool) must not reuse IDs either.
	s2 := openSpool(t, dir)
	c := testEnvelope()
	commit(t, s2, c, nil)
	if !(b.ID < c.ID) {
		t.Errorf("ID %s after reopening does not sort after %s", c.ID, b.ID)
	}
}

// TestCommitFailureClosedFile: the data cannot reach the disk (the file is
// closed under the writer), so Commit fails and no trace is left.
func TestCommitFailureClosedFile(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	env := testEnvelope()
	w, err := s.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	w.Write(make([]byte, MemLimit)) // past the memory buffer: the message has its file
	w.f.Close()
	if err := w.Commit(); err == nil {
		t.Fatal("Commit of a closed file succeeded")
	}
	for _, sub := range []string{"tmp", "queue"} {
		if n := leftovers(t, dir, sub); len(n) != 0 {
			t.Errorf("%s/ holds %v after a failed commit", sub, n)
		}
	}
}

// TestCommitFailureRenameBlocked: a directory stands where the queue file
// would go, so the rename fails; Commit reports it and the received data is
// removed from tmp/.
func TestCommitFailureRenameBlocked(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	env := testEnvelope()
	w, err := s.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	blocker := filepath.Join(dir, "queue", env.ID)
	if err := os.MkdirAll(filepath.Join(blocker, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil {
		t.Fatal("Commit onto a directory succeeded")
	}
	if n := contentIn(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ holds %v after a failed commit", n)
	}
	if fi, err := os.Stat(blocker); err != nil || !fi.IsDir() {
		t.Errorf("the blocking directory was replaced: %v", err)
	}
	if m, err := s.Open(env.ID); err == nil {
		m.Close()
		t.Error("a message whose commit failed can be opened")
	}
}

func TestWriteErrorIsSticky(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	w, err := s.Create(testEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, MemLimit)) // past the memory buffer: the message has its file
	w.f.Close()
	// Larger than the buffer, so the write reaches the closed file.
	if _, err := w.Write(make([]byte, 64<<10)); err == nil {
		t.Fatal("Write to a closed file succeeded")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after an error succeeded")
	}
	if err := w.Commit(); err == nil {
		t.Error("Commit after a write error succeeded")
	}
	if n := dirNames(t, filepath.Join(dir, "queue")); len(n) != 0 {
		t.Errorf("queue/ holds %v", n)
	}
}

func TestOpenFailsOnUnusableDirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil {
		t.Error("Open of a regular file succeeded")
	}
}

// TestContentBeforeCommit: Content gives the message received so far (for
// delivery on receipt) and leaves the writer usable.
func TestContentBeforeCommit(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	env := testEnvelope()
	w, err := s.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte("first part\r\n"), 5000) // past the buffer
	w.Write(first)
	w.Write([]byte("tail"))
	r, err := w.Content()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(first), "tail"...); !bytes.Equal(got, want) {
		t.Fatalf("Content gave %d bytes, want %d", len(got), len(want))
	}
	if ids, _ := s.List(); len(ids) != 0 {
		t.Fatalf("Content made the message visible: %v", ids)
	}
	w.Write([]byte(" and more\r\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	m, err := s.Open(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if b := readBody(t, m); !bytes.Equal(b, append(got, " and more\r\n"...)) {
		t.Errorf("committed body has %d bytes, want %d", len(b), len(got)+11)
	}
}

// TestSmallMessageStaysInMemory: a message under MemLimit touches no file
// until Commit, so one delivered before its commit and then aborted costs
// the file system nothing; Content reads it back exactly.
func TestSmallMessageStaysInMemory(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	w, err := s.Create(testEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("Subject: small\r\n\r\nbody\r\n")
	w.Write(msg)
	if n := contentIn(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Fatalf("tmp/ holds %v for a small message", n)
	}
	body, err := w.Content()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(body)
	if !bytes.Equal(got, msg) {
		t.Errorf("Content = %q, want %q", got, msg)
	}
	w.Abort()
	for _, sub := range []string{"tmp", "queue"} {
		if n := leftovers(t, dir, sub); len(n) != 0 {
			t.Errorf("%s/ holds %v after Abort", sub, n)
		}
	}
}

// contentIn lists the files in dir that hold data: the spool parks emptied
// files in tmp/ for reuse, and those are no leftovers.
func contentIn(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range dirNames(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.Size() > 0 {
			out = append(out, n)
		}
	}
	return out
}

// leftovers is contentIn for tmp/ and every name for the other folders.
func leftovers(t *testing.T, dir, sub string) []string {
	t.Helper()
	if sub == "tmp" {
		return contentIn(t, filepath.Join(dir, sub))
	}
	return dirNames(t, filepath.Join(dir, sub))
}

// TestFilesAreRecycled: a removed message's file is emptied and reused for
// the next message instead of a new inode (see Spool.recycle).
func TestFilesAreRecycled(t *testing.T) {
	dir := t.TempDir()
	s := openSpool(t, dir)
	w, err := s.Create(testEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: one\r\n\r\nbody\r\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	id1 := w.env.ID
	fi1, err := os.Stat(filepath.Join(dir, "queue", id1))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(id1); err != nil {
		t.Fatal(err)
	}
	if n := contentIn(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("removed message content left in tmp/: %v", n)
	}
	w2, err := s.Create(testEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	w2.Write([]byte("Subject: two\r\n\r\nbody\r\n"))
	if err := w2.Commit(); err != nil {
		t.Fatal(err)
	}
	fi2, err := os.Stat(filepath.Join(dir, "queue", w2.env.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi1, fi2) {
		t.Error("the second message got a new file, not the recycled one")
	}
	m, err := s.Open(w2.env.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	body, _ := io.ReadAll(m.Body())
	if string(body) != "Subject: two\r\n\r\nbody\r\n" {
		t.Errorf("recycled file holds %q", body)
	}
}
