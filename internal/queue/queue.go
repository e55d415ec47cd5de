// Package queue owns the scheduling of queued messages: it takes committed
// messages from the receiving side, hands their due recipients to the
// deliverer, records per-recipient results in the spool, and retries
// temporary failures with backoff until the message's lifetime runs out.
// It is the only package that joins the spool and delivery.
package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/dsn"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/spool"
)

// Options configures a Queue.
type Options struct {
	Spool          *spool.Spool
	Deliverer      deliver.Deliverer
	Workers        int             // concurrent deliveries
	RetryIntervals []time.Duration // wait after the 1st, 2nd, ... failure; the last repeats
	MaxLifetime    time.Duration   // give up on recipients this long after arrival; 0: 5 days
	Logger         *slog.Logger
	Now            func() time.Time // nil: time.Now
	// DeliverOnReceipt delivers local mail before the spool commit; see Incoming.Commit.
	DeliverOnReceipt bool
	// Bounce configures delivery status notifications; with a nil
	// Bounce.Route, failed messages are held for the operator instead.
	Bounce BounceOptions
	// DelayNotice is how long a recipient may stay pending before the
	// sender is told, once; 0: never.
	DelayNotice time.Duration
	// FlowBacklog and FlowDelay pace intake (see Queue.inFlow); a zero
	// FlowBacklog turns pacing off.
	FlowBacklog int
	FlowDelay   time.Duration
}

// BounceOptions configures the bounces (RFC 3464 DSNs) the queue sends.
type BounceOptions struct {
	ReportingMTA string // our host name, in the report
	Postmaster   string // the From: of bounces
	// Route resolves the envelope sender of a failed message into the
	// bounce's recipients (a local mailbox, or the remote address).
	Route func(addr string) ([]envelope.Recipient, error)
}

// Queue schedules deliveries. Create it with New, then Start it.
type Queue struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex
	cond   *sync.Cond
	flow   *sync.Cond // signalled when a delivery attempt ends
	ready  []item     // due now, FIFO
	timers map[string]*time.Timer
	// A message is in at most one of ready, timers and inflight, so no two
	// workers ever deliver it at once. deleted marks an inflight message
	// the operator deleted: its worker removes it when done.
	inReady  map[string]bool
	inflight map[string]bool
	deleted  map[string]bool
	stopped  bool
	wg       sync.WaitGroup
	cancel   context.CancelFunc
}

type item struct {
	id string
	// retry: an earlier attempt may have delivered some recipients (the
	// message was found in the spool at start, or was tried before).
	retry bool
	// force: the operator asked for an attempt now; every pending
	// recipient is due, whatever its next attempt time.
	force bool
}

// New returns a Queue.
func New(opts Options) *Queue {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	if len(opts.RetryIntervals) == 0 {
		opts.RetryIntervals = []time.Duration{time.Minute}
	}
	if opts.MaxLifetime <= 0 {
		// Zero would fail every recipient at its first temporary error.
		// RFC 5321 4.5.4.1: the give-up time needs to be at least 4-5 days.
		opts.MaxLifetime = 5 * 24 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	q := &Queue{opts: opts, log: opts.Logger, now: opts.Now, timers: map[string]*time.Timer{},
		inReady: map[string]bool{}, inflight: map[string]bool{}, deleted: map[string]bool{}}
	q.cond = sync.NewCond(&q.mu)
	q.flow = sync.NewCond(&q.mu)
	return q
}

// Start recovers the messages in the spool and starts the workers. Every
// message found is due at once or at the next attempt its state records.
func (q *Queue) Start() error {
	ids, err := q.opts.Spool.List()
	if err != nil {
		return err
	}
	for _, id := range ids {
		m, err := q.opts.Spool.Open(id)
		if err != nil {
			q.log.Error("queue: cannot read spooled message; left in place", "id", id, "err", err)
			continue
		}
		next := nextAttempt(m.Env)
		m.Close()
		if next.IsZero() {
			q.log.Warn("queue: message held: every recipient final, bounce pending", "id", id)
			continue
		}
		q.schedule(item{id: id, retry: true}, next)
	}
	if len(ids) > 0 {
		q.log.Info("queue: recovered spool", "messages", len(ids))
	}
	ctx, cancel := context.WithCancel(context.Background())
	q.cancel = cancel
	for range q.opts.Workers {
		q.wg.Add(1)
		go q.worker(ctx)
	}
	return nil
}

// Stop stops the workers after their current delivery and the timers. What
// is not delivered stays in the spool for the next start.
func (q *Queue) Stop() {
	q.mu.Lock()
	q.stopped = true
	q.flow.Broadcast()
	for id, t := range q.timers {
		t.Stop()
		delete(q.timers, id)
	}
	q.cond.Broadcast()
	q.mu.Unlock()
	if q.cancel != nil {
		q.cancel()
	}
	q.wg.Wait()
}

// Enqueue makes a committed message due now.
func (q *Queue) Enqueue(id string) { q.push(item{id: id}) }

func (q *Queue) push(it item) {
	q.mu.Lock()
	q.pushLocked(it)
	q.mu.Unlock()
}

func (q *Queue) pushLocked(it item) {
	if q.stopped || q.inflight[it.id] {
		return
	}
	if q.inReady[it.id] {
		if it.force {
			for k := range q.ready {
				if q.ready[k].id == it.id {
					q.ready[k].force, q.ready[k].retry = true, true
				}
			}
		}
		return
	}
	if t, ok := q.timers[it.id]; ok {
		t.Stop()
		delete(q.timers, it.id)
	}
	q.inReady[it.id] = true
	q.ready = append(q.ready, it)
	q.cond.Signal()
}

func (q *Queue) schedule(it item, at time.Time) {
	d := at.Sub(q.now())
	if d <= 0 {
		q.push(it)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	if q.inReady[it.id] || q.inflight[it.id] {
		return
	}
	if t, ok := q.timers[it.id]; ok {
		t.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.timers[it.id] != t {
			return // replaced or cancelled meanwhile
		}
		delete(q.timers, it.id)
		q.pushLocked(it)
	})
	q.timers[it.id] = t
}

func (q *Queue) pop() (item, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready) == 0 && !q.stopped {
		q.cond.Wait()
	}
	if q.stopped {
		return item{}, false
	}
	it := q.ready[0]
	q.ready[0] = item{}
	q.ready = q.ready[1:]
	delete(q.inReady, it.id)
	q.inflight[it.id] = true
	return it, true
}

// done ends a worker's attempt on id and schedules the next one.
func (q *Queue) done(id string, next time.Time) {
	q.mu.Lock()
	delete(q.inflight, id)
	q.flow.Broadcast()
	del := q.deleted[id]
	delete(q.deleted, id)
	q.mu.Unlock()
	if !del && !next.IsZero() {
		q.schedule(item{id: id, retry: true}, next)
	}
	if del {
		if err := q.opts.Spool.Remove(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
			q.log.Error("queue: cannot delete message", "id", id, "err", err)
		}
	}
}

func (q *Queue) worker(ctx context.Context) {
	defer q.wg.Done()
	for {
		it, ok := q.pop()
		if !ok {
			return
		}
		q.done(it.id, q.attempt(ctx, it))
	}
}

// attempt delivers the due recipients of one message and records the
// results. It returns when the message is due again, or the zero time when
// it needs no further attempt.
func (q *Queue) attempt(ctx context.Context, it item) (next time.Time) {
	m, err := q.opts.Spool.Open(it.id)
	if errors.Is(err, spool.ErrNotFound) {
		return time.Time{} // deleted meanwhile
	}
	if err != nil {
		q.log.Error("queue: cannot open message; will retry", "id", it.id, "err", err)
		return q.now().Add(q.opts.RetryIntervals[0])
	}
	defer m.Close()
	env := m.Env
	now := q.now()
	var due []int
	for _, i := range env.Pending() {
		if it.force || !env.Recipients[i].NextAttempt.After(now) {
			due = append(due, i)
		}
	}
	retry := it.retry
	for _, i := range due {
		retry = retry || env.Recipients[i].Attempts > 0
	}
	if len(due) > 0 {
		results := q.opts.Deliverer.Deliver(ctx, deliver.Request{Env: env, Body: m.Body(), Rcpts: due, Retry: retry})
		expired := now.Sub(env.Received) >= q.opts.MaxLifetime
		for k, i := range due {
			q.record(env, i, results[k], expired, now)
		}
	}
	if env.Done() {
		if failed(env) && !q.bounce(env, m.Body(), now) {
			// No bounce could be sent (the sender is <>, or it failed):
			// the message is kept for the operator rather than dropped.
			if err := q.opts.Spool.SaveState(env); err != nil {
				q.log.Error("queue: cannot save state", "id", env.ID, "err", err)
			}
			q.log.Warn("queue: message held: recipients failed, no bounce sent", "id", env.ID)
			return time.Time{}
		}
		if err := q.opts.Spool.Remove(env.ID); err != nil {
			q.log.Error("queue: cannot remove delivered message", "id", env.ID, "err", err)
		}
		return time.Time{}
	}
	q.delayNotice(env, m.Body(), now)
	if err := q.opts.Spool.SaveState(env); err != nil {
		// Without the state, a restart retries every pending recipient:
		// delivery is idempotent, so that costs time, not correctness.
		q.log.Error("queue: cannot save state", "id", env.ID, "err", err)
	}
	return nextAttempt(env)
}

func (q *Queue) record(env *envelope.Envelope, i int, res deliver.Result, expired bool, now time.Time) {
	r := &env.Recipients[i]
	r.Attempts++
	attrs := []any{"id", env.ID, "rcpt", r.Addr, "attempts", r.Attempts, "delay", now.Sub(env.Received).Round(time.Millisecond)}
	if r.Mailbox != "" {
		attrs = append(attrs, "mailbox", r.Mailbox)
	}
	if res.Err != nil {
		r.LastError = fmt.Sprintf("%d %s %s", res.Err.Code, res.Err.Enhanced, res.Err.Message)
		r.LastCause = ""
		if res.Err.Err != nil {
			r.LastCause = res.Err.Err.Error()
		}
		attrs = append(attrs, "err", res.Err.Error())
	}
	switch {
	case res.Status == envelope.Delivered:
		r.Status = envelope.Delivered
		r.LastError, r.LastCause = "", ""
		q.log.Info("delivered", attrs...)
	case res.Status == envelope.Failed:
		r.Status = envelope.Failed
		q.log.Warn("delivery failed", attrs...)
	case expired:
		r.Status = envelope.Failed
		r.Expired = true
		q.log.Warn("delivery failed: queue lifetime expired", attrs...)
	default:
		idx := min(r.Attempts, len(q.opts.RetryIntervals)) - 1
		r.NextAttempt = now.Add(q.opts.RetryIntervals[idx])
		q.log.Info("delivery deferred", append(attrs, "next", r.NextAttempt)...)
	}
}

func failed(env *envelope.Envelope) bool {
	for _, r := range env.Recipients {
		if r.Status == envelope.Failed {
			return true
		}
	}
	return false
}

// nextAttempt is the earliest next attempt of the pending recipients, or
// the zero time when none is pending.
func nextAttempt(env *envelope.Envelope) time.Time {
	var next time.Time
	for _, i := range env.Pending() {
		t := env.Recipients[i].NextAttempt
		if t.IsZero() {
			t = time.Unix(1, 0) // due now
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next
}

// Incoming is a message being received; see Create.
type Incoming struct {
	*spool.Writer
	q   *Queue
	env *envelope.Envelope
}

// Create starts receiving a message into the spool; env.ID is set. When
// Commit returns nil the message is durable and scheduled.
func (q *Queue) Create(env *envelope.Envelope) (*Incoming, error) {
	w, err := q.opts.Spool.Create(env)
	if err != nil {
		return nil, err
	}
	return &Incoming{Writer: w, q: q, env: env}, nil
}

// Commit makes the message durable, then schedules its delivery.
//
// A message whose recipients are all local mailboxes is first delivered
// straight from the file it was received into: once every copy is durable
// in its Maildir, the message is safe and the spool entry is dropped without
// ever being fsynced. That halves the disk flushes of the common case. If
// any recipient fails, the message takes the ordinary way: committed to
// the queue and retried, with duplicates prevented by Maildir's stable
// names (Retry is set).
func (in *Incoming) Commit() error {
	tried := false
	if in.q.opts.DeliverOnReceipt && allLocal(in.env) {
		if body, err := in.Writer.Content(); err == nil {
			tried = true
			if in.q.deliverNow(in.env, body) {
				in.Writer.Abort()
				return nil
			}
		}
	}
	in.q.inFlow()
	if err := in.Writer.Commit(); err != nil {
		return err
	}
	in.q.push(item{id: in.env.ID, retry: tried})
	return nil
}

// inFlow paces intake to delivery, as Postfix's in_flow_delay does: while
// more messages are due or being delivered than FlowBacklog, a new one
// waits, at most FlowDelay, for a delivery attempt to end before it is
// committed. Clients slow down a little instead of the queue (and the
// spool's file count) growing without bound under overload.
func (q *Queue) inFlow() {
	if q.opts.FlowBacklog <= 0 {
		return
	}
	deadline := time.Now().Add(q.opts.FlowDelay)
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.ready)+len(q.inflight) > q.opts.FlowBacklog && !q.stopped {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		t := time.AfterFunc(left, func() {
			q.mu.Lock()
			q.flow.Broadcast()
			q.mu.Unlock()
		})
		q.flow.Wait()
		t.Stop()
	}
}

func allLocal(env *envelope.Envelope) bool {
	for _, r := range env.Recipients {
		if r.Mailbox == "" {
			return false
		}
	}
	return len(env.Recipients) > 0
}

// deliverNow attempts every recipient once and reports whether all were
// delivered. Results are only logged: a failure is retried by the queue.
func (q *Queue) deliverNow(env *envelope.Envelope, body *io.SectionReader) bool {
	all := make([]int, len(env.Recipients))
	for i := range all {
		all[i] = i
	}
	results := q.opts.Deliverer.Deliver(context.Background(), deliver.Request{Env: env, Body: body, Rcpts: all})
	now := q.now()
	ok := true
	for _, res := range results {
		ok = ok && res.Status == envelope.Delivered
	}
	if !ok {
		return false
	}
	for i := range env.Recipients {
		q.record(env, i, results[i], false, now)
	}
	return true
}

// ErrUnknownMessage is returned for an operator command naming a message
// that is not in the queue.
var ErrUnknownMessage = errors.New("queue: no such message")

// Retry makes a queued message due now: every pending recipient is tried at
// once, whatever its next attempt time. A message being delivered right now
// is left to that attempt.
func (q *Queue) Retry(id string) error {
	m, err := q.opts.Spool.Open(id)
	if errors.Is(err, spool.ErrNotFound) {
		return ErrUnknownMessage
	} else if err != nil {
		return err
	}
	m.Close()
	q.log.Info("queue: retry requested", "id", id)
	q.push(item{id: id, retry: true, force: true})
	return nil
}

// RetryAll makes every queued message due now.
func (q *Queue) RetryAll() (int, error) {
	ids, err := q.opts.Spool.List()
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		q.push(item{id: id, retry: true, force: true})
	}
	q.log.Info("queue: retry of every message requested", "messages", len(ids))
	return len(ids), nil
}

// unscheduleLocked takes id off the timers and the ready list (q.mu held).
func (q *Queue) unscheduleLocked(id string) {
	if t, ok := q.timers[id]; ok {
		t.Stop()
		delete(q.timers, id)
	}
	if q.inReady[id] {
		delete(q.inReady, id)
		kept := q.ready[:0]
		for _, it := range q.ready {
			if it.id != id {
				kept = append(kept, it)
			}
		}
		q.ready = kept
	}
}

// Delete removes a message from the queue without delivering it further
// and without a bounce. A message being delivered right now is removed
// when that attempt ends (what it delivered stays delivered).
func (q *Queue) Delete(id string) error {
	q.mu.Lock()
	q.unscheduleLocked(id)
	if q.inflight[id] {
		q.deleted[id] = true
		q.mu.Unlock()
		q.log.Info("queue: deleted by the operator (after the attempt in progress)", "id", id)
		return nil
	}
	q.mu.Unlock()
	if err := q.opts.Spool.Remove(id); err != nil {
		if errors.Is(err, spool.ErrNotFound) {
			return ErrUnknownMessage
		}
		return err
	}
	q.log.Info("queue: deleted by the operator", "id", id)
	return nil
}

// bounce sends the envelope sender a delivery status notification for the
// failed recipients of env and reports whether it did (or whether nobody
// asked for one). Never to the null sender: a bounce that cannot be
// delivered must not bounce again (RFC 5321 4.5.5, 6.1).
func (q *Queue) bounce(env *envelope.Envelope, original *io.SectionReader, now time.Time) bool {
	if q.opts.Bounce.Route == nil || env.Sender == "" {
		return false
	}
	var rcpts []dsn.Recipient
	for _, r := range env.Recipients {
		if r.Status != envelope.Failed || !r.Wants("FAILURE") {
			continue // RFC 3461 4.1: NOTIFY=NEVER (or without FAILURE) asks for silence
		}
		status := enhancedOf(r.LastError, "5.0.0")
		if r.Expired {
			// RFC 3463 4.4.7: delivery time expired, whatever the last try said.
			status = "4.4.7"
		}
		rcpts = append(rcpts, reportRecipient(r, dsn.Failure, status, now))
	}
	if len(rcpts) == 0 {
		q.log.Info("queue: recipients failed; the sender asked for no notification", "id", env.ID)
		return true
	}
	return q.report(env, rcpts, original, now)
}

// delayNotice tells the sender, once, about recipients still pending after
// Options.DelayNotice (RFC 3464 "delayed"), unless they asked for no
// delay notices. It returns whether the state changed.
func (q *Queue) delayNotice(env *envelope.Envelope, original *io.SectionReader, now time.Time) bool {
	if q.opts.DelayNotice <= 0 || q.opts.Bounce.Route == nil || env.Sender == "" || now.Sub(env.Received) < q.opts.DelayNotice {
		return false
	}
	var rcpts []dsn.Recipient
	var idx []int
	for _, i := range env.Pending() {
		r := &env.Recipients[i]
		if r.DelayNotified || !r.Wants("DELAY") {
			continue
		}
		d := reportRecipient(*r, dsn.Delay, enhancedOf(r.LastError, "4.0.0"), now)
		if d.Status[0] != '4' {
			d.Status = "4.0.0"
		}
		d.WillRetryUntil = env.Received.Add(q.opts.MaxLifetime)
		rcpts = append(rcpts, d)
		idx = append(idx, i)
	}
	if len(rcpts) == 0 || !q.report(env, rcpts, original, now) {
		return false
	}
	for _, i := range idx {
		env.Recipients[i].DelayNotified = true
	}
	return true
}

func reportRecipient(r envelope.Recipient, action dsn.Kind, status string, now time.Time) dsn.Recipient {
	orig := r.Orig
	if r.ORcpt != "" {
		orig = r.ORcpt
	}
	return dsn.Recipient{Addr: r.Addr, Orig: orig, Action: action, Status: status, DiagnosticCode: r.LastError, LastAttempt: now}
}

// report builds a DSN about rcpts and queues it to the sender of env.
func (q *Queue) report(env *envelope.Envelope, rcpts []dsn.Recipient, original *io.SectionReader, now time.Time) bool {
	b := q.opts.Bounce
	msg, err := dsn.Build(dsn.Options{ReportingMTA: b.ReportingMTA, Postmaster: b.Postmaster, Now: now},
		dsn.Request{Env: env, Recipients: rcpts, Original: io.NewSectionReader(original, 0, original.Size()), Return: env.Ret, EnvID: env.EnvID})
	if err != nil {
		q.log.Error("queue: cannot build a delivery report", "id", env.ID, "err", err)
		return false
	}
	to, err := b.Route(env.Sender)
	if err != nil || len(to) == 0 {
		q.log.Error("queue: no route for the delivery report", "id", env.ID, "sender", env.Sender, "err", err)
		return false
	}
	eightBit, utf8 := dsn.Needs(msg)
	benv := &envelope.Envelope{Recipients: to, Received: now, Body8Bit: eightBit, SMTPUTF8: utf8}
	in, err := q.Create(benv)
	if err == nil {
		if _, err = in.Write(msg); err == nil {
			err = in.Commit()
		} else {
			in.Abort()
		}
	}
	if err != nil {
		q.log.Error("queue: cannot queue the delivery report", "id", env.ID, "err", err)
		return false
	}
	q.log.Info("delivery report queued", "id", env.ID, "report_id", benv.ID, "to", env.Sender, "action", rcpts[0].Action.String(), "recipients", len(rcpts))
	return true
}

// enhancedOf returns the enhanced status code of a reply "ddd x.y.z text",
// or def.
func enhancedOf(reply, def string) string {
	f := strings.Fields(reply)
	if len(f) >= 2 && len(f[1]) >= 5 && (f[1][0] == '4' || f[1][0] == '5') && f[1][1] == '.' {
		return f[1]
	}
	return def
}

// Bounce gives up on a queued message now: every pending recipient fails
// ("cancelled by the postmaster") and the sender gets a bounce. A message
// being delivered at this moment is refused; try again after the attempt.
func (q *Queue) Bounce(id string) error {
	q.mu.Lock()
	if q.inflight[id] {
		q.mu.Unlock()
		return errors.New("queue: message is being delivered right now; try again")
	}
	q.unscheduleLocked(id)
	q.inflight[id] = true // no worker may take it meanwhile
	q.mu.Unlock()
	defer q.done(id, time.Time{})

	m, err := q.opts.Spool.Open(id)
	if errors.Is(err, spool.ErrNotFound) {
		return ErrUnknownMessage
	} else if err != nil {
		return err
	}
	defer m.Close()
	env := m.Env
	for _, i := range env.Pending() {
		r := &env.Recipients[i]
		r.Status = envelope.Failed
		r.LastError = "550 5.0.0 Delivery cancelled by the postmaster"
	}
	if !failed(env) {
		return errors.New("queue: no recipient left to bounce")
	}
	if !q.bounce(env, m.Body(), q.now()) {
		if err := q.opts.Spool.SaveState(env); err != nil {
			return err
		}
		return errors.New("queue: no bounce sent (null sender or no route); message kept")
	}
	q.log.Info("queue: bounced by the operator", "id", id)
	return q.opts.Spool.Remove(id)
}
