// Package deliver owns the delivery contract: a Deliverer takes one queued
// message and some of its recipients and returns a result per recipient.
// The Router sends each recipient to the deliverer for its kind (a local
// mailbox, or a remote address).
package deliver

import (
	"context"
	"io"

	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/smtp"
)

// Request is one delivery attempt of a message to some of its recipients.
type Request struct {
	Env   *envelope.Envelope
	Body  *io.SectionReader // the message, CRLF line endings, as spooled
	Rcpts []int             // indexes into Env.Recipients
	// Retry is set when an earlier attempt may have delivered some of these
	// recipients before a crash: deliverers must then not deliver twice.
	Retry bool
}

// Result is the outcome for one recipient.
type Result struct {
	Status envelope.Status // Delivered, Failed (permanent) or Pending (try again later)
	Err    *smtp.Error     // why, when not delivered
}

// Deliverer delivers a message to recipients. It returns one Result per
// entry of req.Rcpts, in the same order. It must be safe for concurrent use.
type Deliverer interface {
	Deliver(ctx context.Context, req Request) []Result
}

// Router dispatches each recipient to Local (a mailbox of ours) or Remote.
type Router struct {
	Local  Deliverer
	Remote Deliverer // nil until remote delivery is configured
}

// ErrNoRemote is the temporary failure for a remote recipient while no
// remote deliverer exists; the recipient stays queued.
var ErrNoRemote = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "Remote delivery is not available")

// Deliver implements Deliverer.
func (r *Router) Deliver(ctx context.Context, req Request) []Result {
	results := make([]Result, len(req.Rcpts))
	var local, remote []int // positions in req.Rcpts
	for pos, i := range req.Rcpts {
		if req.Env.Recipients[i].Mailbox != "" {
			local = append(local, pos)
		} else {
			remote = append(remote, pos)
		}
	}
	run := func(d Deliverer, positions []int) {
		if len(positions) == 0 {
			return
		}
		if d == nil {
			for _, pos := range positions {
				results[pos] = Result{Status: envelope.Pending, Err: ErrNoRemote}
			}
			return
		}
		sub := req
		sub.Rcpts = make([]int, len(positions))
		for k, pos := range positions {
			sub.Rcpts[k] = req.Rcpts[pos]
		}
		for k, res := range d.Deliver(ctx, sub) {
			results[positions[k]] = res
		}
	}
	run(r.Local, local)
	run(r.Remote, remote)
	return results
}
