// Package spool owns the durable storage of queued messages: the body and
// envelope of each message, queue IDs, per-recipient delivery state, and
// recovery on open. A message is committed only when its file and its
// directory entry are on stable storage; many concurrent commits share
// directory fsyncs (see safeio.DirSyncer). The spool does no networking.
//
// Layout under the spool directory, readable by a person:
//
//	tmp/ID        a message being received (removed on open: never committed)
//	queue/ID      a committed message: one line of JSON envelope, then the
//	              message exactly as received (CRLF line endings), trace
//	              header included
//	queue/ID.state  the recipients' delivery state (JSON), once there is any
package spool

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/safeio"
)

// Spool is a directory of queued messages.
type Spool struct {
	tmpDir   string
	queueDir string
	syncer   *safeio.DirSyncer
	seq      atomic.Uint32

	// Files are recycled rather than created and unlinked for every
	// message: a removed message's file is truncated and parked in tmp/
	// for the next message that needs one. Allocating inodes under a churn
	// of deletions is slow on ext4 (find_inode_bit skips recently deleted
	// inodes), and a relay would otherwise pay it on every message.
	recycle  bool
	poolMu   sync.Mutex
	pool     []string // names of empty files in tmp/, free for reuse
	poolSeq  atomic.Uint64
	poolName string // prefix of this process's pool file names
}

// poolMax bounds the parked files (and so the inodes kept in reserve).
const poolMax = 512

// OpenReadOnly opens an existing spool for inspection, as the queue
// commands do while a server runs: it creates nothing and cleans nothing
// (the tmp/ files may be messages the server is receiving).
func OpenReadOnly(dir string) (*Spool, error) {
	s := &Spool{tmpDir: filepath.Join(dir, "tmp"), queueDir: filepath.Join(dir, "queue")}
	if _, err := os.Stat(s.queueDir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return s, nil
}

// Open opens (creating if needed) the spool in dir and removes the leftovers
// of messages that were being received when the process stopped: they were
// never acknowledged, so the client still holds them.
func Open(dir string) (*Spool, error) {
	s := &Spool{
		tmpDir:   filepath.Join(dir, "tmp"),
		queueDir: filepath.Join(dir, "queue"),
		syncer:   safeio.NewDirSyncer(),
	}
	for _, d := range []string{s.tmpDir, s.queueDir} {
		if err := safeio.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	var b [4]byte
	rand.Read(b[:])
	s.seq.Store(binary.BigEndian.Uint32(b[:]))
	s.recycle = true
	s.poolName = fmt.Sprintf("p%08X", binary.BigEndian.Uint32(b[:]))
	ents, err := os.ReadDir(s.tmpDir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		// What was being received was never acknowledged: its content
		// goes, its file joins the pool.
		s.park(e.Name())
	}
	ents, err = os.ReadDir(s.queueDir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		n := e.Name()
		id, isState := strings.CutSuffix(n, ".state")
		_, statErr := os.Stat(filepath.Join(s.queueDir, id))
		if strings.HasPrefix(n, ".") || isState && errors.Is(statErr, os.ErrNotExist) {
			// Half-written state files (a crash inside safeio.WriteFile)
			// and the state of a message already removed.
			os.Remove(filepath.Join(s.queueDir, n))
		}
	}
	return s, nil
}

// park empties the file tmp/name and keeps it for reuse, or removes it
// when the pool is full.
func (s *Spool) park(name string) {
	path := filepath.Join(s.tmpDir, name)
	s.poolMu.Lock()
	full := len(s.pool) >= poolMax
	s.poolMu.Unlock()
	if full || !s.recycle || os.Truncate(path, 0) != nil {
		os.Remove(path)
		return
	}
	s.poolMu.Lock()
	s.pool = append(s.pool, name)
	s.poolMu.Unlock()
}

// openFile opens an empty file in tmp/ for a message: a parked one when
// there is one, else a new one. It returns the file and its name.
func (s *Spool) openFile() (*os.File, string, error) {
	for {
		s.poolMu.Lock()
		name := ""
		if n := len(s.pool); n > 0 {
			name = s.pool[n-1]
			s.pool = s.pool[:n-1]
		}
		s.poolMu.Unlock()
		if name == "" {
			break
		}
		f, err := os.OpenFile(filepath.Join(s.tmpDir, name), os.O_RDWR|os.O_TRUNC, 0o600)
		if err == nil {
			return f, name, nil
		}
		// Gone meanwhile (an operator cleaning tmp/): try the next one.
	}
	for {
		name := fmt.Sprintf("%s%012X", s.poolName, s.poolSeq.Add(1))
		f, err := os.OpenFile(filepath.Join(s.tmpDir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, name, err
	}
}

// newID returns a queue ID: the time in microseconds and a sequence number,
// in hex, so IDs sort by arrival and never repeat within a process (nor
// across restarts, since time moves on).
func (s *Spool) newID(now time.Time) string {
	return fmt.Sprintf("%013X%05X", now.UnixMicro(), s.seq.Add(1)&0xFFFFF)
}

// ErrNotFound is returned for an ID that is not in the queue.
var ErrNotFound = errors.New("spool: no such message")

// Writer receives one message's content. Nothing is visible in the queue
// until Commit returns nil; Abort (or a crash) leaves nothing behind.
//
// A small message is held in memory until Commit writes it out in one go:
// most mail is a few kilobytes, and a message delivered before it is ever
// committed (see Content) then costs the file system nothing. Creating and
// unlinking a file per message is not free: ext4's inode allocator slows
// down on a churn of recently deleted inodes. A message that outgrows
// MemLimit spills into its file in tmp/ and streams from then on.
type Writer struct {
	s    *Spool
	env  *envelope.Envelope
	buf  *[]byte // envelope line and message while in memory; nil once spilled
	f    *os.File
	bw   *bufio.Writer
	err  error
	done bool
	off  int64  // where the message starts, after the envelope line
	n    int64  // bytes written (envelope line included)
	tmp  string // the file's name in tmp/ once spilled
}

// MemLimit is the size up to which a message being received is kept in
// memory rather than in a file.
const MemLimit = 64 << 10

var memPool = sync.Pool{New: func() any { b := make([]byte, 0, MemLimit); return &b }}

// Create starts a message: it assigns env.ID and writes the envelope. The
// caller then writes the message and calls Commit or Abort.
func (s *Spool) Create(env *envelope.Envelope) (*Writer, error) {
	env.ID = s.newID(time.Now())
	line, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	w := &Writer{s: s, env: env, buf: memPool.Get().(*[]byte)}
	*w.buf = append(append((*w.buf)[:0], line...), '\n')
	w.off = int64(len(line) + 1)
	w.n = w.off
	if len(*w.buf) > MemLimit {
		if err := w.spill(); err != nil {
			w.Abort()
			return nil, err
		}
	}
	return w, nil
}

// spill moves the message from memory into its file in tmp/.
func (w *Writer) spill() error {
	f, name, err := w.s.openFile()
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	w.f, w.tmp = f, name
	w.bw = bufio.NewWriterSize(f, 32<<10)
	_, err = w.bw.Write(*w.buf)
	w.release()
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

func (w *Writer) release() {
	if w.buf != nil {
		*w.buf = (*w.buf)[:0]
		memPool.Put(w.buf)
		w.buf = nil
	}
}

// Content returns a reader of the message content written so far (not yet
// durable), valid until Commit or Abort. It lets a message be delivered
// straight from where it is being received.
func (w *Writer) Content() (*io.SectionReader, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.buf != nil {
		return io.NewSectionReader(bytes.NewReader(*w.buf), w.off, w.n-w.off), nil
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("spool: %w", err)
		return nil, w.err
	}
	return io.NewSectionReader(w.f, w.off, w.n-w.off), nil
}

// Write appends message bytes. Errors are sticky and reported by Commit too.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		w.err = errors.New("spool: write after close")
		return 0, w.err
	}
	if w.buf != nil {
		if len(*w.buf)+len(p) <= MemLimit {
			*w.buf = append(*w.buf, p...)
			w.n += int64(len(p))
			return len(p), nil
		}
		if err := w.spill(); err != nil {
			w.err = err
			return 0, err
		}
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("spool: %w", err)
	}
	return n, w.err
}

// Commit makes the message durable: data flushed and fsynced, file renamed
// into the queue, queue directory fsynced (shared with concurrent commits).
// Only after Commit returns nil may the server reply 250. On error the
// message is gone and the server must reply 4xx.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("spool: commit after close")
	}
	err := w.err
	if err == nil && w.buf != nil {
		err = w.spill()
	}
	if w.f == nil {
		w.done = true
		w.release()
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		err = safeio.SyncData(w.f)
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.done = true
	tmp := filepath.Join(w.s.tmpDir, w.tmp)
	if err == nil {
		// Never over an existing message: IDs are unique unless the clock
		// steps back, and then a refusal beats losing the older message.
		err = renameNoReplace(tmp, filepath.Join(w.s.queueDir, w.env.ID))
	}
	if err != nil {
		w.s.park(w.tmp)
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	if err := w.s.syncer.Sync(w.s.queueDir); err != nil {
		// The entry may or may not survive a crash: we cannot promise it,
		// so take it back (the client will retry).
		os.Remove(filepath.Join(w.s.queueDir, w.env.ID))
		return fmt.Errorf("spool: commit %s: %w", w.env.ID, err)
	}
	return nil
}

// Abort discards the message.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.release()
	if w.f != nil {
		w.f.Close()
		w.s.park(w.tmp)
	}
}

// List returns the IDs of the queued messages, oldest first.
func (s *Spool) List() ([]string, error) {
	ents, err := os.ReadDir(s.queueDir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if n := e.Name(); validID(n) {
			ids = append(ids, n)
		}
	}
	return ids, nil // ReadDir sorts by name, and IDs sort by time
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

// Message is an open queued message.
type Message struct {
	Env  *envelope.Envelope
	f    *os.File
	off  int64
	size int64
}

// Open opens a queued message: its envelope, with the recipients' state
// applied, and its content.
func (s *Spool) Open(id string) (*Message, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	f, err := os.Open(filepath.Join(s.queueDir, id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	m, err := s.readMessage(f, id)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func (s *Spool) readMessage(f *os.File, id string) (*Message, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// The envelope line is short next to any limit we would set; read it in
	// growing pieces rather than through a bufio.Reader we would discard.
	var head []byte
	buf := make([]byte, 4096)
	for {
		n, err := f.ReadAt(buf, int64(len(head)))
		head = append(head, buf[:n]...)
		if i := bytes.IndexByte(head, '\n'); i >= 0 {
			head = head[:i+1]
			break
		}
		if err != nil || len(head) > 16<<20 {
			return nil, fmt.Errorf("spool: %s: no envelope line", id)
		}
	}
	env := new(envelope.Envelope)
	if err := json.Unmarshal(head, env); err != nil {
		return nil, fmt.Errorf("spool: %s: envelope: %w", id, err)
	}
	if env.ID != id {
		return nil, fmt.Errorf("spool: %s: envelope names %q", id, env.ID)
	}
	if err := s.applyState(env); err != nil {
		return nil, err
	}
	off := int64(len(head))
	return &Message{Env: env, f: f, off: off, size: fi.Size() - off}, nil
}

// Body returns a reader of the message content (CRLF line endings).
func (m *Message) Body() *io.SectionReader { return io.NewSectionReader(m.f, m.off, m.size) }

// Size is the size of the message content in bytes.
func (m *Message) Size() int64 { return m.size }

// Close closes the message file.
func (m *Message) Close() error { return m.f.Close() }

func (s *Spool) statePath(id string) string { return filepath.Join(s.queueDir, id+".state") }

func (s *Spool) applyState(env *envelope.Envelope) error {
	data, err := os.ReadFile(s.statePath(env.ID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	var st []envelope.State
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("spool: %s.state: %w", env.ID, err)
	}
	if len(st) != len(env.Recipients) {
		return fmt.Errorf("spool: %s.state: %d states for %d recipients", env.ID, len(st), len(env.Recipients))
	}
	for i := range st {
		env.Recipients[i].State = st[i]
	}
	return nil
}

// SaveState durably records the recipients' delivery state.
func (s *Spool) SaveState(env *envelope.Envelope) error {
	st := make([]envelope.State, len(env.Recipients))
	for i, r := range env.Recipients {
		st[i] = r.State
	}
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := safeio.WriteFile(s.statePath(env.ID), data, 0o600); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	return nil
}

// Remove deletes a message whose recipients are all final. The removal is
// not fsynced: if a crash undoes it, the message is delivered again on
// restart, and local delivery recognises the copy it already made.
func (s *Spool) Remove(id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	path := filepath.Join(s.queueDir, id)
	var err error
	if s.recycle {
		// The file goes back to the pool: renamed into tmp/ (where a crash
		// leaves only garbage) and emptied there.
		name := fmt.Sprintf("%s%012X", s.poolName, s.poolSeq.Add(1))
		if err = os.Rename(path, filepath.Join(s.tmpDir, name)); err == nil {
			s.park(name)
		}
	} else {
		err = os.Remove(path)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ErrNotFound
		}
		return fmt.Errorf("spool: %w", err)
	}
	os.Remove(s.statePath(id))
	return nil
}

// renameNoReplace renames old to new unless new exists. File systems
// without RENAME_NOREPLACE get a hard link (which also refuses an existing
// name) and an unlink.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		if err = os.Link(oldpath, newpath); err == nil {
			err = os.Remove(oldpath)
		}
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return nil
}
