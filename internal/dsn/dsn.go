// Package dsn owns the delivery status notifications Posthorn sends back to
// a message's envelope sender: bounces and delay notices in the format of
// RFC 3464 (message/delivery-status) inside RFC 6522 multipart/report, with
// the internationalised forms of RFC 6533 for SMTPUTF8 mail.
//
// Build is a pure function: the same Options and Request give the same
// bytes, so the output is checked against golden files. Deciding whether a
// notification is due (never for the null sender, NOTIFY=NEVER, ...),
// sending it with MAIL FROM:<> and spooling it are the queue's business.
//
// # Internationalised mail
//
// When the original message used SMTPUTF8 (Envelope.SMTPUTF8), or when an
// address the report names is not ASCII, the report uses the RFC 6533
// types throughout: message/global-delivery-status for the machine-readable
// part, in which non-ASCII addresses have the "utf-8" address type in the
// utf-8-addr-unitext form (RFC 6533 section 3), and message/global or
// message/global-headers for the returned original (RFC 6533 section 4).
// Otherwise the classic message/delivery-status, message/rfc822 and
// text/rfc822-headers are used, and everything generated is ASCII.
package dsn

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/envelope"
)

// DefaultMaxOriginal is the default Options.MaxOriginal: the largest
// original message returned whole with RET=FULL.
const DefaultMaxOriginal = 100 << 10

// MaxHeaderSection caps the returned header section of the original. A
// header section beyond it is cut after the last whole field that fits and
// the text part says so; it keeps a hostile message from making its bounce
// arbitrarily large.
const MaxHeaderSection = 64 << 10

// Default statuses when a Recipient gives none. They are the values of
// smtp.EOtherPermanent and smtp.EOtherTransient (RFC 3463 3.1), spelled out
// because this package may import only envelope and address.
const (
	defaultFailureStatus = "5.0.0"
	defaultDelayStatus   = "4.0.0"
)

// Options describe the reporting MTA; they are the same for every
// notification a server sends, apart from Now.
type Options struct {
	// ReportingMTA is our host name, used in Reporting-MTA and Message-ID.
	ReportingMTA string
	// Postmaster is the From: address of the notification, for example
	// "postmaster@mx.example.com". (The envelope sender of a notification is
	// always the null path <>; that is the caller's part.)
	Postmaster string
	// Now is the time of the report: the Date field, and part of the
	// Message-ID. It must be set; Build does not read the clock.
	Now time.Time
	// MaxOriginal caps the original message returned with RET=FULL;
	// a larger one is returned as its header section only, and the text
	// part says so. Zero or less means DefaultMaxOriginal.
	MaxOriginal int64
}

// Kind is what happened to a recipient: the Action field of RFC 3464
// 2.3.3. The zero Kind is invalid, so a caller cannot forget to set it.
type Kind int

// The kinds of notification Posthorn sends.
const (
	// Failure: delivery failed and will not be retried (Action: failed).
	Failure Kind = iota + 1
	// Delay: delivery has not yet succeeded and is still being retried
	// (Action: delayed).
	Delay
)

// String returns the RFC 3464 action-value for k.
func (k Kind) String() string {
	switch k {
	case Failure:
		return "failed"
	case Delay:
		return "delayed"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Recipient is one recipient the notification reports on.
type Recipient struct {
	// Addr is the address delivery was attempted to (Final-Recipient).
	Addr string
	// Orig is the original recipient, when known (Original-Recipient): the
	// ORCPT parameter of RFC 3461, xtext-decoded, as "addr-type;address",
	// or a bare address (the RCPT TO before alias expansion). "" omits it.
	Orig string
	// Action is Failure or Delay.
	Action Kind
	// Status is the RFC 3463 enhanced status code, e.g. "5.1.1". "" means
	// 5.0.0 for a Failure and 4.0.0 for a Delay. A Delay needs a 4.x.x
	// status and a Failure a 4.x.x (expired) or 5.x.x one.
	Status string
	// RemoteMTA is the host that gave the reply, "" when none was reached.
	RemoteMTA string
	// DiagnosticCode is what went wrong, "smtp; 550 5.1.1 User unknown". A
	// value without a "type;" prefix gets "smtp; " when it starts with a
	// reply code and "X-Posthorn; " otherwise. It is shown to the sender:
	// it must carry no internal detail such as file paths.
	DiagnosticCode string
	// LastAttempt is the time of the last delivery attempt; zero omits it.
	LastAttempt time.Time
	// WillRetryUntil is, for a Delay, when the queue gives up; zero omits it.
	WillRetryUntil time.Time
}

// Request is one notification to build.
type Request struct {
	// Env is the original message's envelope: its ID, sender (the
	// notification's recipient), arrival time and SMTPUTF8 flag.
	Env *envelope.Envelope
	// Recipients are the recipients to report, in order; at least one.
	Recipients []Recipient
	// Original is the spooled message (CRLF line endings). nil omits the
	// third part.
	Original io.Reader
	// Return is the RFC 3461 RET parameter: "FULL" returns the whole
	// message (up to Options.MaxOriginal), "HDRS" or "" its header section.
	Return string
	// EnvID is the RFC 3461 ENVID parameter, xtext-decoded; "" omits it.
	EnvID string
}

// Errors for requests Build refuses.
var (
	ErrNullSender   = errors.New("dsn: the envelope sender is the null path; a notification to <> would risk a bounce loop")
	ErrNoRecipients = errors.New("dsn: no recipients to report")
)

// Build returns the notification for req: a complete RFC 5322 message with
// CRLF line endings, whose body is a multipart/report of three parts (RFC
// 6522): a text/plain explanation for people, the delivery-status report
// for programs, and the original message or its header section.
//
// Every line Build writes itself is shorter than 78 octets where the data
// allows and never longer than 998 (RFC 5322 2.1.1); the original is
// returned as received. The result contains 8-bit octets when the original,
// a remote reply or an address does; Needs tells the caller which SMTP
// extensions sending it requires.
//
// Build fails for a null envelope sender (ErrNullSender: notifications go
// out from the null reverse-path, and none is sent about mail from it, RFC
// 5321 4.5.5 and 6.1), for an invalid request, and when reading Original
// fails. The recipients reported are req.Recipients; req.Env.Recipients is
// not consulted.
func Build(opts Options, req Request) ([]byte, error) {
	host, err := opts.check()
	if err != nil {
		return nil, err
	}
	env := req.Env
	if env == nil {
		return nil, errors.New("dsn: Request.Env is nil")
	}
	if env.Sender == "" {
		return nil, ErrNullSender
	}
	sender, err := address.Parse(env.Sender)
	if err != nil || hasControl(env.Sender) {
		return nil, fmt.Errorf("dsn: envelope sender %q: invalid address", env.Sender)
	}
	if len(req.Recipients) == 0 {
		return nil, ErrNoRecipients
	}
	full, err := returnFull(req.Return)
	if err != nil {
		return nil, err
	}

	global := env.SMTPUTF8 || !sender.IsASCII()
	rcpts := make([]Recipient, len(req.Recipients))
	for i, r := range req.Recipients {
		if rcpts[i], err = checkRecipient(r); err != nil {
			return nil, err
		}
		if !isASCII(r.Addr) || !isASCII(r.Orig) {
			global = true
		}
	}

	var orig *original
	if req.Original != nil {
		maxOrig := opts.MaxOriginal
		if maxOrig <= 0 {
			maxOrig = DefaultMaxOriginal
		}
		if orig, err = readOriginal(req.Original, full, maxOrig); err != nil {
			return nil, err
		}
		orig.global = env.SMTPUTF8
	}

	b := &builder{host: host, opts: opts, req: req, rcpts: rcpts, global: global, orig: orig}
	return b.message(), nil
}

// Needs reports what the SMTP transaction carrying msg, a notification made
// by Build, must offer: eightBit when msg holds octets above 127 (BODY=
// 8BITMIME, RFC 6152) and smtputf8 when its own header section does, that
// is when the To: field names a UTF-8 envelope sender (RFC 6531, RFC 6532).
func Needs(msg []byte) (eightBit, smtputf8 bool) {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	return !isASCII(string(msg)), !isASCII(string(msg[:end]))
}

// check validates the options and returns the reporting host in its
// ASCII form, which the "dns" MTA-name type requires (RFC 3464 2.1.2).
func (o Options) check() (string, error) {
	if o.Now.IsZero() {
		return "", errors.New("dsn: Options.Now is not set")
	}
	host, err := address.NormalizeDomain(o.ReportingMTA)
	if err != nil {
		return "", fmt.Errorf("dsn: ReportingMTA %q: %w", o.ReportingMTA, err)
	}
	if _, err := address.Parse(o.Postmaster); err != nil || hasControl(o.Postmaster) {
		return "", fmt.Errorf("dsn: Postmaster %q: invalid address", o.Postmaster)
	}
	return host, nil
}

// returnFull interprets RET (RFC 3461 4.3); its value is case-insensitive
// like every ESMTP keyword.
func returnFull(ret string) (bool, error) {
	switch strings.ToUpper(ret) {
	case "FULL":
		return true, nil
	case "HDRS", "":
		return false, nil
	}
	return false, fmt.Errorf("dsn: Return %q: want FULL or HDRS", ret)
}

// checkRecipient validates r and fills in its default status.
func checkRecipient(r Recipient) (Recipient, error) {
	if _, err := address.Parse(r.Addr); err != nil || hasControl(r.Addr) {
		return r, fmt.Errorf("dsn: recipient %q: invalid address", r.Addr)
	}
	class := byte('5')
	switch r.Action {
	case Failure:
		if r.Status == "" {
			r.Status = defaultFailureStatus
		}
	case Delay:
		class = '4'
		if r.Status == "" {
			r.Status = defaultDelayStatus
		}
	default:
		return r, fmt.Errorf("dsn: recipient %s: invalid Action %v", r.Addr, r.Action)
	}
	if !validStatus(r.Status) {
		return r, fmt.Errorf("dsn: recipient %s: status %q is not class.subject.detail", r.Addr, r.Status)
	}
	// A delay is transient by definition; a failure is permanent, or
	// transient for a message whose queue lifetime ran out (4.4.7).
	if c := r.Status[0]; c != class && !(r.Action == Failure && c == '4') {
		return r, fmt.Errorf("dsn: recipient %s: status %s does not fit action %v", r.Addr, r.Status, r.Action)
	}
	return r, nil
}

// validStatus checks the status-code syntax of RFC 3463 2:
// class "." subject "." detail, class 2, 4 or 5, the others 1 to 3 digits.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || strings.IndexByte("245", parts[0][0]) < 0 {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// builder holds what the parts of one notification share.
type builder struct {
	host   string
	opts   Options
	req    Request
	rcpts  []Recipient
	global bool      // RFC 6533 types and UTF-8 in the report
	orig   *original // nil: no third part
}

// part is one body part of the multipart/report.
type part struct {
	header []string // fields, each already folded, without the final CRLF
	body   []byte   // ends with CRLF or is empty
}

func (b *builder) message() []byte {
	parts := []part{b.textPart(), b.statusPart()}
	if b.orig != nil {
		parts = append(parts, b.originalPart())
	}
	bodies := make([][]byte, 0, 2*len(parts))
	eightBit := false
	for _, p := range parts {
		bodies = append(bodies, p.body, []byte(strings.Join(p.header, "\r\n")))
		eightBit = eightBit || !isASCII(string(p.body))
	}
	boundary := chooseBoundary(b.req.Env.ID, bodies)

	var out bytes.Buffer
	w := &out
	failed := b.count(Failure) > 0
	writeField(w, "From", "Mail Delivery System <"+b.opts.Postmaster+">")
	writeField(w, "To", "<"+b.req.Env.Sender+">")
	if failed {
		writeField(w, "Subject", "Undelivered Mail Returned to Sender")
	} else {
		writeField(w, "Subject", "Delayed Mail (still being retried)")
	}
	writeField(w, "Date", formatDate(b.opts.Now))
	writeField(w, "Message-ID", b.messageID())
	// RFC 3834 5: automatic responses carry Auto-Submitted: auto-replied,
	// so that other responders (vacation, list servers) stay quiet.
	writeField(w, "Auto-Submitted", "auto-replied")
	writeField(w, "MIME-Version", "1.0")
	writeField(w, "Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`)
	if eightBit {
		// RFC 2045 6.4: a multipart holding 8bit parts is itself 8bit.
		writeField(w, "Content-Transfer-Encoding", "8bit")
	}
	w.WriteString("\r\n")
	w.WriteString("This is a MIME-encapsulated message: a delivery status notification.\r\n")
	for _, p := range parts {
		w.WriteString("\r\n--" + boundary + "\r\n")
		for _, f := range p.header {
			w.WriteString(f + "\r\n")
		}
		w.WriteString("\r\n")
		w.Write(p.body)
	}
	w.WriteString("\r\n--" + boundary + "--\r\n")
	return out.Bytes()
}

func (b *builder) count(k Kind) int {
	n := 0
	for _, r := range b.rcpts {
		if r.Action == k {
			n++
		}
	}
	return n
}

// messageID derives a Message-ID from the queue ID, the time and the
// recipients, so that the same report is byte-for-byte the same while two
// reports on one message still get different IDs.
func (b *builder) messageID() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d", b.req.Env.ID, b.opts.Now.UnixNano())
	for _, r := range b.rcpts {
		fmt.Fprintf(h, "\x00%s\x00%v", r.Addr, r.Action)
	}
	return "<" + hex.EncodeToString(h.Sum(nil)[:12]) + ".dsn@" + b.host + ">"
}

// chooseBoundary derives the MIME boundary from the queue ID, and derives
// another while the current one occurs in the content (RFC 2046 5.1.1: the
// boundary must not appear inside the parts). Every rejected candidate
// occurs at some position of the content, and candidates have one length,
// so a position rejects at most one of them: the loop ends.
func chooseBoundary(id string, contents [][]byte) string {
	for n := 0; ; n++ {
		seed := id
		if n > 0 {
			seed += "\x00" + strconv.Itoa(n)
		}
		sum := sha256.Sum256([]byte(seed))
		// "=_" cannot occur in quoted-printable or base64 text.
		candidate := "=_posthorn_" + hex.EncodeToString(sum[:12])
		delim := []byte("--" + candidate)
		clash := false
		for _, c := range contents {
			if bytes.Contains(c, delim) {
				clash = true
				break
			}
		}
		if !clash {
			return candidate
		}
	}
}

// formatDate formats t as an RFC 5322 3.3 date-time.
func formatDate(t time.Time) string {
	return t.Format("Mon, 02 Jan 2006 15:04:05 -0700")
}
