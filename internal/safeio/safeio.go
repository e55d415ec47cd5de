// Package safeio owns the file-system steps that make writes durable: an
// atomic write (temporary file, fsync, rename, directory fsync) and a
// directory syncer that lets one fsync of a directory cover every rename
// that many goroutines made into it meanwhile (group commit).
package safeio

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// DirSyncer coalesces directory fsyncs. Sync(dir) returns once an fsync of
// dir that started after the call has finished: any rename or create into
// dir that happened before the call is then on stable storage. Calls that
// arrive while an fsync of the same directory is running share the next one.
type DirSyncer struct {
	mu   sync.Mutex
	dirs map[string]*dirState
	// syncDir does the fsync; tests replace it to count and slow fsyncs.
	syncDir func(dir string) error
}

type dirState struct {
	waiting []chan error
}

// NewDirSyncer returns a DirSyncer.
func NewDirSyncer() *DirSyncer {
	return &DirSyncer{dirs: make(map[string]*dirState), syncDir: SyncDir}
}

// Sync makes the entries of dir durable; see DirSyncer.
func (s *DirSyncer) Sync(dir string) error {
	ch := make(chan error, 1)
	s.mu.Lock()
	st, running := s.dirs[dir]
	if !running {
		st = &dirState{}
		s.dirs[dir] = st
	}
	st.waiting = append(st.waiting, ch)
	s.mu.Unlock()
	if !running {
		go s.run(dir, st)
	}
	return <-ch
}

func (s *DirSyncer) run(dir string, st *dirState) {
	for {
		s.mu.Lock()
		batch := st.waiting
		st.waiting = nil
		if len(batch) == 0 {
			delete(s.dirs, dir)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		err := s.syncDir(dir)
		for _, ch := range batch {
			ch <- err
		}
	}
}

// SyncDir fsyncs a directory, making the names in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncData flushes a file's data (and the metadata needed to read it back,
// such as its size) to stable storage. fdatasync is enough for a file that
// is then renamed: the rename is made durable by the directory fsync.
func SyncData(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// WriteFile writes data to path atomically and durably: a reader sees the
// old content or the new, never a part, and after a crash the new content
// is there once WriteFile returned nil.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := SyncData(f); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return SyncDir(dir)
}

// MkdirAll creates dir and its missing parents, and fsyncs the parent of
// every directory it created, so that the new directories survive a crash.
//
// A directory that already exists gets its parent fsynced too: whoever
// created it (another goroutine that has not reached its fsync yet, or a
// process that crashed between mkdir and fsync) may not have made its entry
// durable, and a caller that goes on to put data inside must not depend on
// that. Parents are created top-down with an fsync after each, so only the
// deepest existing directory can lack a durable entry.
func MkdirAll(dir string, perm os.FileMode) error {
	parent := filepath.Dir(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		if parent == dir {
			return nil
		}
		return SyncDir(parent)
	}
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); os.IsExist(err) {
		// Created meanwhile by someone else; it must still be a directory.
		if fi, serr := os.Stat(dir); serr != nil || !fi.IsDir() {
			return err
		}
	} else if err != nil {
		return err
	}
	return SyncDir(parent)
}
