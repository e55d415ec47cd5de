package smtpserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posthorn/posthorn/internal/address"
	"github.com/posthorn/posthorn/internal/envelope"
	"github.com/posthorn/posthorn/internal/policy"
	"github.com/posthorn/posthorn/internal/smtp"
)

// session is one SMTP connection: its state machine and its transaction.
type session struct {
	srv  *Server
	conn net.Conn // raw, or the TLS connection over it after STARTTLS
	// raw is the accepted connection. It never changes, so Shutdown may
	// use it (deadline, Close) from another goroutine while STARTTLS
	// replaces conn.
	raw net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	ip  string

	idle     atomic.Bool // waiting for a command outside a transaction (Shutdown may wake it)
	start    time.Time
	helo     string
	esmtp    bool
	tls      *tls.ConnectionState
	errors   int
	messages int
	quit     bool

	// The mail transaction (RFC 5321 3.3), reset by RSET, HELO/EHLO, and
	// the end of each message.
	inTx      bool
	sender    address.Addr
	smtputf8  bool
	body8bit  bool
	rcptTried bool     // a RCPT command was given, accepted or not
	rcptAddrs []string // RCPT TO addresses as given, accepted
	rcpts     []envelope.Recipient
	rcptKeys  map[string]bool
	bdat      *bdatState
	ret       string // RFC 3461 RET
	envid     string // RFC 3461 ENVID, decoded
}

// bdatState is a BDAT transfer in progress (RFC 3030).
type bdatState struct {
	env    *envelope.Envelope
	w      SpoolWriter
	size   int64
	hs     headerScan
	failed *smtp.Error // the transfer is doomed; chunks are read and dropped
}

// readerPool and writerPool keep per-connection buffers small and shared:
// an idle connection must cost little (10,000 of them in 200 MB).
var (
	readerSize = smtp.MaxCommandLine
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 1024) }}
	copyPool   = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}
)

func newSession(srv *Server, c net.Conn, ip string) *session {
	return &session{srv: srv, conn: c, raw: c, ip: ip, br: bufio.NewReaderSize(c, readerSize), start: srv.opts.Now()}
}

// command is one entry of the command table.
type command struct {
	fn func(s *session, arg string) *reply
}

// commands is the command table (RFC 5321 4.1 and the extensions we offer).
var commands = map[string]command{
	"HELO":     {(*session).cmdHelo},
	"EHLO":     {(*session).cmdEhlo},
	"MAIL":     {(*session).cmdMail},
	"RCPT":     {(*session).cmdRcpt},
	"DATA":     {(*session).cmdData},
	"BDAT":     {(*session).cmdBdat},
	"RSET":     {(*session).cmdRset},
	"NOOP":     {(*session).cmdNoop},
	"QUIT":     {(*session).cmdQuit},
	"VRFY":     {(*session).cmdVrfy},
	"EXPN":     {(*session).cmdExpn},
	"HELP":     {(*session).cmdHelp},
	"STARTTLS": {(*session).cmdStartTLS},
}

// httpVerbs are answered with an error and a closed connection: a web
// client (or a cross-protocol attack) talking to an SMTP port.
var httpVerbs = map[string]bool{"GET": true, "POST": true, "HEAD": true, "PUT": true, "DELETE": true, "OPTIONS": true, "CONNECT": true, "PATCH": true, "TRACE": true}

// reply is what a command handler answers.
type reply struct {
	code  int
	enh   string
	lines []string
	close bool // close the connection after sending
}

func rep(code int, enh, text string) *reply {
	return &reply{code: code, enh: enh, lines: []string{text}}
}

func errReply(e *smtp.Error) *reply { return rep(e.Code, e.Enhanced, e.Message) }

var (
	errLineTooLong  = smtp.Errorf(smtp.CodeSyntaxError, smtp.ESyntaxError, "Line too long")
	errBadLine      = smtp.Errorf(smtp.CodeSyntaxError, smtp.ESyntaxError, "Bad character in command line")
	errShuttingDown = smtp.Errorf(smtp.CodeServiceNotAvailable, smtp.EServiceShutdown, "Server shutting down")
	errLocal        = smtp.Errorf(smtp.CodeLocalError, smtp.ETempSystem, "Local error in processing, message not queued")
	errBadSequence  = smtp.Errorf(smtp.CodeBadSequence, smtp.EInvalidCommand, "Bad sequence of commands")
)

func (s *session) run() {
	defer s.conn.Close()
	defer s.releaseWriter()
	defer s.reset()
	defer func() {
		attrs := []any{"client_ip", s.ip, "helo", s.helo, "tls", s.tls != nil, "messages", s.messages,
			"errors", s.errors, "duration", s.srv.opts.Now().Sub(s.start).Round(time.Millisecond)}
		s.srv.log.Info("connection closed", attrs...)
	}()
	// RFC 5321 4.3.1: greeting.
	s.writeLine(smtp.CodeReady, "", s.srv.opts.Hostname+" ESMTP Posthorn")
	for !s.quit {
		line, err := s.readLine()
		if err != nil {
			var se *smtp.Error
			if errors.As(err, &se) {
				s.send(errReply(se))
				if s.countError() {
					return
				}
				continue
			}
			if s.srv.shutdown.Load() {
				s.send(errReply(errShuttingDown))
				s.flush()
			}
			return
		}
		r := s.dispatch(line)
		if r == nil {
			continue
		}
		s.send(r)
		if r.close {
			s.flush()
			return
		}
		if r.code >= 400 && r.enh != smtp.ETempTooManyRcpts && s.countError() {
			return
		}
		if s.srv.shutdown.Load() && !s.inTx {
			s.send(errReply(errShuttingDown))
			s.flush()
			return
		}
	}
	s.flush()
}

// countError counts a failed command and reports whether the client has
// made too many, in which case it was told so and must be dropped.
func (s *session) countError() bool {
	s.errors++
	if s.errors < s.srv.opts.MaxErrors {
		return false
	}
	s.send(rep(smtp.CodeServiceNotAvailable, smtp.ETempPolicy, "Too many errors, closing connection"))
	s.flush()
	return true
}

// dispatch runs one command. A panic in a handler is a bug: it is logged
// with its stack and the client gets 421, never a crashed server.
func (s *session) dispatch(line string) (r *reply) {
	defer func() {
		if v := recover(); v != nil {
			s.srv.log.Error("panic in command handler", "client_ip", s.ip, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			r = rep(smtp.CodeServiceNotAvailable, smtp.ETempSystem, "Internal error, closing connection")
			r.close = true
		}
	}()
	cmd := smtp.ParseCommand(line)
	h, ok := commands[cmd.Verb]
	if !ok {
		if httpVerbs[cmd.Verb] {
			r := rep(smtp.CodeTransactionFailed, smtp.EPolicy, "This is an SMTP server")
			r.close = true
			return r
		}
		return rep(smtp.CodeSyntaxError, smtp.ESyntaxError, "Command unrecognized")
	}
	if s.bdat != nil && cmd.Verb != "BDAT" && cmd.Verb != "RSET" && cmd.Verb != "QUIT" && cmd.Verb != "NOOP" {
		// RFC 3030 3: only BDAT (or RSET) may follow a BDAT that was not LAST.
		return errReply(errBadSequence)
	}
	return h.fn(s, cmd.Arg)
}

// readLine reads one command line, without its line ending. A line longer
// than smtp.MaxCommandLine is consumed and answered 500 5.5.2.
func (s *session) readLine() (string, error) {
	if !s.lineBuffered() {
		// RFC 2920 3.2 (7): replies to a pipelined group may be held only
		// while input remains; when what is left is no whole command, we
		// are about to wait for the client, and it may be waiting for us.
		if err := s.flush(); err != nil {
			return "", err
		}
	}
	// A session in the middle of a transaction is not idle: Shutdown lets
	// it finish (see Server.Shutdown).
	s.idle.Store(!s.inTx)
	defer s.idle.Store(false)
	if s.srv.shutdown.Load() && !s.inTx {
		return "", net.ErrClosed
	}
	s.conn.SetDeadline(time.Now().Add(s.srv.opts.CommandTimeout))
	line, err := s.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		// RFC 5321 4.5.3.1.4: too long. Skip to the end of the line, which
		// the command deadline bounds.
		for err == bufio.ErrBufferFull {
			_, err = s.br.ReadSlice('\n')
		}
		if err != nil {
			return "", err
		}
		return "", errLineTooLong
	}
	if err != nil {
		return "", err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	for _, c := range line {
		if c == '\r' || c == 0 {
			return "", errBadLine
		}
	}
	return string(line), nil
}

// lineBuffered reports whether a whole command line is already buffered.
func (s *session) lineBuffered() bool {
	n := s.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := s.br.Peek(n) // never blocks: n bytes are buffered
	return bytes.IndexByte(b, '\n') >= 0
}

func (s *session) writer() *bufio.Writer {
	if s.bw == nil {
		s.bw = writerPool.Get().(*bufio.Writer)
		s.bw.Reset(s.conn)
	}
	return s.bw
}

// flush sends pending replies and gives the write buffer back: an idle
// connection holds none.
func (s *session) flush() error {
	if s.bw == nil {
		return nil
	}
	err := s.bw.Flush()
	s.releaseWriter()
	return err
}

func (s *session) releaseWriter() {
	if s.bw != nil {
		s.bw.Reset(nil)
		writerPool.Put(s.bw)
		s.bw = nil
	}
}

// send writes a reply. Enhanced status codes (RFC 2034) go on every line of
// 2xx, 4xx and 5xx replies once the client used EHLO, except the replies to
// EHLO itself (RFC 2034 3).
func (s *session) send(r *reply) {
	enh := ""
	if s.esmtp && r.code/100 != 3 {
		enh = r.enh
	}
	for i, l := range r.lines {
		sep := byte(' ')
		if i < len(r.lines)-1 {
			sep = '-'
		}
		s.writeRaw(r.code, sep, enh, l)
	}
}

func (s *session) writeLine(code int, enh, text string) { s.writeRaw(code, ' ', enh, text) }

func (s *session) writeRaw(code int, sep byte, enh, text string) {
	w := s.writer()
	var b [4]byte
	w.Write(strconv.AppendInt(b[:0], int64(code), 10))
	w.WriteByte(sep)
	if enh != "" {
		w.WriteString(enh)
		w.WriteByte(' ')
	}
	w.WriteString(text)
	w.WriteString("\r\n")
}

// reset ends the mail transaction, discarding a partial BDAT message.
func (s *session) reset() {
	if s.bdat != nil && s.bdat.w != nil {
		s.bdat.w.Abort()
	}
	s.bdat = nil
	s.inTx = false
	s.sender = address.Addr{}
	s.smtputf8, s.body8bit = false, false
	s.ret, s.envid = "", ""
	s.rcptTried, s.rcptAddrs, s.rcpts, s.rcptKeys = false, nil, nil, nil
}

func validHelo(arg string) bool {
	if arg == "" || len(arg) > 255 {
		return false
	}
	for i := 0; i < len(arg); i++ {
		if c := arg[i]; c <= ' ' || c == 0x7f || c == '(' || c == ')' || c == ';' {
			return false
		}
	}
	return true
}

func (s *session) cmdHelo(arg string) *reply {
	if !validHelo(arg) {
		return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "Syntax: HELO hostname")
	}
	s.reset()
	s.helo, s.esmtp = arg, false
	return rep(smtp.CodeOK, smtp.ESuccess, s.srv.opts.Hostname)
}

func (s *session) cmdEhlo(arg string) *reply {
	if !validHelo(arg) {
		return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "Syntax: EHLO hostname")
	}
	s.reset()
	s.helo, s.esmtp = arg, true
	lines := []string{
		s.srv.opts.Hostname + " Hello " + arg,
		"PIPELINING",
		"SIZE " + strconv.FormatInt(s.srv.opts.MaxMessageSize, 10),
		"8BITMIME",
		"ENHANCEDSTATUSCODES",
		"SMTPUTF8",
		"CHUNKING",
		"DSN",
	}
	if s.srv.opts.TLSConfig != nil && s.tls == nil {
		lines = append(lines, "STARTTLS")
	}
	return &reply{code: smtp.CodeOK, lines: lines}
}

func (s *session) cmdMail(arg string) *reply {
	if s.helo == "" {
		return rep(smtp.CodeBadSequence, smtp.EInvalidCommand, "Send HELO/EHLO first")
	}
	if s.inTx {
		return rep(smtp.CodeBadSequence, smtp.EInvalidCommand, "Nested MAIL command")
	}
	pa, perr := smtp.ParsePathArg(arg, "FROM:", false)
	if perr != nil {
		return errReply(perr)
	}
	if len(pa.Params) > 0 && !s.esmtp {
		return rep(smtp.CodeParamsNotRecognized, smtp.EInvalidArgs, "Parameters need EHLO")
	}
	utf8, body8 := false, false
	ret, envid := "", ""
	for _, p := range pa.Params {
		switch p.Key {
		case "SIZE": // RFC 1870 6
			n, ok := smtp.ParseSize(p.Value)
			if !ok {
				return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "Bad SIZE parameter")
			}
			if s.srv.opts.MaxMessageSize > 0 && n > s.srv.opts.MaxMessageSize {
				return errReply(smtp.ErrTooBig)
			}
		case "BODY": // RFC 6152
			switch strings.ToUpper(p.Value) {
			case "7BIT":
			case "8BITMIME":
				body8 = true
			default:
				return rep(smtp.CodeParamsNotRecognized, smtp.EInvalidArgs, "Unsupported BODY type")
			}
		case "SMTPUTF8": // RFC 6531 3.4
			if p.Set {
				return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "SMTPUTF8 takes no value")
			}
			utf8 = true
		case "RET": // RFC 3461 4.3
			if ret != "" || (!strings.EqualFold(p.Value, "FULL") && !strings.EqualFold(p.Value, "HDRS")) {
				return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "Bad RET parameter")
			}
			ret = strings.ToUpper(p.Value)
		case "ENVID": // RFC 3461 4.4
			v, ok := smtp.DecodeXtext(p.Value)
			if envid != "" || !ok || v == "" || len(p.Value) > 100 {
				return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "Bad ENVID parameter")
			}
			envid = v
		default:
			return rep(smtp.CodeParamsNotRecognized, smtp.EInvalidArgs, "Unsupported parameter "+p.Key)
		}
	}
	s.inTx, s.sender, s.smtputf8, s.body8bit = true, pa.Addr, utf8, body8
	s.ret, s.envid = ret, envid
	s.rcptKeys = map[string]bool{}
	return rep(smtp.CodeOK, smtp.ESenderOK, "Ok")
}

func (s *session) cmdRcpt(arg string) *reply {
	if !s.inTx {
		return rep(smtp.CodeBadSequence, smtp.EInvalidCommand, "Need MAIL command first")
	}
	s.rcptTried = true
	if len(s.rcptAddrs) >= s.srv.opts.MaxRecipients {
		// RFC 5321 4.5.3.1.10: 452 and the client sends the rest later.
		return rep(smtp.CodeInsufficientStorage, smtp.ETempTooManyRcpts, "Too many recipients")
	}
	pa, perr := smtp.ParsePathArg(arg, "TO:", s.smtputf8)
	if perr != nil {
		pm, ok := s.postmaster(arg)
		if !ok {
			return errReply(perr)
		}
		pa = pm
	}
	if pa.Addr.IsNull() {
		return rep(smtp.CodeParamSyntax, smtp.EBadDestSyntax, "Empty recipient")
	}
	notify, orcpt := "", ""
	for _, p := range pa.Params {
		ok := true
		switch p.Key {
		case "NOTIFY": // RFC 3461 4.1
			ok = notify == ""
			if ok {
				notify, ok = smtp.ParseNotify(p.Value)
			}
		case "ORCPT": // RFC 3461 4.2
			ok = orcpt == ""
			if ok {
				orcpt, ok = smtp.ParseORCPT(p.Value)
			}
		default:
			return rep(smtp.CodeParamsNotRecognized, smtp.EInvalidArgs, "Unsupported parameter "+p.Key)
		}
		if !ok {
			return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "Bad "+p.Key+" parameter")
		}
	}
	rs, err := s.srv.opts.Policy.Resolve(pa.Addr)
	if err == policy.ErrRelayDenied && s.relayAllowed() {
		rs, err = []envelope.Recipient{{Addr: pa.Addr.String()}}, nil
	}
	if err != nil {
		s.srv.log.Info("recipient refused", "client_ip", s.ip, "rcpt", pa.Addr.String(), "reply", err.Error())
		return errReply(err)
	}
	s.rcptAddrs = append(s.rcptAddrs, pa.Addr.String())
	for _, r := range rs {
		r.Notify, r.ORcpt = notify, orcpt
		// One copy per mailbox even when aliases converge on it.
		key := "m:" + r.Mailbox
		if r.Mailbox == "" {
			key = "a:" + strings.ToLower(r.Addr)
		}
		if !s.rcptKeys[key] {
			s.rcptKeys[key] = true
			s.rcpts = append(s.rcpts, r)
		}
	}
	return rep(smtp.CodeOK, smtp.EDestOK, "Ok")
}

// relayAllowed reports whether this client may relay (relay_from).
func (s *session) relayAllowed() bool {
	ip, err := netip.ParseAddr(s.ip)
	return err == nil && s.srv.opts.Policy.RelayAllowed(ip)
}

// postmaster recognises "TO:<Postmaster>" with no domain, which RFC 5321
// 4.5.1 requires every SMTP server to accept, and names the postmaster of
// Options.PostmasterDomain instead.
func (s *session) postmaster(arg string) (smtp.PathArg, bool) {
	d := s.srv.opts.PostmasterDomain
	if d == "" || len(arg) < 3 || !strings.EqualFold(arg[:3], "TO:") {
		return smtp.PathArg{}, false
	}
	path := strings.TrimLeft(arg[3:], " ")
	if !strings.EqualFold(path, "<postmaster>") {
		return smtp.PathArg{}, false
	}
	return smtp.PathArg{Addr: address.Addr{Local: "postmaster", Domain: d}}, true
}

// checkTx checks that a message may start now (DATA or first BDAT).
func (s *session) checkTx() *smtp.Error {
	if !s.inTx {
		return smtp.Errorf(smtp.CodeBadSequence, smtp.EInvalidCommand, "Need MAIL command first")
	}
	// RFC 5321 3.3 allows 503 or 554 here. 503 says the client skipped
	// RCPT; 554 tells a pipelining client that every RCPT it sent failed.
	if !s.rcptTried {
		return smtp.Errorf(smtp.CodeBadSequence, smtp.EInvalidCommand, "Need RCPT command first")
	}
	if len(s.rcpts) == 0 {
		return smtp.Errorf(smtp.CodeTransactionFailed, smtp.EInvalidCommand, "No valid recipients")
	}
	return nil
}

// begin creates the spool entry and writes the trace header.
func (s *session) begin() (*envelope.Envelope, SpoolWriter, *smtp.Error) {
	now := s.srv.opts.Now()
	env := &envelope.Envelope{
		Sender:     s.sender.String(),
		Recipients: s.rcpts,
		Received:   now,
		ClientIP:   s.ip,
		ClientHelo: s.helo,
		TLS:        s.tls != nil,
		SMTPUTF8:   s.smtputf8,
		Body8Bit:   s.body8bit,
		Ret:        s.ret,
		EnvID:      s.envid,
	}
	w, err := s.srv.opts.Spooler.Create(env)
	if err != nil {
		s.srv.log.Error("spool: cannot create message", "client_ip", s.ip, "err", err)
		return nil, nil, errLocal
	}
	if _, err := io.WriteString(w, s.receivedHeader(env.ID, now)); err != nil {
		w.Abort()
		s.srv.log.Error("spool: cannot write message", "client_ip", s.ip, "err", err)
		return nil, nil, errLocal
	}
	return env, w, nil
}

func (s *session) cmdData(arg string) *reply {
	if arg != "" {
		return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "DATA takes no arguments")
	}
	if s.bdat != nil {
		return errReply(errBadSequence) // RFC 3030 3
	}
	if err := s.checkTx(); err != nil {
		return errReply(err)
	}
	env, w, serr := s.begin()
	if serr != nil {
		return errReply(serr)
	}
	s.send(rep(smtp.CodeStartData, "", "End data with <CR><LF>.<CR><LF>"))
	if err := s.flush(); err != nil {
		w.Abort()
		return &reply{close: true}
	}
	s.conn.SetDeadline(time.Now().Add(s.srv.opts.DataTimeout))
	dr := smtp.NewDotReader(s.br, s.srv.opts.MaxMessageSize)
	var hs headerScan
	var werr error
	bufp := copyPool.Get().(*[]byte)
	var rerr error
	for {
		var n int
		n, rerr = dr.Read(*bufp)
		if n > 0 {
			hs.scan((*bufp)[:n])
			if werr == nil {
				_, werr = w.Write((*bufp)[:n])
			}
		}
		if rerr != nil {
			break
		}
	}
	copyPool.Put(bufp)
	var se *smtp.Error
	switch {
	case errors.As(rerr, &se):
		w.Abort()
		s.srv.log.Info("message refused", "client_ip", s.ip, "reply", se.Error())
		s.reset()
		return errReply(se)
	case rerr != io.EOF:
		// The client went away or timed out in the middle of DATA: the
		// message is not ours, nothing is delivered.
		w.Abort()
		s.srv.log.Info("connection lost during DATA", "client_ip", s.ip, "err", rerr)
		s.reset()
		return &reply{close: true}
	}
	return s.finish(env, w, dr.Size(), &hs, werr)
}

// finish ends a message received completely: loop check, durable commit,
// and the reply that hands responsibility over.
func (s *session) finish(env *envelope.Envelope, w SpoolWriter, size int64, hs *headerScan, werr error) *reply {
	defer s.reset()
	if hs.received > s.srv.opts.MaxReceivedHeaders {
		w.Abort()
		s.srv.log.Info("message refused: mail loop", "client_ip", s.ip, "received_headers", hs.received)
		return rep(smtp.CodeTransactionFailed, smtp.ELoopDetected, "Too many Received headers: mail loop")
	}
	if werr != nil {
		w.Abort()
		s.srv.log.Error("spool: cannot write message", "client_ip", s.ip, "err", werr)
		return errReply(errLocal)
	}
	if err := w.Commit(); err != nil {
		s.srv.log.Error("spool: cannot commit message", "client_ip", s.ip, "err", err)
		return errReply(errLocal)
	}
	s.messages++
	rcpts := make([]string, len(env.Recipients))
	for i, r := range env.Recipients {
		rcpts[i] = r.Addr
	}
	s.srv.log.Info("accepted", "id", env.ID, "sender", env.Sender, "rcpts", rcpts, "size", size,
		"client_ip", s.ip, "tls", s.tls != nil)
	return rep(smtp.CodeOK, smtp.ESuccess, "Ok: queued as "+env.ID)
}

func (s *session) cmdBdat(arg string) *reply {
	size, last, perr := smtp.ParseBDAT(arg)
	if perr != nil {
		// The chunk that follows has a length we cannot know: its bytes
		// must not be read as commands, so the connection ends here.
		r := errReply(perr)
		r.close = true
		return r
	}
	s.conn.SetDeadline(time.Now().Add(s.srv.opts.DataTimeout))
	if int64(s.br.Buffered()) < size {
		// RFC 2920 3.2 (7): we are about to wait for more of the chunk;
		// replies held for the pipelined group go out first.
		if err := s.flush(); err != nil {
			s.reset()
			return &reply{close: true}
		}
	}
	if s.bdat == nil {
		if err := s.checkTx(); err != nil {
			if _, derr := io.CopyN(io.Discard, s.br, size); derr != nil {
				return &reply{close: true}
			}
			return errReply(err)
		}
		b := &bdatState{}
		env, w, serr := s.begin()
		if serr != nil {
			b.failed = serr
		}
		b.env, b.w = env, w
		s.bdat = b
	}
	b := s.bdat
	max := s.srv.opts.MaxMessageSize
	if b.failed == nil && max > 0 && b.size+size > max {
		b.failed = smtp.ErrTooBig
	}
	var err error
	if b.failed != nil {
		_, err = io.CopyN(io.Discard, s.br, size)
	} else {
		bufp := copyPool.Get().(*[]byte)
		lr := &io.LimitedReader{R: s.br, N: size}
		_, err = io.CopyBuffer(bdatSink{b}, lr, *bufp)
		copyPool.Put(bufp)
		var we bdatWriteError
		if errors.As(err, &we) {
			s.srv.log.Error("spool: cannot write message", "client_ip", s.ip, "err", we.err)
			b.failed = errLocal
			_, err = io.CopyN(io.Discard, s.br, lr.N)
		} else if err == nil && lr.N > 0 {
			err = io.ErrUnexpectedEOF
		} else if err == nil {
			b.size += size
		}
	}
	if err != nil {
		s.srv.log.Info("connection lost during BDAT", "client_ip", s.ip, "err", err)
		s.reset()
		return &reply{close: true}
	}
	if b.failed != nil {
		r := errReply(b.failed)
		s.reset()
		return r
	}
	if !last {
		return rep(smtp.CodeOK, smtp.ESuccess, strconv.FormatInt(size, 10)+" octets received")
	}
	return s.finish(b.env, b.w, b.size, &b.hs, nil)
}

// bdatSink writes BDAT chunk bytes to the spool, scanning headers.
type bdatSink struct{ b *bdatState }

type bdatWriteError struct{ err error }

func (e bdatWriteError) Error() string { return e.err.Error() }

func (k bdatSink) Write(p []byte) (int, error) {
	k.b.hs.scan(p)
	n, err := k.b.w.Write(p)
	if err != nil {
		return n, bdatWriteError{err}
	}
	return n, nil
}

func (s *session) cmdRset(arg string) *reply {
	s.reset()
	return rep(smtp.CodeOK, smtp.ESuccess, "Ok")
}

func (s *session) cmdNoop(arg string) *reply { return rep(smtp.CodeOK, smtp.ESuccess, "Ok") }

func (s *session) cmdQuit(arg string) *reply {
	s.quit = true
	r := rep(smtp.CodeClosing, smtp.ESuccess, "Bye")
	r.close = true
	return r
}

// cmdVrfy never says whether a user exists (RFC 5321 3.5.3 allows 252).
func (s *session) cmdVrfy(arg string) *reply {
	return rep(smtp.CodeCannotVerify, smtp.EVrfyCannotVerify, "Cannot VRFY user, but will accept message and attempt delivery")
}

func (s *session) cmdExpn(arg string) *reply {
	return rep(smtp.CodeNotImplemented, smtp.EInvalidCommand, "EXPN not available")
}

func (s *session) cmdHelp(arg string) *reply {
	return rep(smtp.CodeHelp, smtp.ESuccess, "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS")
}

func (s *session) cmdStartTLS(arg string) *reply {
	switch {
	case s.srv.opts.TLSConfig == nil:
		return rep(smtp.CodeNotImplemented, smtp.EInvalidCommand, "STARTTLS not available")
	case s.tls != nil:
		return rep(smtp.CodeBadSequence, smtp.EInvalidCommand, "TLS already active")
	case arg != "":
		return rep(smtp.CodeParamSyntax, smtp.EInvalidArgs, "STARTTLS takes no arguments")
	case s.inTx:
		return errReply(errBadSequence)
	}
	s.send(rep(smtp.CodeReady, smtp.ESuccess, "Ready to start TLS"))
	if err := s.flush(); err != nil {
		return &reply{close: true}
	}
	// RFC 3207 / CVE-2011-0411: anything the client sent after STARTTLS and
	// before the handshake was sent in clear text by someone who may not be
	// the client. It is thrown away, never executed inside the TLS session.
	if n := s.br.Buffered(); n > 0 {
		s.br.Discard(n)
		s.srv.log.Warn("discarded commands pipelined after STARTTLS", "client_ip", s.ip, "bytes", n)
	}
	tc := tls.Server(s.conn, s.srv.opts.TLSConfig)
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.opts.CommandTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		s.srv.log.Info("TLS handshake failed", "client_ip", s.ip, "err", err)
		return &reply{close: true}
	}
	st := tc.ConnectionState()
	s.tls = &st
	s.conn = tc
	s.br.Reset(tc)
	// RFC 3207 4.2: the session starts over; the client must EHLO again.
	s.reset()
	s.helo, s.esmtp = "", false
	return nil
}
