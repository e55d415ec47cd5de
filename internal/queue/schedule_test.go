package queue_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/queue"
	"github.com/posthorn/posthorn/internal/smtp"
	"github.com/posthorn/posthorn/internal/spool"
)

// call is one Deliver call seen by the fake deliverer.
type call struct {
	at       time.Time
	id       string
	rcpts    []int
	retry    bool
	attempts []int // Attempts of every recipient, as the queue passed them
	errs     []string
	body     []byte
}

// fakeDeliverer answers each recipient through answer (Delivered when nil)
// and records every call.
type fakeDeliverer struct {
	mu     sync.Mutex
	calls  []call
	answer func(env *envelope.Envelope, i int, nth int) deliver.Result // nth: 1 for the first attempt of recipient i
	seen   map[string]int
}

func (f *fakeDeliverer) Deliver(ctx context.Context, req deliver.Request) []deliver.Result {
	body, _ := io.ReadAll(io.NewSectionReader(req.Body, 0, req.Body.Size()))
	c := call{at: time.Now(), id: req.Env.ID, rcpts: slices.Clone(req.Rcpts), retry: req.Retry, body: body}
	for _, r := range req.Env.Recipients {
		c.attempts = append(c.attempts, r.Attempts)
		c.errs = append(c.errs, r.LastError)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	if f.seen == nil {
		f.seen = map[string]int{}
	}
	nths := make([]int, len(req.Rcpts))
	for k, i := range req.Rcpts {
		key := fmt.Sprintf("%s/%d", req.Env.ID, i)
		f.seen[key]++
		nths[k] = f.seen[key]
	}
	f.mu.Unlock()
	out := make([]deliver.Result, len(req.Rcpts))
	for k, i := range req.Rcpts {
		out[k] = deliver.Result{Status: envelope.Delivered}
		if f.answer != nil {
			out[k] = f.answer(req.Env, i, nths[k])
		}
	}
	return out
}

func (f *fakeDeliverer) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var (
	tempErr = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "try later")
	permErr = smtp.Errorf(smtp.CodeMailboxUnavailable, smtp.EBadDestMailbox, "no such mailbox")
)

type fixture struct {
	dir   string
	spool *spool.Spool
	d     *fakeDeliverer
	log   *logBuffer
	q     *queue.Queue
}

// start builds a queue over a spool in a fresh directory (or dir when not
// empty) and starts it; the queue is stopped at cleanup.
func start(t testing.TB, dir string, d *fakeDeliverer, configure func(*queue.Options)) *fixture {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, spool: sp, d: d, log: &logBuffer{}}
	opts := queue.Options{
		Spool:          sp,
		Deliverer:      d,
		Workers:        2,
		RetryIntervals: []time.Duration{50 * time.Millisecond},
		MaxLifetime:    time.Hour,
		Logger:         slog.New(slog.NewTextHandler(f.log, nil)),
	}
	if configure != nil {
		configure(&opts)
	}
	f.q = queue.New(opts)
	if err := f.q.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.q.Stop)
	return f
}

func localEnvelope(users ...string) *envelope.Envelope {
	env := &envelope.Envelope{Sender: "bob@example.org", Received: time.Now()}
	for _, u := range users {
		env.Recipients = append(env.Recipients, envelope.Recipient{Addr: u + "@example.com", Mailbox: "example.com/" + u})
	}
	return env
}

const testBody = "Subject: test\r\n\r\nbody\r\n"

// submit receives a message through the queue, as the SMTP server does.
func submit(t testing.TB, q *queue.Queue, env *envelope.Envelope) string {
	t.Helper()
	in, err := q.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(in, testBody); err != nil {
		t.Fatal(err)
	}
	if err := in.Commit(); err != nil {
		t.Fatal(err)
	}
	return env.ID
}

// spoolDirect commits a message straight into the spool, bypassing the
// queue: what a previous process left behind.
func spoolDirect(t testing.TB, sp *spool.Spool, env *envelope.Envelope) string {
	t.Helper()
	w, err := sp.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, testBody)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return env.ID
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func spoolEmpty(sp *spool.Spool) func() bool {
	return func() bool {
		ids, err := sp.List()
		return err == nil && len(ids) == 0
	}
}

func readEnv(t testing.TB, sp *spool.Spool, id string) *envelope.Envelope {
	t.Helper()
	m, err := sp.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return m.Env
}

func TestDeliveredMessageIsRemoved(t *testing.T) {
	f := start(t, "", &fakeDeliverer{}, nil)
	id := submit(t, f.q, localEnvelope("alice", "theboss"))
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
	calls := f.d.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d delivery calls, want 1", len(calls))
	}
	c := calls[0]
	if c.id != id || !slices.Equal(c.rcpts, []int{0, 1}) || c.retry {
		t.Errorf("call %+v, want both recipients of %s without Retry", c, id)
	}
	if !strings.HasSuffix(string(c.body), testBody) {
		t.Errorf("deliverer read body %q", c.body)
	}
	if names, _ := os.ReadDir(filepath.Join(f.dir, "queue")); len(names) != 0 {
		t.Errorf("queue/ still holds %d files", len(names))
	}
	if n := strings.Count(f.log.String(), "msg=delivered"); n != 2 {
		t.Errorf("%d delivered log lines, want 2:\n%s", n, f.log)
	}
}

func TestTemporaryFailureIsRetried(t *testing.T) {
	d := &fakeDeliverer{answer: func(env *envelope.Envelope, i, nth int) deliver.Result {
		// theboss fails three times, alice never.
		if i == 1 && nth <= 3 {
			return deliver.Result{Status: envelope.Pending, Err: tempErr}
		}
		return deliver.Result{Status: envelope.Delivered}
	}}
	f := start(t, "", d, func(o *queue.Options) {
		o.RetryIntervals = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}
	})
	id := submit(t, f.q, localEnvelope("alice", "theboss"))
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
	calls := d.snapshot()
	if len(calls) != 4 {
		t.Fatalf("%d delivery calls, want 4 (one, then three retries)", len(calls))
	}
	if !slices.Equal(calls[0].rcpts, []int{0, 1}) || calls[0].retry {
		t.Errorf("first call %+v", calls[0])
	}
	wantGap := []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}
	for n, c := range calls[1:] {
		n++
		// Only the recipient still pending is retried, flagged as a retry,
		// with the attempts and error recorded in the spool.
		if c.id != id || !slices.Equal(c.rcpts, []int{1}) || !c.retry {
			t.Errorf("retry %d: %+v, want recipient 1 with Retry", n, c)
		}
		if c.attempts[1] != n || !strings.Contains(c.errs[1], "451 4.3.0") {
			t.Errorf("retry %d saw attempts %v, errors %q", n, c.attempts, c.errs)
		}
		// The queue measures the interval from the start of the previous
		// attempt, a little before the deliverer saw it: allow for that.
		if gap := c.at.Sub(calls[n-1].at); gap < wantGap[n]*8/10 {
			t.Errorf("retry %d came %v after the previous attempt, want about %v", n, gap, wantGap[n])
		}
	}
	if !strings.Contains(f.log.String(), "delivery deferred") {
		t.Errorf("no deferral logged:\n%s", f.log)
	}
}

func TestPermanentFailureIsHeld(t *testing.T) {
	d := &fakeDeliverer{answer: func(env *envelope.Envelope, i, nth int) deliver.Result {
		if i == 1 {
			return deliver.Result{Status: envelope.Failed, Err: permErr}
		}
		return deliver.Result{Status: envelope.Delivered}
	}}
	f := start(t, "", d, nil)
	id := submit(t, f.q, localEnvelope("alice", "nobody"))
	waitFor(t, "the held message to be logged", func() bool { return strings.Contains(f.log.String(), "held") })
	time.Sleep(150 * time.Millisecond) // three retry intervals: nothing more may happen
	if n := len(d.snapshot()); n != 1 {
		t.Errorf("%d delivery calls, want 1: a permanent failure is not retried", n)
	}
	env := readEnv(t, f.spool, id)
	if env.Recipients[0].Status != envelope.Delivered || env.Recipients[1].Status != envelope.Failed {
		t.Errorf("states %+v", env.Recipients)
	}
	if !strings.Contains(env.Recipients[1].LastError, "550 5.1.1") {
		t.Errorf("last error %q", env.Recipients[1].LastError)
	}
	if !strings.Contains(f.log.String(), "delivery failed") {
		t.Errorf("permanent failure not logged:\n%s", f.log)
	}

	// A restart keeps it held and delivers nothing again.
	f.q.Stop()
	d2 := &fakeDeliverer{}
	f2 := start(t, f.dir, d2, nil)
	time.Sleep(100 * time.Millisecond)
	if n := len(d2.snapshot()); n != 0 {
		t.Errorf("held message delivered again after restart (%d calls)", n)
	}
	if !strings.Contains(f2.log.String(), "held") {
		t.Errorf("restart did not report the held message:\n%s", f2.log)
	}
	if ids, _ := f2.spool.List(); !slices.Equal(ids, []string{id}) {
		t.Errorf("spool holds %v, want the held message", ids)
	}
}

func TestLifetimeExpiryFails(t *testing.T) {
	d := &fakeDeliverer{answer: func(*envelope.Envelope, int, int) deliver.Result {
		return deliver.Result{Status: envelope.Pending, Err: tempErr}
	}}
	f := start(t, "", d, func(o *queue.Options) { o.MaxLifetime = time.Hour })
	env := localEnvelope("alice")
	env.Received = time.Now().Add(-2 * time.Hour)
	id := submit(t, f.q, env)
	waitFor(t, "the expiry to be logged", func() bool { return strings.Contains(f.log.String(), "lifetime expired") })
	time.Sleep(150 * time.Millisecond)
	if n := len(d.snapshot()); n != 1 {
		t.Errorf("%d delivery calls, want 1", n)
	}
	got := readEnv(t, f.spool, id).Recipients[0]
	if got.Status != envelope.Failed || !strings.Contains(got.LastError, "451") {
		t.Errorf("expired recipient %+v, want Failed with the last error", got.State)
	}
}

func TestNoExpiryWithinLifetime(t *testing.T) {
	d := &fakeDeliverer{answer: func(*envelope.Envelope, int, int) deliver.Result {
		return deliver.Result{Status: envelope.Pending, Err: tempErr}
	}}
	// MaxLifetime left zero: the default must not fail mail at once.
	f := start(t, "", d, func(o *queue.Options) { o.MaxLifetime = 0 })
	id := submit(t, f.q, localEnvelope("alice"))
	waitFor(t, "two attempts", func() bool { return len(d.snapshot()) >= 2 })
	f.q.Stop()
	got := readEnv(t, f.spool, id).Recipients[0]
	if got.Status != envelope.Pending || got.Attempts < 1 {
		t.Errorf("recipient %+v, want still pending", got.State)
	}
}

func TestStartRecoversSpool(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fresh := spoolDirect(t, sp, localEnvelope("alice", "theboss"))
	// A message half done before the crash: alice delivered, theboss due
	// a little later.
	env := localEnvelope("alice", "theboss")
	half := spoolDirect(t, sp, env)
	due := time.Now().Add(200 * time.Millisecond)
	env.Recipients[0].State = envelope.State{Status: envelope.Delivered, Attempts: 1}
	env.Recipients[1].State = envelope.State{Attempts: 1, LastError: "451 4.3.0 try later", NextAttempt: due}
	if err := sp.SaveState(env); err != nil {
		t.Fatal(err)
	}
	// An unreadable file is left alone, not fatal.
	if err := os.WriteFile(filepath.Join(dir, "queue", "000000000000000001"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}

	d := &fakeDeliverer{}
	f := start(t, dir, d, nil)
	waitFor(t, "both messages delivered", func() bool { return len(d.snapshot()) == 2 })
	calls := d.snapshot()
	byID := map[string]call{}
	for _, c := range calls {
		byID[c.id] = c
	}
	if c := byID[fresh]; !c.retry || !slices.Equal(c.rcpts, []int{0, 1}) {
		t.Errorf("recovered message delivered as %+v, want both recipients with Retry", c)
	}
	if c := byID[half]; !c.retry || !slices.Equal(c.rcpts, []int{1}) {
		t.Errorf("half-done message delivered as %+v, want recipient 1 only, with Retry", c)
	} else if c.at.Before(due) {
		t.Errorf("recipient due at %v delivered %v early", due, due.Sub(c.at))
	}
	waitFor(t, "the delivered messages to leave the spool", func() bool {
		ids, _ := f.spool.List()
		return slices.Equal(ids, []string{"000000000000000001"})
	})
	if !strings.Contains(f.log.String(), "cannot read spooled message") {
		t.Errorf("unreadable message not logged:\n%s", f.log)
	}
}

// blocking answers nothing until the context ends, like a delivery stuck on
// a slow disk or peer when the server shuts down.
type blocking struct {
	started chan struct{}
	once    sync.Once
}

func (b *blocking) Deliver(ctx context.Context, req deliver.Request) []deliver.Result {
	b.once.Do(func() { close(b.started) })
	<-ctx.Done()
	out := make([]deliver.Result, len(req.Rcpts))
	for k := range out {
		out[k] = deliver.Result{Status: envelope.Pending, Err: tempErr.Wrap(ctx.Err())}
	}
	return out
}

func TestStopIsPrompt(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A message waiting for a retry an hour away: its timer must not hold Stop.
	env := localEnvelope("alice")
	later := spoolDirect(t, sp, env)
	env.Recipients[0].State = envelope.State{Attempts: 1, NextAttempt: time.Now().Add(time.Hour)}
	if err := sp.SaveState(env); err != nil {
		t.Fatal(err)
	}
	b := &blocking{started: make(chan struct{})}
	q := queue.New(queue.Options{Spool: sp, Deliverer: b, Workers: 4, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	busy := submit(t, q, localEnvelope("theboss"))
	select {
	case <-b.started:
	case <-time.After(5 * time.Second):
		t.Fatal("delivery never started")
	}
	done := make(chan struct{})
	t0 := time.Now()
	go func() { q.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Stop did not return within 2s")
	}
	t.Logf("Stop took %v", time.Since(t0))
	// Nothing was lost: both messages wait in the spool for the next start.
	ids, _ := sp.List()
	if !slices.Contains(ids, later) || !slices.Contains(ids, busy) {
		t.Errorf("spool holds %v after Stop, want %s and %s", ids, later, busy)
	}
	q.Enqueue(busy) // after Stop: ignored, no panic
	q.Stop()        // twice: harmless
}

// TestWorkersRunConcurrently needs three deliveries in flight at once: with
// fewer workers running in parallel the barrier is never reached.
func TestWorkersRunConcurrently(t *testing.T) {
	var mu sync.Mutex
	inFlight := 0
	all := make(chan struct{})
	d := &fakeDeliverer{answer: func(*envelope.Envelope, int, int) deliver.Result {
		mu.Lock()
		inFlight++
		if inFlight == 3 {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			return deliver.Result{Status: envelope.Delivered}
		case <-time.After(3 * time.Second):
			return deliver.Result{Status: envelope.Failed, Err: permErr}
		}
	}}
	f := start(t, "", d, func(o *queue.Options) { o.Workers = 3 })
	for range 3 {
		submit(t, f.q, localEnvelope("alice"))
	}
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
}

func TestDeliverOnReceipt(t *testing.T) {
	d := &fakeDeliverer{}
	f := start(t, "", d, func(o *queue.Options) { o.DeliverOnReceipt = true })
	id := submit(t, f.q, localEnvelope("alice", "theboss"))
	// Delivered before Commit returned: nothing is left in the spool, and
	// nothing was ever put in queue/.
	calls := d.snapshot()
	if len(calls) != 1 || calls[0].id != id || !slices.Equal(calls[0].rcpts, []int{0, 1}) || calls[0].retry {
		t.Fatalf("calls %+v, want one first-time delivery of both recipients", calls)
	}
	if !strings.HasSuffix(string(calls[0].body), testBody) {
		t.Errorf("delivered body %q", calls[0].body)
	}
	for _, sub := range []string{"tmp", "queue"} {
		if ents, _ := os.ReadDir(filepath.Join(f.dir, sub)); len(ents) != 0 {
			t.Errorf("%s/ holds %d files after delivery on receipt", sub, len(ents))
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(d.snapshot()); n != 1 {
		t.Errorf("%d delivery calls, want 1", n)
	}
	if n := strings.Count(f.log.String(), "msg=delivered"); n != 2 {
		t.Errorf("%d delivered log lines, want 2", n)
	}
}

// TestDeliverOnReceiptFallsBackToQueue: one recipient fails at receipt, so
// the message is committed and the queue retries every recipient with
// Retry set (the deliverer must skip the copy it already made).
func TestDeliverOnReceiptFallsBackToQueue(t *testing.T) {
	d := &fakeDeliverer{answer: func(env *envelope.Envelope, i, nth int) deliver.Result {
		if i == 1 && nth <= 2 {
			return deliver.Result{Status: envelope.Pending, Err: tempErr}
		}
		return deliver.Result{Status: envelope.Delivered}
	}}
	f := start(t, "", d, func(o *queue.Options) { o.DeliverOnReceipt = true })
	id := submit(t, f.q, localEnvelope("alice", "theboss"))
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
	calls := d.snapshot()
	if len(calls) != 3 {
		t.Fatalf("%d delivery calls, want 3 (receipt, queue, retry): %+v", len(calls), calls)
	}
	if calls[0].retry || !slices.Equal(calls[0].rcpts, []int{0, 1}) {
		t.Errorf("delivery on receipt %+v", calls[0])
	}
	if !calls[1].retry || !slices.Equal(calls[1].rcpts, []int{0, 1}) {
		t.Errorf("first queued attempt %+v, want both recipients with Retry", calls[1])
	}
	if !calls[2].retry || !slices.Equal(calls[2].rcpts, []int{1}) || calls[2].attempts[1] != 1 {
		t.Errorf("retry %+v, want recipient 1 after one recorded attempt", calls[2])
	}
	for _, c := range calls {
		if c.id != id {
			t.Errorf("call for %s, want %s", c.id, id)
		}
	}
}

// TestDeliverOnReceiptOnlyAllLocal: a message with a remote recipient is
// committed and left to the workers; Commit does not wait for delivery.
func TestDeliverOnReceiptOnlyAllLocal(t *testing.T) {
	release := make(chan struct{})
	d := &fakeDeliverer{answer: func(*envelope.Envelope, int, int) deliver.Result {
		<-release
		return deliver.Result{Status: envelope.Delivered}
	}}
	f := start(t, "", d, func(o *queue.Options) { o.DeliverOnReceipt = true })
	env := localEnvelope("alice")
	env.Recipients = append(env.Recipients, envelope.Recipient{Addr: "far@remote.example"})
	in, err := f.q.Create(env)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(in, testBody)
	done := make(chan error)
	go func() { done <- in.Commit() }()
	id := env.ID
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		close(release)
		t.Fatal("Commit waited for the delivery of a message with a remote recipient")
	}
	if ids, _ := f.spool.List(); !slices.Equal(ids, []string{id}) {
		t.Errorf("spool holds %v right after Commit, want the committed message", ids)
	}
	close(release)
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
	if calls := d.snapshot(); len(calls) != 1 || calls[0].retry {
		t.Errorf("calls %+v, want one first-time delivery", calls)
	}
}
