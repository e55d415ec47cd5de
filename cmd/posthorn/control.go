package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/posthorn/posthorn/internal/queue"
)

// The control socket lets `posthorn queue` act on the running server's
// queue (retry now, delete) without touching the spool behind its back.
// It is a Unix socket in the data directory, mode 0600: whoever may write
// the spool may use it. One request line, one reply line:
//
//	RETRY [ID]   ->  OK ... | ERR ...
//	DELETE ID    ->  OK ... | ERR ...
//	BOUNCE ID    ->  OK ... | ERR ...
const controlSocketName = "control.sock"

func controlPath(dataDir string) string { return filepath.Join(dataDir, controlSocketName) }

// serveControl listens on the control socket until l is closed.
func serveControl(dataDir string, q *queue.Queue, log *slog.Logger) (io.Closer, error) {
	path := controlPath(dataDir)
	// A socket left by a server that was killed; a live server would own
	// the data directory, and two servers on one spool is unsupported.
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go handleControl(c, q, log)
		}
	}()
	return l, nil
}

func handleControl(c net.Conn, q *queue.Queue, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReaderSize(c, 512).ReadString('\n')
	if err != nil {
		return
	}
	verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	reply := func(err error, ok string) {
		if err != nil {
			fmt.Fprintf(c, "ERR %v\n", err)
			return
		}
		fmt.Fprintf(c, "OK %s\n", ok)
	}
	switch verb {
	case "RETRY":
		if arg == "" {
			n, err := q.RetryAll()
			reply(err, fmt.Sprintf("%d messages scheduled for delivery now", n))
			return
		}
		reply(q.Retry(arg), arg+" scheduled for delivery now")
	case "DELETE":
		reply(q.Delete(arg), arg+" deleted")
	case "BOUNCE":
		reply(q.Bounce(arg), arg+" bounced to its sender")
	default:
		log.Warn("control: unknown request", "request", verb)
		reply(errors.New("unknown request"), "")
	}
}

// errNotRunning means no server answers on the control socket.
var errNotRunning = errors.New("no running server answers on the control socket")

// controlRequest sends one request to the running server.
func controlRequest(dataDir, req string) (string, error) {
	c, err := net.DialTimeout("unix", controlPath(dataDir), 5*time.Second)
	if err != nil {
		return "", errNotRunning
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("control socket: %w", err)
	}
	line = strings.TrimSpace(line)
	if rest, ok := strings.CutPrefix(line, "ERR "); ok {
		return "", errors.New(rest)
	}
	return strings.TrimPrefix(line, "OK "), nil
}
