// Package envelope owns the record that flows through Posthorn with each
// message: its queue ID, the envelope sender and recipients with their
// per-recipient delivery state, and what we know of the client that sent it.
package envelope

import (
	"strings"
	"time"
)

// Envelope is one message's envelope. It is written to the spool as JSON, so
// its field names are part of the on-disk format.
type Envelope struct {
	ID         string      `json:"id"`
	Sender     string      `json:"sender"` // "" is the null reverse-path <>
	Recipients []Recipient `json:"recipients"`
	Received   time.Time   `json:"received"`
	ClientIP   string      `json:"client_ip,omitempty"`
	ClientHelo string      `json:"client_helo,omitempty"`
	TLS        bool        `json:"tls,omitempty"`
	SMTPUTF8   bool        `json:"smtputf8,omitempty"`
	Body8Bit   bool        `json:"body_8bit,omitempty"`
	// Ret and EnvID are the RFC 3461 DSN parameters of MAIL: what a bounce
	// returns ("FULL" or "HDRS"; "" means HDRS) and the sender's envelope ID.
	Ret   string `json:"ret,omitempty"`
	EnvID string `json:"envid,omitempty"`
}

// Status is a recipient's delivery state.
type Status string

// The delivery states of a recipient.
const (
	Pending   Status = ""          // not yet delivered; due at NextAttempt
	Delivered Status = "delivered" // final: in the recipient's mailbox or accepted by the next hop
	Failed    Status = "failed"    // final: permanently refused
)

// Recipient is one destination of a message, after alias expansion.
type Recipient struct {
	// Addr is the address we deliver to.
	Addr string `json:"addr"`
	// Orig is the address the client gave in RCPT TO when it differs from
	// Addr (an alias or a catch-all was expanded).
	Orig string `json:"orig,omitempty"`
	// Mailbox is "domain/localpart" for a local mailbox, "" for a remote address.
	Mailbox string `json:"mailbox,omitempty"`
	// Notify is the RFC 3461 NOTIFY parameter of RCPT ("NEVER" or a list
	// of SUCCESS, FAILURE, DELAY); "" means the default, FAILURE,DELAY.
	Notify string `json:"notify,omitempty"`
	// ORcpt is the RFC 3461 ORCPT parameter, decoded: "rfc822;address".
	ORcpt string `json:"orcpt,omitempty"`

	State
}

// State is the mutable delivery state of a recipient; the spool keeps it
// apart from the immutable envelope.
type State struct {
	Status   Status `json:"status,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
	// LastError is the reply of the last failed attempt as the wire would
	// carry it ("451 4.3.0 Mailbox unavailable"): safe to put in a bounce.
	LastError string `json:"last_error,omitempty"`
	// LastCause is the internal detail behind LastError (a path, a system
	// error): for the operator's eyes, never for the sender's.
	LastCause   string    `json:"last_cause,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Expired: the recipient failed because the queue lifetime ran out.
	Expired bool `json:"expired,omitempty"`
	// DelayNotified: the sender was told that this recipient is delayed.
	DelayNotified bool `json:"delay_notified,omitempty"`
}

// Pending returns the indexes of the recipients that are not final.
func (e *Envelope) Pending() []int {
	var idx []int
	for i := range e.Recipients {
		if e.Recipients[i].Status == Pending {
			idx = append(idx, i)
		}
	}
	return idx
}

// Done reports whether every recipient reached a final state.
func (e *Envelope) Done() bool { return len(e.Pending()) == 0 }

// Wants reports whether the sender asked for a notification of kind
// ("SUCCESS", "FAILURE" or "DELAY") about r (RFC 3461 4.1: without NOTIFY,
// failures and delays are reported).
func (r *Recipient) Wants(kind string) bool {
	if r.Notify == "" {
		return kind != "SUCCESS"
	}
	for _, k := range strings.Split(r.Notify, ",") {
		if k == kind {
			return true
		}
	}
	return false
}
