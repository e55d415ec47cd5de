package smtpserver

import (
	"crypto/tls"
	"strings"
	"time"
)

// receivedHeader returns the Received trace field (RFC 5321 4.4) that is
// prepended to every accepted message:
//
//	Received: from HELO ([IP] or [IPv6:IP])
//		by HOSTNAME (Posthorn) with PROTOCOL (TLS info) id ID
//		for <RCPT>; DATE
//
// "for" names the recipient only when there is exactly one, so that a copy
// does not reveal the other (Bcc) recipients.
func (s *session) receivedHeader(id string, now time.Time) string {
	proto := "SMTP"
	switch {
	case s.esmtp && s.smtputf8:
		proto = "UTF8SMTP" // RFC 6531 3.7.3
	case s.esmtp:
		proto = "ESMTP"
	}
	if s.tls != nil && s.esmtp {
		proto += "S" // RFC 3848
	}
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	b.WriteString(s.helo)
	b.WriteString(" (")
	b.WriteString(addressLiteral(s.ip))
	b.WriteString(")\r\n\tby ")
	b.WriteString(s.srv.opts.Hostname)
	b.WriteString(" (Posthorn) with ")
	b.WriteString(proto)
	if s.tls != nil {
		b.WriteString(" (")
		b.WriteString(tls.VersionName(s.tls.Version))
		b.WriteString(" ")
		b.WriteString(tls.CipherSuiteName(s.tls.CipherSuite))
		b.WriteString(")")
	}
	b.WriteString(" id ")
	b.WriteString(id)
	if len(s.rcptAddrs) == 1 {
		b.WriteString("\r\n\tfor <")
		b.WriteString(s.rcptAddrs[0])
		b.WriteString(">")
	}
	b.WriteString(";\r\n\t")
	b.WriteString(now.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// addressLiteral writes a client IP as RFC 5321 4.1.3 address-literal,
// which is how TCP-info (4.4) names it: an IPv6 address needs its tag.
func addressLiteral(ip string) string {
	if strings.IndexByte(ip, ':') >= 0 {
		return "[IPv6:" + ip + "]"
	}
	return "[" + ip + "]"
}

// headerScan counts the Received fields in the header section of a message
// streamed through it, for mail loop detection (RFC 5321 6.3).
type headerScan struct {
	done     bool
	lineLen  int
	match    int // bytes of "received:" matched at the start of this line, -1: no match
	received int
}

const receivedPrefix = "received:"

func (h *headerScan) scan(p []byte) {
	for _, c := range p {
		if h.done {
			return
		}
		switch c {
		case '\r':
			continue
		case '\n':
			if h.lineLen == 0 {
				h.done = true // the empty line that ends the header section
			}
			h.lineLen, h.match = 0, 0
			continue
		}
		h.lineLen++
		if h.match < 0 {
			continue
		}
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c == receivedPrefix[h.match] {
			h.match++
			if h.match == len(receivedPrefix) {
				h.received++
				h.match = -1
			}
		} else {
			h.match = -1
		}
	}
}
