package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/posthorn/posthorn/internal/deliver"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/queue"
)

// TestRetryIgnoresNextAttempt: an operator's retry tries the pending
// recipients now, not when their backoff says.
func TestRetryIgnoresNextAttempt(t *testing.T) {
	d := &fakeDeliverer{answer: func(env *envelope.Envelope, i, nth int) deliver.Result {
		if nth == 1 {
			return deliver.Result{Status: envelope.Pending, Err: tempErr}
		}
		return deliver.Result{Status: envelope.Delivered}
	}}
	f := start(t, "", d, func(o *queue.Options) { o.RetryIntervals = []time.Duration{time.Hour} })
	id := submit(t, f.q, localEnvelope("alice"))
	waitFor(t, "the first attempt", func() bool { return len(d.snapshot()) == 1 })
	time.Sleep(50 * time.Millisecond) // the attempt's state is saved and its timer set
	if err := f.q.Retry(id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery on retry", spoolEmpty(f.spool))
	if n := len(d.snapshot()); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	if err := f.q.Retry(id); !errors.Is(err, queue.ErrUnknownMessage) {
		t.Errorf("Retry of a delivered message: %v, want ErrUnknownMessage", err)
	}
	if _, err := f.q.RetryAll(); err != nil {
		t.Errorf("RetryAll on an empty queue: %v", err)
	}
}

// TestDeleteWaitingMessage: a deleted message is gone at once and its
// pending timer never fires a delivery.
func TestDeleteWaitingMessage(t *testing.T) {
	d := &fakeDeliverer{answer: func(env *envelope.Envelope, i, nth int) deliver.Result {
		return deliver.Result{Status: envelope.Pending, Err: tempErr}
	}}
	f := start(t, "", d, func(o *queue.Options) { o.RetryIntervals = []time.Duration{100 * time.Millisecond} })
	id := submit(t, f.q, localEnvelope("alice"))
	waitFor(t, "the first attempt", func() bool { return len(d.snapshot()) >= 1 })
	time.Sleep(20 * time.Millisecond)
	if err := f.q.Delete(id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
	n := len(d.snapshot())
	time.Sleep(300 * time.Millisecond)
	if m := len(d.snapshot()); m != n {
		t.Errorf("%d more attempts after Delete", m-n)
	}
	if err := f.q.Delete(id); !errors.Is(err, queue.ErrUnknownMessage) {
		t.Errorf("second Delete: %v, want ErrUnknownMessage", err)
	}
}

// gated blocks every delivery until release is closed.
type gated struct {
	started chan string
	release chan struct{}
}

func (g *gated) Deliver(ctx context.Context, req deliver.Request) []deliver.Result {
	g.started <- req.Env.ID
	<-g.release
	out := make([]deliver.Result, len(req.Rcpts))
	for k := range out {
		out[k] = deliver.Result{Status: envelope.Pending, Err: tempErr}
	}
	return out
}

// TestDeleteDuringDelivery: a message deleted while a worker delivers it is
// removed when that attempt ends, and not rescheduled.
func TestDeleteDuringDelivery(t *testing.T) {
	g := &gated{started: make(chan string, 4), release: make(chan struct{})}
	f := start(t, "", nil, func(o *queue.Options) {
		o.Deliverer = g
		o.RetryIntervals = []time.Duration{10 * time.Millisecond}
	})
	id := submit(t, f.q, localEnvelope("alice"))
	select {
	case <-g.started:
	case <-time.After(5 * time.Second):
		t.Fatal("delivery never started")
	}
	if err := f.q.Delete(id); err != nil {
		t.Fatal(err)
	}
	if ids, _ := f.spool.List(); len(ids) != 1 {
		t.Errorf("message removed while its delivery runs: spool %v", ids)
	}
	close(g.release)
	waitFor(t, "the spool to empty", spoolEmpty(f.spool))
	select {
	case again := <-g.started:
		t.Errorf("deleted message %s delivered again", again)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestInFlowPacesIntake: with more messages in delivery than FlowBacklog,
// a commit waits for an attempt to end (here the gated deliverer holds
// them), but never longer than FlowDelay; without a backlog it does not wait.
func TestInFlowPacesIntake(t *testing.T) {
	g := &gated{started: make(chan string, 16), release: make(chan struct{})}
	f := start(t, "", nil, func(o *queue.Options) {
		o.Deliverer = g
		o.Workers = 2
		o.FlowBacklog = 1
		o.FlowDelay = 300 * time.Millisecond
		o.RetryIntervals = []time.Duration{time.Hour}
	})
	t0 := time.Now()
	submit(t, f.q, remoteEnvelope("a@remote.example"))
	if d := time.Since(t0); d > 200*time.Millisecond {
		t.Errorf("first commit waited %v with an empty queue", d)
	}
	<-g.started
	submit(t, f.q, remoteEnvelope("b@remote.example")) // backlog 1 in flight: not over the limit yet
	<-g.started
	t0 = time.Now()
	submit(t, f.q, remoteEnvelope("c@remote.example")) // 2 in flight > 1: waits FlowDelay
	d := time.Since(t0)
	if d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("third commit waited %v, want about the 300ms FlowDelay", d)
	}
	// A delivery that ends lets a waiting commit through at once.
	done := make(chan time.Duration)
	go func() {
		t1 := time.Now()
		submit(t, f.q, remoteEnvelope("d@remote.example"))
		done <- time.Since(t1)
	}()
	time.Sleep(50 * time.Millisecond)
	close(g.release)
	if d := <-done; d > 250*time.Millisecond {
		t.Errorf("commit waited %v although deliveries ended", d)
	}
}

func remoteEnvelope(addr string) *envelope.Envelope {
	return &envelope.Envelope{Sender: "bob@example.org", Received: time.Now(), Recipients: []envelope.Recipient{{Addr: addr}}}
}
