package dsn

import (
	"bytes"
	"fmt"
	"strings"
)

// textPart is the explanation for people (RFC 6522 3: the first part).
func (b *builder) textPart() part {
	var t textWriter
	t.line("This is the mail delivery system at " + b.host + ".")
	t.line("")
	failed, delayed := b.count(Failure), b.count(Delay)
	if failed > 0 {
		t.wrap("", "Your message could not be delivered to "+the(failed)+
			". This is a permanent error: the mail system will not try again.")
		t.line("")
	}
	if delayed > 0 {
		t.wrap("", "Delivery of your message to "+the(delayed)+
			" has been delayed. The mail system is still trying; you do not need to"+
			" send it again. You will be told if delivery finally fails.")
		t.line("")
	}
	if b.orig != nil {
		switch {
		case b.orig.tooBig:
			t.wrap("", fmt.Sprintf("Your message was larger than %d bytes, so only its"+
				" header section is returned below, not the whole message.", b.maxOriginal()))
		case b.orig.full:
			t.wrap("", "Your message is returned below.")
		default:
			t.wrap("", "The header section of your message is returned below.")
		}
		if b.orig.cut {
			t.wrap("", fmt.Sprintf("The header section was longer than %d bytes and has"+
				" been shortened.", MaxHeaderSection))
		}
		t.line("")
	}
	for _, k := range []Kind{Failure, Delay} {
		for _, r := range b.rcpts {
			if r.Action != k {
				continue
			}
			who := "<" + r.Addr + ">"
			if o := origAddress(r.Orig); o != "" && o != r.Addr {
				who += " (sent to <" + o + ">)"
			}
			if k == Failure {
				t.wrap("", who+": delivery failed, status "+r.Status+".")
			} else {
				t.wrap("", who+": delivery delayed, status "+r.Status+".")
				if !r.WillRetryUntil.IsZero() {
					t.wrap("    ", "Still trying until "+formatDate(r.WillRetryUntil)+".")
				}
			}
			if d := b.clean(r.DiagnosticCode); d != "" {
				_, text := splitType(d)
				if r.RemoteMTA != "" {
					_, host := cutTypeOr(r.RemoteMTA)
					t.wrap("    ", "The mail server "+b.clean(host)+" said:")
				} else {
					t.wrap("    ", "The reason given was:")
				}
				t.wrap("        ", text)
			}
			t.line("")
		}
	}
	// Each paragraph ends with an empty line; the last needs none.
	body := bytes.TrimSuffix(t.buf.Bytes(), []byte("\r\n"))
	charset, cte := "us-ascii", "7bit"
	if !isASCII(string(body)) {
		charset, cte = "utf-8", "8bit"
	}
	return part{
		header: []string{
			fieldString("Content-Description", "Notification"),
			fieldString("Content-Type", "text/plain; charset="+charset),
			fieldString("Content-Transfer-Encoding", cte),
		},
		body: body,
	}
}

func (b *builder) maxOriginal() int64 {
	if b.opts.MaxOriginal > 0 {
		return b.opts.MaxOriginal
	}
	return DefaultMaxOriginal
}

// statusPart is the machine-readable report of RFC 3464 2: the
// per-message fields, then one group of per-recipient fields for each
// recipient, the groups separated by blank lines.
func (b *builder) statusPart() part {
	var w bytes.Buffer
	// RFC 3464 2.2: Reporting-MTA is required, first among the per-message
	// fields; Original-Envelope-Id must be present when an ENVID was given.
	writeField(&w, "Reporting-MTA", "dns; "+b.host)
	if b.req.EnvID != "" {
		writeField(&w, "Original-Envelope-Id", xtextSafe(b.req.EnvID))
	}
	if b.req.Env.ID != "" {
		writeField(&w, "X-Posthorn-Queue-ID", b.clean(b.req.Env.ID))
	}
	if !b.req.Env.Received.IsZero() {
		writeField(&w, "Arrival-Date", formatDate(b.req.Env.Received))
	}
	for _, r := range b.rcpts {
		w.WriteString("\r\n")
		if r.Orig != "" {
			writeField(&w, "Original-Recipient", b.typedAddress(r.Orig))
		}
		// RFC 3464 2.3: Final-Recipient, Action and Status are required.
		writeField(&w, "Final-Recipient", b.typedAddress(r.Addr))
		writeField(&w, "Action", r.Action.String())
		writeField(&w, "Status", r.Status)
		if r.RemoteMTA != "" {
			writeField(&w, "Remote-MTA", b.clean(mtaName(r.RemoteMTA)))
		}
		if d := b.clean(r.DiagnosticCode); d != "" {
			typ, text := splitType(d)
			writeField(&w, "Diagnostic-Code", typ+"; "+text)
		}
		if !r.LastAttempt.IsZero() {
			writeField(&w, "Last-Attempt-Date", formatDate(r.LastAttempt))
		}
		if r.Action == Delay && !r.WillRetryUntil.IsZero() {
			writeField(&w, "Will-Retry-Until", formatDate(r.WillRetryUntil))
		}
	}
	ctype := "message/delivery-status"
	if b.global {
		ctype = "message/global-delivery-status"
	}
	header := []string{
		fieldString("Content-Description", "Delivery report"),
		fieldString("Content-Type", ctype),
	}
	if !isASCII(w.String()) {
		header = append(header, fieldString("Content-Transfer-Encoding", "8bit"))
	}
	return part{header: header, body: w.Bytes()}
}

// originalPart returns the message or its header section (RFC 6522 3, RFC
// 6533 4 for the global types).
func (b *builder) originalPart() part {
	o := b.orig
	var ctype, desc string
	switch {
	case o.full && o.global:
		ctype, desc = "message/global", "Undelivered message"
	case o.full:
		ctype, desc = "message/rfc822", "Undelivered message"
	case o.global:
		ctype, desc = "message/global-headers", "Undelivered message headers"
	default:
		ctype, desc = "text/rfc822-headers", "Undelivered message headers"
	}
	if b.count(Failure) == 0 {
		desc = strings.Replace(desc, "Undelivered", "Delayed", 1)
	}
	header := []string{
		fieldString("Content-Description", desc),
		fieldString("Content-Type", ctype),
	}
	if !isASCII(string(o.data)) {
		// RFC 2046 5.2.1: message/rfc822 may only be 7bit, 8bit or binary;
		// the original is returned as it came, so its 8-bit octets are
		// declared rather than encoded.
		header = append(header, fieldString("Content-Transfer-Encoding", "8bit"))
	}
	return part{header: header, body: o.data}
}

// typedAddress returns address-type ";" generic-address for an address
// field (RFC 3464 2.1.1). An ASCII address is of type rfc822; a UTF-8 one
// of type utf-8 in the utf-8-addr-unitext form (RFC 6533 3), which only a
// message/global-delivery-status may carry, and Build picks that type
// whenever an address is not ASCII. A value that already names its type
// (an ORCPT) is kept.
func (b *builder) typedAddress(a string) string {
	if typ, rest, ok := cutType(a); ok {
		return typ + "; " + b.clean(strings.TrimSpace(rest))
	}
	a = b.clean(a)
	if isASCII(a) {
		return "rfc822; " + a
	}
	return "utf-8; " + unitext(a)
}

// cutTypeOr returns the type and the value of a typed value such as
// "dns; host", or "" and the whole value when it names no type.
func cutTypeOr(s string) (typ, rest string) {
	if typ, rest, ok := cutType(s); ok {
		return typ, strings.TrimSpace(rest)
	}
	return "", s
}

// origAddress returns the address of an Original-Recipient value, for the
// text part.
func origAddress(o string) string {
	_, a := cutTypeOr(o)
	return a
}

// mtaName returns a Remote-MTA value: "dns; host" unless typed already.
func mtaName(m string) string {
	if typ, rest, ok := cutType(m); ok {
		return typ + "; " + strings.TrimSpace(rest)
	}
	return "dns; " + m
}

// splitType splits a diagnostic into its type and text, supplying the
// type when there is none: "smtp" for an SMTP reply (RFC 3464 2.3.6), an
// X- type for the queue's own reasons (a refused connection, a timeout).
func splitType(d string) (typ, text string) {
	if t, rest, ok := cutType(d); ok {
		return t, strings.TrimSpace(rest)
	}
	if len(d) >= 3 && strings.Trim(d[:3], "0123456789") == "" {
		return "smtp", d
	}
	return "X-Posthorn", d
}

// cutType splits "type;rest" when the text before the first ";" is an
// atom of letters, digits and hyphens: the address-type, diagnostic-type
// and mta-name-type of RFC 3464 2.1.1. An address cannot be mistaken for
// it: a ";" in a local part must be inside quotes.
func cutType(s string) (typ, rest string, ok bool) {
	i := strings.IndexByte(s, ';')
	if i <= 0 {
		return "", s, false
	}
	typ = strings.TrimSpace(s[:i])
	if typ == "" || strings.Trim(strings.ToLower(typ), "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return "", s, false
	}
	return typ, s[i+1:], true
}

// clean makes text from outside (a remote reply, an ENVID) safe to put in
// a field or a line: controls and line breaks become spaces, invalid UTF-8
// becomes "?", and so does any non-ASCII character when the report must
// stay ASCII.
func (b *builder) clean(s string) string {
	var out strings.Builder
	for _, c := range s {
		switch {
		case c == '\uFFFD':
			out.WriteByte('?')
		case c < 0x20 || c == 0x7F:
			out.WriteByte(' ')
		case c >= 0x80 && !b.global:
			out.WriteByte('?')
		default:
			out.WriteRune(c)
		}
	}
	return strings.TrimSpace(out.String())
}

// xtextSafe returns an ENVID fit for Original-Envelope-Id: RFC 3461 4.4
// allows printable ASCII only, so anything else becomes "?".
func xtextSafe(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > 0x20 && c < 0x7F {
			out.WriteByte(c)
		} else {
			out.WriteByte('?')
		}
	}
	return out.String()
}

// unitext encodes a UTF-8 address as utf-8-addr-unitext (RFC 6533 3):
// QCHAR excludes controls, space, "\", "+" and "=", which are written as
// \x{HEX} with upper-case hex digits; other characters stay as they are.
func unitext(a string) string {
	var out strings.Builder
	for _, c := range a {
		if c <= 0x20 || c == 0x7F || c == '\\' || c == '+' || c == '=' {
			fmt.Fprintf(&out, `\x{%02X}`, c)
		} else {
			out.WriteRune(c)
		}
	}
	return out.String()
}

// the names n recipients of the list that follows in the text part.
func the(n int) string {
	if n == 1 {
		return "the recipient below"
	}
	return fmt.Sprintf("the %d recipients below", n)
}
