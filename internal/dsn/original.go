package dsn

import (
	"bytes"
	"fmt"
	"io"
)

// original is what the third part returns of the original message.
type original struct {
	data   []byte // CRLF lines, ending with CRLF (or empty)
	full   bool   // the whole message, not only its header section
	tooBig bool   // RET=FULL was asked for but the message exceeds the cap
	cut    bool   // the header section was shortened to MaxHeaderSection
	global bool   // an SMTPUTF8 message: RFC 6533 content types
}

// readOriginal reads what the report returns of the message in r: all of
// it when full and it fits in maxFull octets, else its header section. It
// reads no more than it may need to return.
func readOriginal(r io.Reader, full bool, maxFull int64) (*original, error) {
	limit := int64(MaxHeaderSection)
	if full {
		limit = max(limit, maxFull)
	}
	raw, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("dsn: reading the original message: %w", err)
	}
	complete := int64(len(raw)) <= limit
	if full && int64(len(raw)) <= maxFull {
		return &original{data: endLine(crlf(raw)), full: true}, nil
	}
	hdr, cut := headerSection(crlf(raw), complete)
	return &original{data: hdr, tooBig: full, cut: cut}, nil
}

// headerSection returns the header section of msg (RFC 5322 2.1: the
// lines before the first empty line), with the CRLF that ends its last
// field. complete says whether msg is the whole message or a prefix; a
// section that does not end within MaxHeaderSection is cut after the last
// whole field that fits.
func headerSection(msg []byte, complete bool) (hdr []byte, cut bool) {
	if bytes.HasPrefix(msg, []byte("\r\n")) {
		return nil, false // an empty header section: the message is all body
	}
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		msg, complete = msg[:i+2], true
	}
	if complete && len(msg) <= MaxHeaderSection {
		return endLine(msg), false
	}
	// Cut before a line that starts a new field: one that does not begin
	// with white space (a continuation, RFC 5322 2.2.3).
	end := 0
	for i := 0; i+2 <= len(msg) && i+2 <= MaxHeaderSection; i++ {
		if msg[i] == '\r' && msg[i+1] == '\n' && (i+2 == len(msg) || (msg[i+2] != ' ' && msg[i+2] != '\t')) {
			end = i + 2
		}
	}
	return msg[:end], true
}

// crlf returns msg with every line ending as CRLF. The spool holds CRLF
// already (the SMTP server refuses bare CR and LF); this keeps the "only
// CRLF" promise of Build whatever Original is.
func crlf(msg []byte) []byte {
	if !bytes.ContainsAny(msg, "\r\n") {
		return msg
	}
	var out bytes.Buffer
	out.Grow(len(msg))
	for i := 0; i < len(msg); i++ {
		switch c := msg[i]; {
		case c == '\r' && i+1 < len(msg) && msg[i+1] == '\n':
			out.WriteString("\r\n")
			i++
		case c == '\r', c == '\n':
			out.WriteString("\r\n")
		default:
			out.WriteByte(c)
		}
	}
	return out.Bytes()
}

// endLine makes sure a non-empty msg ends with CRLF, so that the boundary
// delimiter that follows starts on a line of its own.
func endLine(msg []byte) []byte {
	if len(msg) == 0 || bytes.HasSuffix(msg, []byte("\r\n")) {
		return msg
	}
	return append(msg, '\r', '\n')
}
