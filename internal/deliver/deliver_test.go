package deliver

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/smtp"
)

// recorder is a Deliverer that remembers its calls and answers each
// recipient with the result its address maps to (Delivered by default).
type recorder struct {
	mu      sync.Mutex
	calls   [][]int
	retries []bool
	answer  map[string]Result
}

func (r *recorder) Deliver(ctx context.Context, req Request) []Result {
	r.mu.Lock()
	r.calls = append(r.calls, slices.Clone(req.Rcpts))
	r.retries = append(r.retries, req.Retry)
	r.mu.Unlock()
	out := make([]Result, len(req.Rcpts))
	for k, i := range req.Rcpts {
		res, ok := r.answer[req.Env.Recipients[i].Addr]
		if !ok {
			res = Result{Status: envelope.Delivered}
		}
		out[k] = res
	}
	return out
}

func mixedEnvelope() *envelope.Envelope {
	return &envelope.Envelope{
		ID: "18C2A0B3C4D5E00001",
		Recipients: []envelope.Recipient{
			{Addr: "alice@example.com", Mailbox: "example.com/alice"},
			{Addr: "far@remote.example"},
			{Addr: "theboss@example.com", Mailbox: "example.com/theboss"},
			{Addr: "other@remote.example"},
		},
	}
}

func request(env *envelope.Envelope, rcpts ...int) Request {
	body := []byte("Subject: x\r\n\r\nbody\r\n")
	return Request{Env: env, Body: io.NewSectionReader(bytes.NewReader(body), 0, int64(len(body))), Rcpts: rcpts, Retry: true}
}

func TestRouterSplitsLocalAndRemote(t *testing.T) {
	bounce := smtp.Errorf(smtp.CodeMailboxUnavailable, smtp.EBadDestMailbox, "no such user")
	later := smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "later")
	local := &recorder{answer: map[string]Result{"theboss@example.com": {Status: envelope.Pending, Err: later}}}
	remote := &recorder{answer: map[string]Result{"other@remote.example": {Status: envelope.Failed, Err: bounce}}}
	r := &Router{Local: local, Remote: remote}
	env := mixedEnvelope()
	// Out of index order on purpose: results follow the request's order.
	res := r.Deliver(context.Background(), request(env, 3, 2, 1, 0))
	want := []Result{
		{Status: envelope.Failed, Err: bounce},
		{Status: envelope.Pending, Err: later},
		{Status: envelope.Delivered},
		{Status: envelope.Delivered},
	}
	if !slices.Equal(res, want) {
		t.Errorf("results %+v, want %+v", res, want)
	}
	if len(local.calls) != 1 || !slices.Equal(local.calls[0], []int{2, 0}) {
		t.Errorf("local deliverer called with %v, want [[2 0]]", local.calls)
	}
	if len(remote.calls) != 1 || !slices.Equal(remote.calls[0], []int{3, 1}) {
		t.Errorf("remote deliverer called with %v, want [[3 1]]", remote.calls)
	}
	if !local.retries[0] || !remote.retries[0] {
		t.Error("Retry flag not passed on")
	}
}

func TestRouterSkipsIdleDeliverer(t *testing.T) {
	local, remote := &recorder{}, &recorder{}
	r := &Router{Local: local, Remote: remote}
	res := r.Deliver(context.Background(), request(mixedEnvelope(), 0, 2))
	if len(res) != 2 || res[0].Status != envelope.Delivered || res[1].Status != envelope.Delivered {
		t.Errorf("results %+v", res)
	}
	if len(remote.calls) != 0 {
		t.Errorf("remote deliverer called for local-only recipients: %v", remote.calls)
	}
	if res := r.Deliver(context.Background(), request(mixedEnvelope())); len(res) != 0 {
		t.Errorf("no recipients gave %d results", len(res))
	}
}

func TestRouterWithoutRemote(t *testing.T) {
	local := &recorder{}
	r := &Router{Local: local}
	res := r.Deliver(context.Background(), request(mixedEnvelope(), 1, 0, 3))
	if len(res) != 3 {
		t.Fatalf("%d results for 3 recipients", len(res))
	}
	for _, k := range []int{0, 2} {
		if res[k].Status != envelope.Pending || res[k].Err != ErrNoRemote {
			t.Errorf("remote recipient at %d: %+v, want Pending with ErrNoRemote", k, res[k])
		}
	}
	if res[1].Status != envelope.Delivered {
		t.Errorf("local recipient: %+v", res[1])
	}
	if !ErrNoRemote.Temporary() {
		t.Errorf("ErrNoRemote %v is not a temporary failure", ErrNoRemote)
	}
	if len(local.calls) != 1 || !slices.Equal(local.calls[0], []int{0}) {
		t.Errorf("local deliverer called with %v", local.calls)
	}
}
