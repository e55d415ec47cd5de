// Package maildir delivers messages into Maildir mailboxes, the layout that
// Dovecot reads: <root>/<domain>/<localpart>/{tmp,new,cur}. Delivery follows
// the Maildir protocol (write in tmp, fsync, rename into new, fsync new) and
// is idempotent: the file name is derived from the queue ID and the
// recipient, so a delivery repeated after a crash finds its earlier copy.
package maildir

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/safeio"
	"github.com/posthorn/posthorn/internal/smtp"
)

// Options configures a Maildir deliverer.
type Options struct {
	Root     string            // directory holding <domain>/<localpart> mailboxes
	Hostname string            // the host part of Maildir file names
	Syncer   *safeio.DirSyncer // shared directory fsyncs; nil makes one
}

// Maildir is a local Deliverer.
type Maildir struct {
	root   string
	host   string
	syncer *safeio.DirSyncer
	made   sync.Map // mailbox directories known to exist
	// noTmpfile is set once the file system refused O_TMPFILE.
	noTmpfile atomic.Bool
	bufs      sync.Pool
}

// New returns a Maildir deliverer.
func New(opts Options) *Maildir {
	s := opts.Syncer
	if s == nil {
		s = safeio.NewDirSyncer()
	}
	// Maildir names may not contain '/' or ':'; the spec suggests escaping them.
	host := strings.NewReplacer("/", `\057`, ":", `\072`).Replace(opts.Hostname)
	m := &Maildir{root: opts.Root, host: host, syncer: s}
	m.bufs.New = func() any { return bufio.NewWriterSize(nil, 32<<10) }
	return m
}

// Deliver implements deliver.Deliverer.
func (m *Maildir) Deliver(ctx context.Context, req deliver.Request) []deliver.Result {
	out := make([]deliver.Result, len(req.Rcpts))
	for k, i := range req.Rcpts {
		if err := ctx.Err(); err != nil {
			out[k] = deliver.Result{Status: envelope.Pending, Err: errShutdown.Wrap(err)}
			continue
		}
		err := m.deliverOne(req, i)
		if err != nil {
			out[k] = deliver.Result{Status: envelope.Pending, Err: err}
			continue
		}
		out[k] = deliver.Result{Status: envelope.Delivered}
	}
	return out
}

var (
	errShutdown  = smtp.Errorf(smtp.CodeLocalError, smtp.EServiceShutdown, "Delivery interrupted by shutdown")
	errNoSpace   = smtp.Errorf(smtp.CodeInsufficientStorage, smtp.ETempSystemFull, "Mailbox file system full")
	errMailbox   = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "Mailbox unavailable")
	errBadMbName = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "Invalid mailbox name")
)

// FileName returns the stable Maildir file name of recipient i of env.
func (m *Maildir) FileName(env *envelope.Envelope, i int) string {
	return fmt.Sprintf("%d.M%sI%d.%s", env.Received.Unix(), env.ID, i, m.host)
}

func (m *Maildir) deliverOne(req deliver.Request, i int) *smtp.Error {
	rcpt := req.Env.Recipients[i]
	if !validMailbox(rcpt.Mailbox) {
		return errBadMbName
	}
	dir := filepath.Join(m.root, filepath.FromSlash(rcpt.Mailbox))
	if err := m.ensureMailbox(dir); err != nil {
		return classify(err)
	}
	name := m.FileName(req.Env, i)
	if req.Retry {
		if m.present(dir, name) {
			return nil
		}
		// A half-written copy that a crash left under its name (without
		// O_TMPFILE) is garbage: the copy is made again.
		os.Remove(filepath.Join(dir, "tmp", name))
	}
	err := m.write(req, dir, name)
	if errors.Is(err, fs.ErrNotExist) {
		// The mailbox was removed behind our back (an administrator
		// deleting a user's Maildir): make it again, as on first delivery.
		m.made.Delete(dir)
		if err = m.ensureMailbox(dir); err == nil {
			err = m.write(req, dir, name)
		}
	}
	if err != nil {
		return classify(err)
	}
	return nil
}

// write puts one copy in dir by the Maildir protocol: written in tmp/,
// fdatasync, then named in new/, fsync new/.
//
// The file is made with O_TMPFILE where the file system allows it: an
// inode with no name in tmp/, linked into new/ once its data is durable.
// That is the Maildir protocol with one directory operation instead of two
// (create in tmp/, rename into new/) on directories that every concurrent
// delivery to the mailbox contends for, and a crash leaves no file behind
// in tmp/. Linking never replaces: if new/ already holds the name, an
// earlier attempt completed this very copy (names are stable), and it is
// kept.
func (m *Maildir) write(req deliver.Request, dir, name string) error {
	newPath := filepath.Join(dir, "new", name)
	tmp := ""
	var f *os.File
	var err error
	if !m.noTmpfile.Load() {
		f, err = os.OpenFile(filepath.Join(dir, "tmp"), os.O_WRONLY|unix.O_TMPFILE, 0o600)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
			m.noTmpfile.Store(true)
		}
	}
	if f == nil {
		tmp = filepath.Join(dir, "tmp", name)
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	}
	if err != nil {
		return err
	}
	bw := m.bufs.Get().(*bufio.Writer)
	bw.Reset(f)
	err = writeMessage(bw, io.NewSectionReader(req.Body, 0, req.Body.Size()), req.Env.Sender)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	m.bufs.Put(bw)
	if err == nil {
		err = safeio.SyncData(f)
	}
	if err == nil {
		if tmp != "" {
			err = os.Rename(tmp, newPath)
		} else {
			// linkat(2) of an O_TMPFILE through /proc needs no privilege,
			// unlike AT_EMPTY_PATH.
			err = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, newPath, unix.AT_SYMLINK_FOLLOW)
			if errors.Is(err, unix.EEXIST) {
				err = nil
			}
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = m.syncer.Sync(filepath.Join(dir, "new"))
	}
	if err != nil && tmp != "" {
		os.Remove(tmp)
	}
	return err
}

// validMailbox reports whether mb is "domain/localpart" with two plain
// directory names: a name that is empty, starts with a dot or holds ".."
// could land outside the mail root, at the root of a domain, or in a
// hidden directory.
func validMailbox(mb string) bool {
	domain, local, ok := strings.Cut(mb, "/")
	if !ok || strings.Contains(mb, "..") || strings.ContainsRune(mb, 0) {
		return false
	}
	for _, part := range []string{domain, local} {
		if part == "" || part[0] == '.' || strings.Contains(part, "/") {
			return false
		}
	}
	return true
}

func classify(err error) *smtp.Error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return errNoSpace.Wrap(err)
	}
	return errMailbox.Wrap(err)
}

// ensureMailbox creates the Maildir on first delivery, durably.
func (m *Maildir) ensureMailbox(dir string) error {
	if _, ok := m.made.Load(dir); ok {
		return nil
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := safeio.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	m.made.Store(dir, true)
	return nil
}

// present reports whether the copy named name was already delivered: in
// new/, or moved to cur/ by a reader (which appends ":2,flags").
func (m *Maildir) present(dir, name string) bool {
	if _, err := os.Lstat(filepath.Join(dir, "new", name)); err == nil {
		return true
	}
	ents, err := os.ReadDir(filepath.Join(dir, "cur"))
	if err != nil {
		return false
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, name) && (len(n) == len(name) || n[len(name)] == ':' || n[len(name)] == ',') {
			return true
		}
	}
	return false
}

// writeMessage writes the message for a Maildir: a Return-Path header with
// the envelope sender first (RFC 5321 4.4: added at final delivery,
// replacing any that came with the message), and line endings converted
// from CRLF to LF as Maildir readers expect.
func writeMessage(w *bufio.Writer, body io.Reader, sender string) error {
	w.WriteString("Return-Path: <" + sender + ">\n")
	br := bufio.NewReaderSize(body, 32<<10)
	inHeader, bol, dropping, heldCR := true, true, false, false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if heldCR {
				// A CR that ended the previous piece of a long line: part
				// of a CRLF if this piece starts with LF, else a bare CR
				// kept as is (unless its field is being dropped).
				if chunk[0] != '\n' && !dropping {
					w.WriteByte('\r')
				}
				heldCR = false
			}
			if inHeader && bol {
				switch {
				case chunk[0] == '\n' || chunk[0] == '\r' && len(chunk) > 1 && chunk[1] == '\n':
					inHeader = false // the blank line that ends the header
					dropping = false
				case chunk[0] == ' ' || chunk[0] == '\t':
					// continuation of the previous field
				default:
					dropping = len(chunk) >= 12 && strings.EqualFold(string(chunk[:12]), "Return-Path:")
				}
			}
			complete := chunk[len(chunk)-1] == '\n'
			line := chunk
			if complete && len(line) >= 2 && line[len(line)-2] == '\r' {
				line = line[:len(line)-2]
			} else if complete {
				line = line[:len(line)-1]
			} else if line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
				heldCR = true
			}
			if !dropping {
				w.Write(line)
				if complete {
					w.WriteByte('\n')
				}
			}
			bol = complete
		}
		if err == io.EOF {
			if heldCR && !dropping {
				w.WriteByte('\r')
			}
			return nil
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
	}
}
