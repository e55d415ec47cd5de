package testutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// MaildirMessage is one message file of a Maildir.
type MaildirMessage struct {
	// Name is the file name (in cur/, with the reader's ":2,flags" suffix).
	Name string
	// Sub is "new" or "cur".
	Sub string
	// Data is the file's content.
	Data string
}

// MaildirPath returns the Maildir of user@domain under a data directory,
// where posthorn delivers: <dataDir>/mail/<domain>/<user>.
func MaildirPath(dataDir, domain, user string) string {
	return filepath.Join(dataDir, "mail", domain, user)
}

// ReadMaildir returns the contents of the messages in the Maildir of
// user@domain (new/ and cur/, ordered by file name). A mailbox that does
// not exist yet has no messages.
func ReadMaildir(t testing.TB, dataDir, domain, user string) []string {
	t.Helper()
	var out []string
	for _, m := range ReadMaildirFiles(t, dataDir, domain, user) {
		out = append(out, m.Data)
	}
	return out
}

// ReadMaildirFiles is ReadMaildir with the file names.
func ReadMaildirFiles(t testing.TB, dataDir, domain, user string) []MaildirMessage {
	t.Helper()
	dir := MaildirPath(dataDir, domain, user)
	var out []MaildirMessage
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatalf("read maildir: %v", err)
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatalf("read maildir: %v", err)
			}
			out = append(out, MaildirMessage{Name: e.Name(), Sub: sub, Data: string(b)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// WaitMaildir waits up to timeout until the Maildir of user@domain holds at
// least n messages and returns them; it fails the test on timeout. Delivery
// happens after the SMTP reply, so a test that has just sent mail waits
// here rather than sleeping.
func WaitMaildir(t testing.TB, dataDir, domain, user string, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := ReadMaildir(t, dataDir, domain, user)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("maildir %s@%s: %d messages after %v, want %d", user, domain, len(msgs), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SpoolEntries lists the names in <dataDir>/spool/<sub> ("tmp" for messages
// being received, "queue" for accepted ones not yet fully delivered). In
// tmp/ only files holding data count: the spool parks emptied files there
// for reuse. The directory must exist (a running server has made it): were
// it renamed, "no entries" would make every check of an empty spool pass
// unseen.
func SpoolEntries(t testing.TB, dataDir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "spool", sub))
	if err != nil {
		t.Fatalf("read spool: %v", err)
	}
	var names []string
	for _, e := range ents {
		if sub == "tmp" {
			if fi, err := e.Info(); err == nil && fi.Size() == 0 {
				continue
			}
		}
		names = append(names, e.Name())
	}
	return names
}

// WaitQueueEmpty waits up to timeout until the spool queue holds nothing:
// every accepted message has been delivered and removed. After that no
// further delivery can happen, so a mailbox's content is final.
func WaitQueueEmpty(t testing.TB, dataDir string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		left := SpoolEntries(t, dataDir, "queue")
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool queue not empty after %v: %v", timeout, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
