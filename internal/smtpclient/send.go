package smtpclient

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/smtp"
)

// Message is one message to send in one mail transaction.
type Message struct {
	// From is the envelope sender, "local@domain"; "" is the null
	// reverse-path "<>" of bounces.
	From string
	// To are the recipients, "local@domain" each.
	To []string
	// Size is the message size in octets, for the SIZE parameter (RFC
	// 1870); 0 if unknown.
	Size int64
	// Body8Bit: the message has 8-bit text (it came with BODY=8BITMIME).
	Body8Bit bool
	// SMTPUTF8: the message needs SMTPUTF8 (RFC 6531). Non-ASCII
	// addresses need it too, whatever this says.
	SMTPUTF8 bool
	// Body is the message text with CRLF line endings, not dot-stuffed.
	Body io.Reader
}

// RcptResult is the outcome for one recipient of a Send.
type RcptResult struct {
	Addr string // as in Message.To
	// Err is nil when the server accepted the message for this recipient
	// and it is now that server's responsibility; otherwise the refusal:
	// a server reply, or one made here (see Send). Err.Temporary says
	// whether to try again later.
	Err *smtp.Error
	// Reply is the server's last reply concerning this recipient, as one
	// line ("250 2.0.0 Ok: queued as 4F2A"), for logs and DSNs; "" when
	// nothing was sent.
	Reply string
}

// Local refusals, made without asking the server; their texts say why.
// The 5.6.3 code (conversion required but not supported, RFC 3463 3.7) is
// not in internal/smtp's table, hence the literal here.
var (
	errNeedsSMTPUTF8 = smtp.Errorf(smtp.CodeTransactionFailed, smtp.ENeedsSMTPUTF8,
		"Message needs SMTPUTF8, which the receiving server does not support")
	errTooBig = smtp.Errorf(smtp.CodeExceededStorage, smtp.EMsgTooBig,
		"Message is larger than the receiving server accepts")
	errNeeds8Bit = smtp.Errorf(smtp.CodeTransactionFailed, smtp.EConversionNeeded,
		"Message has 8-bit content, which the receiving server does not support")
	errBadSender = smtp.Errorf(smtp.CodeMailboxNotAllowed, smtp.EBadSenderSyntax, "Invalid sender address")
	errBadRcpt   = smtp.Errorf(smtp.CodeMailboxNotAllowed, smtp.EBadDestSyntax, "Invalid recipient address")
)

// Send runs one mail transaction for m and returns one result per
// recipient, in the order of m.To. A 4xx or 5xx reply to RCPT is that
// recipient's Err; the reply at the end of the data (or a refusal of DATA)
// applies to every recipient the server had accepted. With PIPELINING
// (RFC 2920) MAIL, every RCPT and DATA go out in one write.
//
// Some messages are refused here, for every recipient and without sending
// anything, with a permanent error that a DSN can quote:
//   - m needs SMTPUTF8 and the server does not offer it: 5.6.7 (RFC 6531 3.4);
//   - m.Size exceeds the server's SIZE limit: 552 5.3.4 (RFC 1870 6);
//   - m.Body8Bit and the server does not offer 8BITMIME: 5.6.3. RFC 6152 3
//     leaves the client two choices, convert the body to 7 bit or return it;
//     conversion is not implemented, and sending 8-bit data anyway would
//     break that rule;
//   - an address that does not parse: 5.1.7 for the sender, 5.1.3 for a
//     recipient (only that one).
//
// A non-nil error means the connection failed and was closed; the results
// are then nil: no recipient's fate is known (the server may even have
// taken the message if the connection failed while we waited for its final
// reply, RFC 5321 6.1 accepts the duplicate that retrying may cause). An
// error reading m.Body is such an error too: the message text cannot be
// ended early without delivering a truncated message.
func (c *Conn) Send(ctx context.Context, m Message) ([]RcptResult, error) {
	if c.err != nil {
		return nil, c.err
	}
	defer c.begin(ctx)()
	res, err := c.send(m)
	if err != nil {
		c.fail(err)
		return nil, err
	}
	return res, nil
}

// pending is a recipient that is to get a RCPT command.
type pending struct {
	i    int    // index in the results
	path string // "<addr>"
}

func (c *Conn) send(m Message) ([]RcptResult, error) {
	res := make([]RcptResult, len(m.To))
	failAll := func(e *smtp.Error, r string) {
		for i := range res {
			if res[i].Err == nil {
				res[i].Err, res[i].Reply = e, r
			}
		}
	}
	for i, to := range m.To {
		res[i].Addr = to
	}

	// Everything is checked before the first command, so that a refused
	// message costs the server nothing.
	ascii := true
	from := address.Addr{}
	if m.From != "" {
		a, err := address.Parse(m.From)
		if err != nil {
			failAll(errBadSender.Wrap(err), "")
			return res, nil
		}
		from, ascii = a, a.IsASCII()
	}
	var rcpts []pending
	for i, to := range m.To {
		a, err := address.Parse(to)
		if err != nil {
			res[i].Err = errBadRcpt.Wrap(err)
			continue
		}
		ascii = ascii && a.IsASCII()
		rcpts = append(rcpts, pending{i: i, path: "<" + a.String() + ">"})
	}
	if len(rcpts) == 0 {
		return res, nil
	}
	utf8 := m.SMTPUTF8 || !ascii
	_, hasUTF8 := c.ext["SMTPUTF8"]
	_, has8Bit := c.ext["8BITMIME"]
	sizeParam, hasSize := c.ext["SIZE"]
	switch {
	case utf8 && !hasUTF8:
		// RFC 6531 3.4: SMTPUTF8 may be used only with a server offering it.
		failAll(errNeedsSMTPUTF8, "")
		return res, nil
	case m.Body8Bit && !has8Bit:
		// RFC 6152 3: no 8-bit data to a server without 8BITMIME.
		failAll(errNeeds8Bit, "")
		return res, nil
	case hasSize && m.Size > 0:
		// RFC 1870 4: "SIZE" alone or "SIZE 0" announce no fixed limit.
		if limit, ok := smtp.ParseSize(sizeParam); ok && limit > 0 && m.Size > limit {
			failAll(errTooBig, "")
			return res, nil
		}
	}

	var mail strings.Builder
	mail.WriteString("MAIL FROM:<" + from.String() + ">")
	if hasSize && m.Size > 0 {
		mail.WriteString(" SIZE=" + strconv.FormatInt(m.Size, 10))
	}
	if m.Body8Bit {
		mail.WriteString(" BODY=8BITMIME")
	}
	if utf8 {
		mail.WriteString(" SMTPUTF8")
	}

	_, pipelining := c.ext["PIPELINING"]
	if pipelining {
		return c.sendPipelined(m, res, mail.String(), rcpts)
	}
	return c.sendLockstep(m, res, mail.String(), rcpts)
}

// sendPipelined sends MAIL, the RCPTs and DATA in one write and then reads
// their replies in order (RFC 2920 3.1: DATA ends a group, the replies
// come in the order of the commands).
func (c *Conn) sendPipelined(m Message, res []RcptResult, mail string, rcpts []pending) ([]RcptResult, error) {
	if c.dirty {
		// RSET may be anywhere in a group (RFC 2920 3.1).
		c.write(c.to.Command, "RSET")
	}
	c.write(c.to.Mail, mail)
	for _, p := range rcpts {
		c.write(c.to.Rcpt, "RCPT TO:"+p.path)
	}
	c.write(c.to.DataInit, "DATA")
	if err := c.flush("MAIL, RCPT and DATA"); err != nil {
		return nil, err
	}
	if c.dirty {
		r, err := c.read(c.to.Command, "RSET")
		if err != nil {
			return nil, err
		}
		if !r.positive() {
			return nil, c.unexpected("RSET", r)
		}
		c.dirty = false
	}
	mr, err := c.read(c.to.Mail, "MAIL")
	if err != nil {
		return nil, err
	}
	if !mr.positive() && !mr.failure() {
		return nil, c.unexpected("MAIL", mr)
	}
	accepted := 0
	for _, p := range rcpts {
		r, err := c.read(c.to.Rcpt, "RCPT")
		if err != nil {
			return nil, err
		}
		switch {
		case !mr.positive():
			// After a failed MAIL the RCPTs fail with 503; the sender's
			// refusal is what the recipients should hear about.
			res[p.i].Err, res[p.i].Reply = mr.err(), mr.String()
		default:
			ok, err := c.rcptResult(&res[p.i], r)
			if err != nil {
				return nil, err
			}
			if ok {
				accepted++
			}
		}
	}
	dr, err := c.read(c.to.DataInit, "DATA")
	if err != nil {
		return nil, err
	}
	if dr.code == smtp.CodeStartData && (accepted == 0 || !mr.positive()) {
		// RFC 2920 3.1: a server that says 354 although no recipient was
		// accepted gets an empty message, which it must then refuse.
		if err := c.endEmpty(); err != nil {
			return nil, err
		}
		return res, nil
	}
	if accepted == 0 {
		// The transaction is open when MAIL was accepted; the next one
		// starts with RSET.
		c.dirty = mr.positive()
		return res, nil
	}
	return c.data(m, res, dr)
}

// sendLockstep sends one command at a time and waits for each reply.
func (c *Conn) sendLockstep(m Message, res []RcptResult, mail string, rcpts []pending) ([]RcptResult, error) {
	if c.dirty {
		if err := c.rset(); err != nil {
			return nil, err
		}
	}
	mr, err := c.cmd(c.to.Mail, "MAIL", mail)
	if err != nil {
		return nil, err
	}
	if !mr.positive() {
		if !mr.failure() {
			return nil, c.unexpected("MAIL", mr)
		}
		for _, p := range rcpts {
			res[p.i].Err, res[p.i].Reply = mr.err(), mr.String()
		}
		return res, nil
	}
	c.dirty = true
	accepted := 0
	for _, p := range rcpts {
		r, err := c.cmd(c.to.Rcpt, "RCPT", "RCPT TO:"+p.path)
		if err != nil {
			return nil, err
		}
		ok, err := c.rcptResult(&res[p.i], r)
		if err != nil {
			return nil, err
		}
		if ok {
			accepted++
		}
	}
	if accepted == 0 {
		return res, nil
	}
	dr, err := c.cmd(c.to.DataInit, "DATA", "DATA")
	if err != nil {
		return nil, err
	}
	return c.data(m, res, dr)
}

// data handles the reply to DATA and, after a 354, sends the message and
// reads the final reply, which applies to every accepted recipient.
func (c *Conn) data(m Message, res []RcptResult, dr *reply) ([]RcptResult, error) {
	accepted := func(r *reply) {
		for i := range res {
			if res[i].Err == nil {
				if !r.positive() {
					res[i].Err = r.err()
				}
				res[i].Reply = r.String()
			}
		}
	}
	if dr.code != smtp.CodeStartData {
		if !dr.failure() {
			return nil, c.unexpected("DATA", dr)
		}
		accepted(dr)
		c.dirty = true
		return res, nil
	}
	c.dirty = true
	c.wto = c.to.DataBlock
	// RFC 5321 4.5.2 dot-stuffing and 2.3.8 (no bare CR or LF) are the
	// DotWriter's job.
	dw := smtp.NewDotWriter(c.bw)
	body := m.Body
	if body == nil {
		body = strings.NewReader("")
	}
	if _, err := io.Copy(dw, bodyReader{body}); err != nil {
		if be, ok := err.(bodyError); ok {
			return nil, fmt.Errorf("smtpclient: reading the message: %w", be.err)
		}
		return nil, fmt.Errorf("smtpclient: sending the message: %w", c.ioErr(err))
	}
	if err := dw.Close(); err != nil {
		return nil, fmt.Errorf("smtpclient: sending the message: %w", c.ioErr(err))
	}
	if err := c.flush("the message"); err != nil {
		return nil, err
	}
	fr, err := c.read(c.to.DataEnd, "end of data")
	if err != nil {
		return nil, err
	}
	if !fr.positive() && !fr.failure() {
		return nil, c.unexpected("end of data", fr)
	}
	// RFC 5321 4.1.1.4: the reply to the end of data ends the transaction,
	// whatever it says.
	c.dirty = false
	accepted(fr)
	return res, nil
}

// endEmpty ends a DATA that should not have been accepted with "." alone
// and reads the reply, which does not matter.
func (c *Conn) endEmpty() error {
	c.wto = c.to.DataBlock
	if err := smtp.NewDotWriter(c.bw).Close(); err != nil {
		return err
	}
	if err := c.flush("empty message"); err != nil {
		return err
	}
	if _, err := c.read(c.to.DataEnd, "end of data"); err != nil {
		return err
	}
	c.dirty = false
	return nil
}

// bodyReader marks the errors of the message source, so that they are
// not mistaken for network errors.
type bodyReader struct{ r io.Reader }

type bodyError struct{ err error }

func (e bodyError) Error() string { return e.err.Error() }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = bodyError{err}
	}
	return n, err
}

// rcptResult records the reply to one RCPT and reports whether the
// recipient was accepted; a reply that is neither is a protocol error.
func (c *Conn) rcptResult(res *RcptResult, r *reply) (bool, error) {
	switch {
	case r.positive():
		res.Reply = r.String()
		return true, nil
	case r.failure():
		res.Err, res.Reply = r.err(), r.String()
		return false, nil
	}
	return false, c.unexpected("RCPT", r)
}
