package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/posthorn/posthorn/internal/config"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/spool"
)

// queueCommand runs `posthorn queue list|show|retry|delete ...`. Reading
// commands look at the spool directly and never change it; commands that
// act go through the running server's control socket, so the server's
// view of its queue stays right. With no server running, delete works on
// the spool directly and retry has nothing to do (a start retries all).
func queueCommand(cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(stderr, "posthorn: %v\n", err)
		return 1
	}
	spoolDir := filepath.Join(dataDir, "spool")
	needID := func() (string, bool) {
		if len(args) != 2 {
			fmt.Fprintf(stderr, "posthorn: queue %s needs one queue ID\n", args[0])
			return "", false
		}
		return args[1], true
	}
	switch args[0] {
	case "list":
		if len(args) != 1 {
			fmt.Fprintln(stderr, "posthorn: queue list takes no arguments")
			return 2
		}
		return queueList(spoolDir, stdout, stderr)
	case "show":
		id, ok := needID()
		if !ok {
			return 2
		}
		return queueShow(spoolDir, id, stdout, stderr)
	case "retry":
		if len(args) > 2 {
			fmt.Fprintln(stderr, "posthorn: queue retry takes at most one queue ID")
			return 2
		}
		req := "RETRY"
		if len(args) == 2 {
			req += " " + args[1]
		}
		return act(dataDir, req, stdout, stderr, func() (string, error) {
			return "", errors.New("no server is running; every queued message is tried when it starts")
		})
	case "delete":
		id, ok := needID()
		if !ok {
			return 2
		}
		return act(dataDir, "DELETE "+id, stdout, stderr, func() (string, error) {
			s, err := spool.OpenReadOnly(spoolDir)
			if err == nil {
				err = s.Remove(id)
			}
			if err != nil {
				return "", fmt.Errorf("%s: %w", id, err)
			}
			return id + " deleted", nil
		})
	case "bounce":
		id, ok := needID()
		if !ok {
			return 2
		}
		return act(dataDir, "BOUNCE "+id, stdout, stderr, func() (string, error) {
			return "", errors.New("queue bounce needs the running server (it queues the bounce)")
		})
	}
	fmt.Fprintf(stderr, "posthorn: unknown queue command %q\n%s", args[0], usage)
	return 2
}

func queueList(spoolDir string, stdout, stderr io.Writer) int {
	s, err := spool.OpenReadOnly(spoolDir)
	if err != nil {
		fmt.Fprintln(stdout, "queue is empty")
		return 0
	}
	ids, err := s.List()
	if err != nil {
		fmt.Fprintf(stderr, "posthorn: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tSIZE\tSENDER\tRECIPIENT\tSTATE")
	now := time.Now()
	n := 0
	for _, id := range ids {
		m, err := s.Open(id)
		if err != nil {
			continue // delivered and removed since List
		}
		env, size := m.Env, m.Size()
		m.Close()
		n++
		sender := "<" + env.Sender + ">"
		for i, r := range env.Recipients {
			first := [3]string{id, now.Sub(env.Received).Round(time.Second).String(), fmt.Sprint(size)}
			if i > 0 {
				first = [3]string{"", "", ""}
				sender = ""
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", first[0], first[1], first[2], sender, r.Addr, recipientState(r, now))
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d messages\n", n)
	return 0
}

func recipientState(r envelope.Recipient, now time.Time) string {
	switch r.Status {
	case envelope.Delivered:
		return "delivered"
	case envelope.Failed:
		return "failed: " + r.LastError + " (" + r.LastCause + ")"
	}
	st := "queued"
	if !r.NextAttempt.IsZero() && r.NextAttempt.After(now) {
		st += ", next try in " + r.NextAttempt.Sub(now).Round(time.Second).String()
	}
	if r.LastError != "" {
		st += ": " + strings.ReplaceAll(r.LastError, "\n", " ")
	}
	if r.LastCause != "" {
		st += " (" + strings.ReplaceAll(r.LastCause, "\n", " ") + ")"
	}
	return st
}

func queueShow(spoolDir, id string, stdout, stderr io.Writer) int {
	s, err := spool.OpenReadOnly(spoolDir)
	if err != nil {
		fmt.Fprintf(stderr, "posthorn: %s: not in the queue\n", id)
		return 1
	}
	m, err := s.Open(id)
	if err != nil {
		fmt.Fprintf(stderr, "posthorn: %s: %v\n", id, err)
		return 1
	}
	defer m.Close()
	env, _ := json.MarshalIndent(m.Env, "", "  ")
	fmt.Fprintf(stdout, "%s\n\n", env)
	if _, err := io.Copy(stdout, m.Body()); err != nil {
		fmt.Fprintf(stderr, "posthorn: %v\n", err)
		return 1
	}
	return 0
}

// act sends req to the running server, or runs offline when none runs,
// and prints the outcome.
func act(dataDir, req string, stdout, stderr io.Writer, offline func() (string, error)) int {
	out, err := controlRequest(dataDir, req)
	if errors.Is(err, errNotRunning) {
		out, err = offline()
	}
	if err != nil {
		fmt.Fprintf(stderr, "posthorn: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, out)
	return 0
}
