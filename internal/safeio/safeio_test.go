package safeio

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingSyncer returns a DirSyncer whose fsyncs are counted and take at
// least delay, and a function reporting the number of the last fsync that
// finished (fsyncs are numbered from 1 in the order they start).
func countingSyncer(t testing.TB, delay time.Duration) (s *DirSyncer, started *atomic.Int64, lastDone func() int64) {
	t.Helper()
	s = NewDirSyncer()
	started = new(atomic.Int64)
	var mu sync.Mutex
	var done int64
	s.syncDir = func(dir string) error {
		n := started.Add(1)
		time.Sleep(delay)
		err := SyncDir(dir)
		mu.Lock()
		done = max(done, n)
		mu.Unlock()
		return err
	}
	return s, started, func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return done
	}
}

func TestDirSyncerConcurrentCallsCoalesceAndCover(t *testing.T) {
	dir := t.TempDir()
	s, started, lastDone := countingSyncer(t, 5*time.Millisecond)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The rename is made before Sync, so the fsync that Sync waits
			// for must be one that started after this call began.
			tmp := filepath.Join(dir, fmt.Sprintf(".tmp%d", i))
			final := filepath.Join(dir, fmt.Sprintf("f%d", i))
			if err := os.WriteFile(tmp, []byte{byte(i)}, 0o600); err != nil {
				errs <- err
				return
			}
			if err := os.Rename(tmp, final); err != nil {
				errs <- err
				return
			}
			before := started.Load()
			if err := s.Sync(dir); err != nil {
				errs <- err
				return
			}
			if got := lastDone(); got <= before {
				errs <- fmt.Errorf("Sync returned after fsync #%d finished, but fsyncs up to #%d had already started before the call", got, before)
				return
			}
			if b, err := os.ReadFile(final); err != nil || len(b) != 1 || b[0] != byte(i) {
				errs <- fmt.Errorf("renamed file %s after Sync: %q, %v", final, b, err)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("concurrent Sync calls did not all return")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := started.Load()
	if got < 1 {
		t.Fatal("no fsync was made")
	}
	// 100 callers against 5 ms fsyncs: calls arriving during an fsync share
	// the next one. Far fewer than one fsync per call shows the coalescing.
	if got >= n/2 {
		t.Errorf("%d fsyncs for %d concurrent Sync calls: not coalesced", got, n)
	}
	t.Logf("%d fsyncs for %d Sync calls", got, n)
}

func TestDirSyncerSequentialCallsEachGetAnFsync(t *testing.T) {
	dir := t.TempDir()
	s, started, _ := countingSyncer(t, 0)
	for range 5 {
		if err := s.Sync(dir); err != nil {
			t.Fatal(err)
		}
	}
	if got := started.Load(); got != 5 {
		t.Errorf("5 sequential Sync calls made %d fsyncs, want 5 (a call must not reuse an fsync that finished before it)", got)
	}
	// The per-directory state is dropped once idle.
	s.mu.Lock()
	left := len(s.dirs)
	s.mu.Unlock()
	if left != 0 {
		t.Errorf("%d directories still tracked after all syncs finished", left)
	}
}

func TestDirSyncerIndependentDirectories(t *testing.T) {
	base := t.TempDir()
	s := NewDirSyncer()
	var wg sync.WaitGroup
	var failures atomic.Int64
	for d := range 4 {
		dir := filepath.Join(base, fmt.Sprint(d))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.Sync(dir) != nil {
					failures.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d Sync calls failed", n)
	}
}

func TestDirSyncerReportsErrorToEveryWaiter(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	s := NewDirSyncer()
	var wg sync.WaitGroup
	var nilErrs atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Sync(missing); !errors.Is(err, os.ErrNotExist) {
				nilErrs.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := nilErrs.Load(); n != 0 {
		t.Errorf("%d Sync calls on a missing directory did not report ErrNotExist", n)
	}
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state")
	if err := WriteFile(p, []byte("one"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("second version"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "second version" {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	assertOnlyFiles(t, dir, "state")
}

func TestWriteFileFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	// The target is a non-empty directory: the rename must fail, and the
	// temporary file must not stay behind.
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(target, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(target, []byte("data"), 0o600); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	assertOnlyFiles(t, dir, "target")
	if err := WriteFile(filepath.Join(dir, "nodir", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile into a missing directory succeeded")
	}
}

// TestWriteFileAtomic has readers watch a file that is rewritten over and
// over: every read must see one whole version, never a mix or a prefix.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	version := func(i int) []byte {
		return bytes.Repeat([]byte{byte('a' + i%26)}, 64<<10+i)
	}
	if err := WriteFile(p, version(0), 0o600); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var bad atomic.Value
	var reads atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b, err := os.ReadFile(p)
				if err != nil {
					bad.Store(fmt.Sprintf("read: %v", err))
					return
				}
				reads.Add(1)
				i := len(b) - 64<<10
				if i < 0 || !bytes.Equal(b, version(i)) {
					bad.Store(fmt.Sprintf("read %d bytes that are no whole version", len(b)))
					return
				}
			}
		}()
	}
	for i := 1; i <= 30; i++ {
		if err := WriteFile(p, version(i), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if v := bad.Load(); v != nil {
		t.Fatal(v)
	}
	if reads.Load() == 0 {
		t.Fatal("readers made no read")
	}
	assertOnlyFiles(t, dir, "f")
}

func TestSyncData(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	if err := SyncData(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := SyncData(f); err == nil {
		t.Error("SyncData of a closed file succeeded")
	}
}

func TestMkdirAll(t *testing.T) {
	base := t.TempDir()
	deep := filepath.Join(base, "a", "b", "c")
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(deep); err != nil || !fi.IsDir() {
		t.Fatalf("%s not a directory: %v", deep, err)
	}
	if fi, _ := os.Stat(deep); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}
	// Existing directories are fine.
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	// A regular file in the way is an error, both as the directory itself
	// and as one of its parents.
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(file, 0o700); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("MkdirAll over a file: %v, want ENOTDIR", err)
	}
	if err := MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil {
		t.Error("MkdirAll below a file succeeded")
	}
}

func TestMkdirAllConcurrent(t *testing.T) {
	base := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := filepath.Join(base, "m", "u", []string{"tmp", "new", "cur"}[i%3])
			if err := MkdirAll(d, 0o700); err != nil {
				errs <- err
				return
			}
			if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
				errs <- fmt.Errorf("%s missing after MkdirAll returned: %v", d, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func assertOnlyFiles(t testing.TB, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}
