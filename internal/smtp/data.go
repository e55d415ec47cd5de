package smtp

import (
	"bufio"
	"bytes"
	"io"
)

// Errors a DotReader reports at the end of the data, after the whole
// message up to the real end of data has been consumed, so that the
// connection stays in step with the client.
var (
	// ErrBareLineEnding: the data had a CR or an LF that was not part of a
	// CRLF pair. Such bytes are how SMTP smuggling hides a second message
	// (e.g. "\n.\n" read as end of data by one server and not another), so
	// the whole message is refused; the bytes never end the data nor become
	// commands.
	ErrBareLineEnding = Errorf(CodeTransactionFailed, EOtherMedia, "Message refused: bare CR or LF in data (RFC 5321 2.3.8)")
	// ErrTooBig: the message exceeded the size limit (RFC 1870).
	ErrTooBig = Errorf(CodeExceededStorage, EMsgTooBig, "Message exceeds the maximum size")
)

// dot reader states
const (
	stBOL   = iota // at the beginning of a line
	stDot          // after a leading "." at the beginning of a line
	stDotCR        // after ".\r" at the beginning of a line
	stData         // in the middle of a line
	stCR           // after a "\r" in the middle of a line
	stDone         // end of data seen
)

// DotReader reads the text of a DATA command from r (RFC 5321 4.1.1.4):
// it removes dot-stuffing (4.5.2) and returns io.EOF at the line "." that
// ends the data. The end of data is recognised only as CRLF "." CRLF: a
// bare CR or LF never starts a line. Past the size limit, or after a bare
// CR or LF, it keeps consuming input up to the end of data but returns no
// more bytes, and then returns ErrTooBig or ErrBareLineEnding (which wins
// when both apply) instead of io.EOF. Line endings are returned as they
// are (CRLF).
type DotReader struct {
	r       *bufio.Reader
	state   int
	n       int64 // bytes returned so far
	max     int64
	tooBig  bool
	bare    bool
	pending [2]byte // output that did not fit in p: the LF of a CRLF pair
	npend   int
}

// NewDotReader returns a DotReader over r that refuses more than max bytes
// of message (max <= 0: no limit).
func NewDotReader(r *bufio.Reader, max int64) *DotReader {
	return &DotReader{r: r, max: max}
}

// Size is the number of message bytes read so far (after unstuffing).
func (d *DotReader) Size() int64 { return d.n }

// Read implements io.Reader.
func (d *DotReader) Read(p []byte) (int, error) {
	n := 0
	for d.npend > 0 && n < len(p) {
		p[n] = d.pending[0]
		d.pending[0] = d.pending[1]
		d.npend--
		n++
	}
	for n < len(p) && d.state != stDone {
		if d.state == stData || d.state == stBOL {
			// Most of a message is ordinary text: take what is buffered
			// in bulk instead of a byte at a time.
			if w, took := d.run(p[n:]); took {
				n += w
				continue
			}
		}
		c, err := d.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		switch d.state {
		case stBOL:
			if c == '.' {
				d.state = stDot
				continue
			}
			n = d.data(p, n, c)
		case stDot:
			if c == '\r' {
				d.state = stDotCR
				continue
			}
			// RFC 5321 4.5.2: the leading dot is removed.
			n = d.data(p, n, c)
		case stDotCR:
			if c == '\n' {
				d.state = stDone
				continue
			}
			// ".\r" followed by something else: the CR was bare.
			d.bare = true
			n = d.emit(p, n, '\r')
			d.state = stData
			n = d.data(p, n, c)
		case stData:
			n = d.data(p, n, c)
		case stCR:
			if c == '\n' {
				n = d.emit(p, n, '\r')
				n = d.emit(p, n, '\n')
				d.state = stBOL
				continue
			}
			d.bare = true
			n = d.emit(p, n, '\r')
			d.state = stData
			n = d.data(p, n, c)
		}
	}
	if d.state == stDone && n == 0 {
		switch {
		case d.bare:
			return 0, ErrBareLineEnding
		case d.tooBig:
			return 0, ErrTooBig
		}
		return 0, io.EOF
	}
	return n, nil
}

// run is the fast path of Read. It handles the bytes already buffered in
// the bufio.Reader for as long as they are ordinary: runs of bytes other
// than CR and LF in the middle of a line, CRLF pairs, and lines that do
// not start with ".", CR or LF. It stops, leaving the byte to the state
// machine, at anything else, at the end of the buffered bytes or of p,
// and where the size limit would be crossed. It copies into p (nothing,
// once the message is doomed) and reports how many bytes it put in p and
// whether it consumed any input.
func (d *DotReader) run(p []byte) (int, bool) {
	buf, _ := d.r.Peek(d.r.Buffered()) // no I/O: only what is buffered
	drop := d.bare || d.tooBig
	room := int64(len(p)) // bytes we may still put in p
	if !drop && d.max > 0 {
		room = min(room, d.max-d.n)
	}
	pos, w := 0, 0
	for pos < len(buf) {
		if d.state == stBOL {
			if c := buf[pos]; c == '.' || c == '\r' || c == '\n' {
				break
			}
			d.state = stData
		}
		if d.state != stData {
			break
		}
		seg := buf[pos:]
		if !drop && int64(len(seg)) > room-int64(w) {
			seg = seg[:room-int64(w)]
		}
		if i := bytes.IndexByte(seg, '\r'); i >= 0 {
			seg = seg[:i]
		}
		if i := bytes.IndexByte(seg, '\n'); i >= 0 {
			seg = seg[:i]
		}
		if !drop {
			copy(p[w:], seg)
			w += len(seg)
		}
		pos += len(seg)
		// A CRLF pair ends the line.
		if pos+1 < len(buf) && buf[pos] == '\r' && buf[pos+1] == '\n' && (drop || room-int64(w) >= 2) {
			if !drop {
				p[w], p[w+1] = '\r', '\n'
				w += 2
			}
			pos += 2
			d.state = stBOL
			continue
		}
		break
	}
	if pos == 0 {
		return 0, false
	}
	d.n += int64(w)
	d.r.Discard(pos)
	return w, true
}

// data handles a byte in the middle of a line.
func (d *DotReader) data(p []byte, n int, c byte) int {
	switch c {
	case '\r':
		d.state = stCR
		return n
	case '\n':
		// A bare LF: it does not end the line, so "\n.\n" and "\n.\r\n"
		// can never end the data.
		d.bare = true
	}
	d.state = stData
	return d.emit(p, n, c)
}

func (d *DotReader) emit(p []byte, n int, c byte) int {
	if d.bare || d.tooBig {
		return n // consumed and dropped: the message will be refused
	}
	if d.max > 0 && d.n >= d.max {
		d.tooBig = true
		return n
	}
	if n >= len(p) {
		// Only possible for the second byte of a CRLF pair; keep it for the next Read.
		d.pending[d.npend] = c
		d.npend++
		d.n++
		return n
	}
	p[n] = c
	d.n++
	return n + 1
}

// NewDotWriter returns a writer that dot-stuffs a message for DATA (RFC
// 5321 4.5.2) onto w. Close writes the terminating CRLF "." CRLF, adding a
// CRLF first if the message did not end with one.
//
// A bare CR or LF in the message is sent as CRLF: RFC 5321 2.3.8 forbids a
// client to send them alone, and a receiver that takes "\n.\r\n" for the
// end of data would otherwise see the rest of the message as commands
// (SMTP smuggling). Messages with CRLF line endings only go out unchanged
// apart from the stuffing.
func NewDotWriter(w io.Writer) *DotWriter { return &DotWriter{w: w, bol: true} }

// DotWriter is the sending half of DotReader.
type DotWriter struct {
	w      io.Writer
	bol    bool // at the beginning of a line
	prevCR bool // the last byte written was a CR, its LF not yet seen
	buf    []byte
}

// Write implements io.Writer.
func (d *DotWriter) Write(p []byte) (int, error) {
	d.buf = d.buf[:0]
	for _, c := range p {
		if d.prevCR {
			// The CR is already out; whatever follows, the line ends here.
			d.prevCR = false
			d.buf = append(d.buf, '\n')
			d.bol = true
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\r':
			d.buf = append(d.buf, '\r')
			d.prevCR = true
			d.bol = false
			continue
		case '\n': // bare: a CRLF's LF was taken above
			d.buf = append(d.buf, '\r', '\n')
			d.bol = true
			continue
		case '.':
			if d.bol {
				d.buf = append(d.buf, '.')
			}
		}
		d.buf = append(d.buf, c)
		d.bol = false
	}
	if _, err := d.w.Write(d.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends the data. It does not close the underlying writer.
func (d *DotWriter) Close() error {
	end := ".\r\n"
	switch {
	case d.prevCR:
		end = "\n.\r\n"
	case !d.bol:
		end = "\r\n.\r\n"
	}
	_, err := io.WriteString(d.w, end)
	return err
}
