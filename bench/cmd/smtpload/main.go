// Command smtpload is Posthorn's SMTP load generator for the side-by-side
// benchmark in bench/run. It uses only the standard library so that every
// server under test faces exactly the same client.
//
// Load mode (default): -c clients each open one connection, send EHLO once,
// then MAIL/RCPT/DATA per message over that same connection (no RSET unless a
// transaction failed), checking every reply code. When all -n messages are
// done it prints one JSON line:
//
//	{"mode":"load","accepted":N,"failed":N,"seconds":S,"accepted_per_sec":R,...}
//
// With -watch DIR it then polls DIR (a Maildir new/ directory) until the
// number of files grew by the number of accepted messages and also reports
// delivered, delivered_seconds and delivered_per_sec, timed from the moment
// the first client started. -watch-sink FILE does the same with the message
// counter of Postfix's smtp-sink: FILE is the output of "smtp-sink -c", whose
// last "mesg=N" is the number of messages the sink has received (the relay
// benchmark, bench/relay).
//
// -to-users K spreads the messages over K recipients of the -to domain:
// message i goes to user(i mod K)@domain, so a relay sees many messages for
// one destination but not all for the same mailbox.
//
// Idle mode (-idle N): open N connections, read the greeting, send EHLO, read
// the reply and keep the connections open. When done it prints a JSON line
// and then a line "ready"; it holds the connections until stdin reaches EOF,
// SIGINT/SIGTERM arrives or -idle-max elapses.
//
// Probe mode (-probe): one connection, greeting, EHLO, QUIT; exit status 0 if
// all replies were positive. Used to wait for a server to come up.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	addr         string
	c            int
	n            int
	size         int
	from         string
	to           string
	ehlo         string
	timeout      time.Duration
	deadline     time.Duration
	src          []net.IP
	idle         int
	idleMax      time.Duration
	idlePar      int
	probe        bool
	watch        string
	watchTimeout time.Duration
	watchEvery   time.Duration
	watchSink    string
	toUsers      int
}

func main() {
	var cfg config
	var src string
	flag.StringVar(&cfg.addr, "addr", "127.0.0.1:25", "server address host:port")
	flag.IntVar(&cfg.c, "c", 1, "concurrent clients (one connection each)")
	flag.IntVar(&cfg.n, "n", 100, "total messages to send")
	flag.IntVar(&cfg.size, "size", 4096, "message size in bytes (headers+body, before dot-stuffing)")
	flag.StringVar(&cfg.from, "from", "load@client.example", "envelope sender")
	flag.StringVar(&cfg.to, "to", "alice@example.com", "envelope recipient")
	flag.StringVar(&cfg.ehlo, "ehlo", "client.example", "EHLO name")
	flag.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "timeout for connect and for each reply")
	flag.DurationVar(&cfg.deadline, "deadline", 10*time.Minute, "give up the whole load run after this long (unsent messages count as failed)")
	flag.StringVar(&src, "src", "", "source addresses to spread connections over: comma list and/or ranges like 127.0.0.2-127.0.0.40 (default: kernel choice)")
	flag.IntVar(&cfg.idle, "idle", 0, "idle mode: hold this many connections open after EHLO")
	flag.DurationVar(&cfg.idleMax, "idle-max", 10*time.Minute, "idle mode: release connections after this long even if stdin stays open")
	flag.IntVar(&cfg.idlePar, "idle-par", 64, "idle mode: connections being set up in parallel")
	flag.BoolVar(&cfg.probe, "probe", false, "probe mode: greeting+EHLO+QUIT once, exit 0 on success")
	flag.StringVar(&cfg.watch, "watch", "", "after the load, wait until this directory holds accepted more files than at start")
	flag.DurationVar(&cfg.watchTimeout, "watch-timeout", 5*time.Minute, "give up waiting for deliveries after this long (measured from the end of the load)")
	flag.DurationVar(&cfg.watchEvery, "watch-every", 10*time.Millisecond, "poll interval for -watch and -watch-sink")
	flag.StringVar(&cfg.watchSink, "watch-sink", "", "after the load, wait until the smtp-sink counter in this file (output of smtp-sink -c) grew by accepted")
	flag.IntVar(&cfg.toUsers, "to-users", 0, "send message i to user(i mod K)@<domain of -to> instead of -to (0: always -to)")
	flag.Parse()

	var err error
	if cfg.src, err = parseSources(src); err != nil {
		fatalf("-src: %v", err)
	}
	switch {
	case cfg.probe:
		if err := probe(&cfg); err != nil {
			fatalf("probe %s: %v", cfg.addr, err)
		}
	case cfg.idle > 0:
		os.Exit(runIdle(&cfg))
	default:
		if cfg.c < 1 || cfg.n < 0 || cfg.size < 256 || cfg.toUsers < 0 {
			fatalf("need -c >= 1, -n >= 0, -size >= 256, -to-users >= 0")
		}
		if cfg.watch != "" && cfg.watchSink != "" {
			fatalf("-watch and -watch-sink exclude each other")
		}
		if cfg.toUsers > 0 && !strings.Contains(cfg.to, "@") {
			fatalf("-to-users needs -to with a domain")
		}
		os.Exit(runLoad(&cfg))
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "smtpload: "+format+"\n", args...)
	os.Exit(2)
}

// parseSources parses "127.0.0.2-127.0.0.40,127.0.1.1" into a list of IPv4
// addresses (at most 65536).
func parseSources(s string) ([]net.IP, error) {
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(strings.TrimSpace(lo)).To4()
		if a == nil {
			return nil, fmt.Errorf("bad IPv4 address %q", lo)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b := net.ParseIP(strings.TrimSpace(hi)).To4()
		if b == nil {
			return nil, fmt.Errorf("bad IPv4 address %q", hi)
		}
		x, y := ip4u(a), ip4u(b)
		if y < x || y-x >= 65536 {
			return nil, fmt.Errorf("bad range %q", part)
		}
		for v := x; v <= y; v++ {
			out = append(out, net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4())
		}
	}
	return out, nil
}

func ip4u(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

// conn is one SMTP client connection speaking in lock-step.
type conn struct {
	nc      net.Conn
	r       *bufio.Reader
	w       *bufio.Writer
	timeout time.Duration
}

// replyError is a well-formed SMTP reply with an unexpected code. The
// connection is still usable after it.
type replyError struct {
	cmd  string
	code int
	text string
}

func (e *replyError) Error() string {
	return fmt.Sprintf("%s: unexpected reply %d %s", e.cmd, e.code, e.text)
}

func dial(cfg *config, i int) (*conn, error) {
	d := net.Dialer{Timeout: cfg.timeout}
	if len(cfg.src) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: cfg.src[i%len(cfg.src)]}
	}
	nc, err := d.Dial("tcp", cfg.addr)
	if err != nil {
		return nil, err
	}
	return &conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 8192), timeout: cfg.timeout}, nil
}

// readReply reads a possibly multi-line reply and returns its code and the
// text of its last line.
func (c *conn) readReply() (int, string, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, "", err
	}
	for lines := 0; lines < 1000; lines++ {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" {
				return 0, "", io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.TrimSpace(line[3:]), nil
		}
		if line[3] != '-' {
			return 0, "", fmt.Errorf("malformed reply line %q", line)
		}
	}
	return 0, "", errors.New("reply has too many lines")
}

// expect reads a reply and checks that its code is one of want.
func (c *conn) expect(cmd string, want ...int) error {
	code, text, err := c.readReply()
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	for _, w := range want {
		if code == w {
			return nil
		}
	}
	return &replyError{cmd: cmd, code: code, text: text}
}

// cmd writes one command line and checks the reply.
func (c *conn) cmd(line string, want ...int) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return err
	}
	name, _, _ := strings.Cut(line, ":")
	return c.expect(name, want...)
}

// hello reads the greeting and sends EHLO.
func (c *conn) hello(ehlo string) error {
	if err := c.expect("greeting", 220); err != nil {
		return err
	}
	return c.cmd("EHLO "+ehlo, 250)
}

func (c *conn) close() {
	c.nc.Close()
}

func probe(cfg *config) error {
	c, err := dial(cfg, 0)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.hello(cfg.ehlo); err != nil {
		return err
	}
	return c.cmd("QUIT", 221)
}

// message builds messages of exactly size bytes (before dot-stuffing; the
// body never needs any) that differ only in a fixed-width sequence number.
type message struct {
	head1, head2 string // around the sequence number
	body         []byte
}

func newMessage(cfg *config) *message {
	host := cfg.ehlo
	now := time.Now().Format(time.RFC1123Z)
	head1 := "Date: " + now + "\r\nFrom: <" + cfg.from + ">\r\nTo: <" + cfg.to + ">\r\nSubject: posthorn bench "
	// The sequence number appears twice (subject and Message-ID), 12 digits.
	head2 := "\r\nMessage-ID: <bench." + strconv.FormatInt(time.Now().UnixNano(), 36) + "."
	tail := "@" + host + ">\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
	headLen := len(head1) + 12 + len(head2) + 12 + len(tail)
	bodyLen := cfg.size - headLen
	if bodyLen < 2 {
		bodyLen = 2
	}
	body := make([]byte, 0, len(tail)+bodyLen)
	body = append(body, tail...)
	const lineLen = 76
	alphabet := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	k := 0
	for left := bodyLen; left > 0; {
		n := lineLen
		if left-2 < n {
			n = left - 2
		}
		for i := 0; i < n; i++ {
			body = append(body, alphabet[k%len(alphabet)])
			k++
		}
		body = append(body, '\r', '\n')
		left -= n + 2
	}
	return &message{head1: head1, head2: head2, body: body}
}

func (m *message) write(w *bufio.Writer, seq int64) {
	s := fmt.Sprintf("%012d", seq)
	w.WriteString(m.head1)
	w.WriteString(s)
	w.WriteString(m.head2)
	w.WriteString(s)
	w.Write(m.body)
	w.WriteString(".\r\n")
}

// send runs one transaction. A *replyError means the connection is still
// good; any other error means it must be dropped.
func (c *conn) send(cfg *config, m *message, seq int64) error {
	if err := c.cmd("MAIL FROM:<"+cfg.from+">", 250); err != nil {
		return err
	}
	if err := c.cmd("RCPT TO:<"+rcptFor(cfg, seq)+">", 250, 251); err != nil {
		return err
	}
	if err := c.cmd("DATA", 354); err != nil {
		return err
	}
	if err := c.nc.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return err
	}
	m.write(c.w, seq)
	if err := c.w.Flush(); err != nil {
		return err
	}
	return c.expect("end of data", 250)
}

// rcptFor is the envelope recipient of message seq (see -to-users).
func rcptFor(cfg *config, seq int64) string {
	if cfg.toUsers <= 0 {
		return cfg.to
	}
	_, domain, _ := strings.Cut(cfg.to, "@")
	return "user" + strconv.FormatInt(seq%int64(cfg.toUsers), 10) + "@" + domain
}

type loadResult struct {
	Mode             string   `json:"mode"`
	Addr             string   `json:"addr"`
	Clients          int      `json:"c"`
	N                int      `json:"n"`
	Size             int      `json:"size"`
	Accepted         int64    `json:"accepted"`
	Failed           int64    `json:"failed"`
	Seconds          float64  `json:"seconds"`
	AcceptedPerSec   float64  `json:"accepted_per_sec"`
	LatP50ms         float64  `json:"lat_p50_ms"`
	LatP99ms         float64  `json:"lat_p99_ms"`
	LatMaxms         float64  `json:"lat_max_ms"`
	Reconnects       int64    `json:"reconnects"`
	Errors           []string `json:"errors,omitempty"`
	StartUnixNano    int64    `json:"start_unix_ns"`
	Watch            string   `json:"watch,omitempty"`
	WatchSink        string   `json:"watch_sink,omitempty"`
	Delivered        int64    `json:"delivered,omitempty"`
	DeliveredSeconds float64  `json:"delivered_seconds,omitempty"`
	DeliveredPerSec  float64  `json:"delivered_per_sec,omitempty"`
	DeliveredAll     bool     `json:"delivered_all,omitempty"`
	ClientCPUSec     float64  `json:"client_cpu_sec"`
}

// cpuSeconds is this process's user+system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

type errLog struct {
	mu   sync.Mutex
	errs []string
	more int
}

func (l *errLog) add(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	} else {
		l.more++
	}
}

func countDir(dir string) (int64, error) {
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	defer f.Close()
	var n int64
	for i := 0; i < 1<<24; i++ { // bounded: at most 2^24 batches
		names, err := f.Readdirnames(4096)
		n += int64(len(names))
		if err == io.EOF || (err == nil && len(names) == 0) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// sinkCount returns the last message counter ("mesg=N") that smtp-sink -c
// wrote to file. smtp-sink rewrites its counter line in place with a
// carriage return after every session end, QUIT and end of data, so the
// file only grows and its tail holds the latest value.
func sinkCount(file string) (int64, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const tail = 512
	off := st.Size() - tail
	if off < 0 {
		off = 0
	}
	buf := make([]byte, tail)
	n, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	s := string(buf[:n])
	i := strings.LastIndex(s, "mesg=")
	if i < 0 {
		return 0, nil // nothing received yet
	}
	digits := s[i+len("mesg="):]
	j := 0
	for j < len(digits) && digits[j] >= '0' && digits[j] <= '9' {
		j++
	}
	if j == 0 || j == len(digits) {
		// A counter cut at the end of the file is still being written:
		// the one before it is complete.
		k := strings.LastIndex(s[:i], "mesg=")
		if k < 0 {
			return 0, nil
		}
		digits = s[k+len("mesg="):]
		for j = 0; j < len(digits) && digits[j] >= '0' && digits[j] <= '9'; j++ {
		}
	}
	return strconv.ParseInt(digits[:j], 10, 64)
}

func runLoad(cfg *config) int {
	msg := newMessage(cfg)
	var baseline int64
	// count is what -watch or -watch-sink polls.
	var count func() (int64, error)
	switch {
	case cfg.watch != "":
		count = func() (int64, error) { return countDir(cfg.watch) }
	case cfg.watchSink != "":
		count = func() (int64, error) { return sinkCount(cfg.watchSink) }
	}
	if count != nil {
		var err error
		if baseline, err = count(); err != nil {
			fatalf("watch: %v", err)
		}
	}

	var (
		next       atomic.Int64 // next message sequence number to claim
		accepted   atomic.Int64
		failed     atomic.Int64
		reconnects atomic.Int64
		elog       errLog
		wg         sync.WaitGroup
		lats       = make([][]time.Duration, cfg.c)
	)
	claim := func() (int64, bool) {
		s := next.Add(1) - 1
		return s, s < int64(cfg.n)
	}
	start := time.Now()
	stopAt := start.Add(cfg.deadline)
	for w := 0; w < cfg.c; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var c *conn
			defer func() {
				if c != nil {
					c.cmd("QUIT", 221)
					c.close()
				}
			}()
			dialFails := 0
			for time.Now().Before(stopAt) {
				if c == nil {
					if dialFails >= 5 {
						elog.add(fmt.Errorf("client %d: giving up after %d failed connection attempts", w, dialFails))
						return
					}
					nc, err := dial(cfg, w)
					if err == nil {
						err = nc.hello(cfg.ehlo)
						if err != nil {
							nc.close()
						}
					}
					if err != nil {
						dialFails++
						elog.add(fmt.Errorf("client %d: connect: %w", w, err))
						time.Sleep(100 * time.Millisecond)
						continue
					}
					c = nc
				}
				seq, ok := claim()
				if !ok {
					return
				}
				t0 := time.Now()
				err := c.send(cfg, msg, seq)
				if err == nil {
					accepted.Add(1)
					lats[w] = append(lats[w], time.Since(t0))
					dialFails = 0
					continue
				}
				failed.Add(1)
				elog.add(fmt.Errorf("client %d msg %d: %w", w, seq, err))
				var re *replyError
				if errors.As(err, &re) && re.cmd != "end of data" {
					// Abort the half-done transaction and go on.
					if c.cmd("RSET", 250) == nil {
						continue
					}
				} else if errors.As(err, &re) {
					continue // a rejected DATA leaves no transaction behind
				}
				c.close()
				c = nil
				reconnects.Add(1)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)

	res := loadResult{
		Mode: "load", Addr: cfg.addr, Clients: cfg.c, N: cfg.n, Size: cfg.size,
		Accepted: accepted.Load(), Seconds: elapsed.Seconds(),
		Reconnects: reconnects.Load(), StartUnixNano: start.UnixNano(),
	}
	// Messages never attempted (deadline, or all clients gave up) are failures too.
	res.Failed = int64(cfg.n) - res.Accepted
	if f := failed.Load(); f > res.Failed {
		res.Failed = f
	}
	if elapsed > 0 {
		res.AcceptedPerSec = float64(res.Accepted) / elapsed.Seconds()
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	res.LatP50ms = pct(all, 0.50)
	res.LatP99ms = pct(all, 0.99)
	if len(all) > 0 {
		res.LatMaxms = float64(all[len(all)-1]) / 1e6
	}
	res.Errors = elog.errs
	if elog.more > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("... and %d more errors", elog.more))
	}

	if count != nil {
		res.Watch = cfg.watch
		res.WatchSink = cfg.watchSink
		want := baseline + res.Accepted
		giveUp := time.Now().Add(cfg.watchTimeout)
		var got int64
		for {
			n, err := count()
			if err != nil {
				fatalf("watch: %v", err)
			}
			got = n - baseline
			if n >= want {
				res.DeliveredAll = true
				break
			}
			if time.Now().After(giveUp) {
				break
			}
			time.Sleep(cfg.watchEvery)
		}
		d := time.Since(start)
		res.Delivered = got
		res.DeliveredSeconds = d.Seconds()
		res.DeliveredPerSec = float64(got) / d.Seconds()
	}

	res.ClientCPUSec = cpuSeconds()
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Accepted == 0 && cfg.n > 0 {
		return 1
	}
	return 0
}

func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	return float64(sorted[i]) / 1e6
}

type idleResult struct {
	Mode        string   `json:"mode"`
	Addr        string   `json:"addr"`
	Target      int      `json:"target"`
	Established int      `json:"established"`
	Failed      int      `json:"failed"`
	Seconds     float64  `json:"seconds"`
	Errors      []string `json:"errors,omitempty"`
}

func runIdle(cfg *config) int {
	start := time.Now()
	conns := make([]*conn, cfg.idle)
	var (
		elog    errLog
		failed  atomic.Int64
		done    atomic.Int64
		wg      sync.WaitGroup
		nextIdx atomic.Int64
	)
	par := cfg.idlePar
	if par < 1 {
		par = 1
	}
	if par > cfg.idle {
		par = cfg.idle
	}
	for p := 0; p < par; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(nextIdx.Add(1) - 1)
				if i >= cfg.idle {
					return
				}
				c, err := dial(cfg, i)
				if err == nil {
					if err = c.hello(cfg.ehlo); err != nil {
						c.close()
					}
				}
				if err != nil {
					failed.Add(1)
					elog.add(fmt.Errorf("conn %d: %w", i, err))
					continue
				}
				// Nothing more will be read; drop the deadline so the client
				// side never times the connection out itself.
				c.nc.SetReadDeadline(time.Time{})
				conns[i] = c
				if d := done.Add(1); d%1000 == 0 {
					fmt.Fprintf(os.Stderr, "smtpload: %d connections established (%.1fs)\n", d, time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	res := idleResult{
		Mode: "idle", Addr: cfg.addr, Target: cfg.idle,
		Established: int(done.Load()), Failed: int(failed.Load()),
		Seconds: time.Since(start).Seconds(), Errors: elog.errs,
	}
	if elog.more > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("... and %d more errors", elog.more))
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	fmt.Println("ready")

	// Hold until stdin closes, a signal arrives or idle-max passes.
	stop := make(chan string, 3)
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stop <- "stdin closed"
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { stop <- "signal " + (<-sig).String() }()
	t := time.NewTimer(cfg.idleMax)
	defer t.Stop()
	go func() { <-t.C; stop <- "idle-max reached" }()
	why := <-stop

	// Count connections the server already dropped: a readable connection
	// here means EOF or an unsolicited reply (e.g. a 421 timeout).
	var alive atomic.Int64
	var cw sync.WaitGroup
	for _, c := range conns {
		if c == nil {
			continue
		}
		cw.Add(1)
		go func(c *conn) {
			defer cw.Done()
			c.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			var b [1]byte
			_, err := c.nc.Read(b[:])
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				alive.Add(1)
			}
			c.close()
		}(c)
	}
	cw.Wait()
	fmt.Fprintf(os.Stderr, "smtpload: released %d connections (%d still open at release) after %s\n", res.Established, alive.Load(), why)
	fmt.Printf("{\"mode\":\"idle-release\",\"alive_at_release\":%d,\"reason\":%q}\n", alive.Load(), why)
	if res.Established == 0 {
		return 1
	}
	return 0
}
