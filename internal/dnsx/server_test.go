package dnsx

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// query is one question the test server received.
type query struct {
	Net   string // "udp" or "tcp"
	Name  string // as sent, not lower-cased
	Qtype uint16
}

// testServer is an in-process name server on 127.0.0.1 (UDP and TCP on
// the same port) answering authoritatively from a small zone. It follows
// CNAMEs inside the zone into the answer, answers NXDOMAIN for names
// without records, truncates UDP replies larger than the client's EDNS
// size, and records every question it gets.
type testServer struct {
	Addr string

	mu       sync.Mutex
	rrs      []dns.RR
	servfail map[string]bool // names answered with SERVFAIL
	noChase  map[string]bool // CNAME owners whose target is left out of the answer
	wrongQ   map[string]bool // names answered with a different question
	// rendezvous names: the A query waits for the AAAA query to arrive
	// and the other way round (bounded), so the lookup only succeeds
	// within the client's timeout if both are in flight together.
	rendezvous map[string]*rendezvous
	queries    []query
}

type rendezvous struct {
	once    [2]sync.Once
	arrived [2]chan struct{} // [0] A, [1] AAAA
}

// newTestServer starts a server for the zone given in master-file lines
// (owner names fully qualified) and stops it when the test ends.
func newTestServer(t testing.TB, zone ...string) *testServer {
	t.Helper()
	s := &testServer{
		servfail:   map[string]bool{},
		noChase:    map[string]bool{},
		wrongQ:     map[string]bool{},
		rendezvous: map[string]*rendezvous{},
	}
	for _, line := range zone {
		rr, err := dns.NewRR(line)
		if err != nil {
			t.Fatalf("zone line %q: %v", line, err)
		}
		s.rrs = append(s.rrs, rr)
	}

	// The client retries truncated replies over TCP to the same address,
	// so TCP must get the UDP port; retry if another process holds it.
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatalf("no port free for both UDP and TCP: %v", err)
	}
	s.Addr = pc.LocalAddr().String()

	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: s},
		{Listener: ln, Handler: s},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("test DNS server: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("test DNS server did not start")
		}
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return s
}

// expectRendezvous makes the A and AAAA queries for name wait for each other.
func (s *testServer) expectRendezvous(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rendezvous[name] = &rendezvous{arrived: [2]chan struct{}{make(chan struct{}), make(chan struct{})}}
}

// mark adds name to one of the behaviour sets (s.servfail, s.noChase,
// s.wrongQ) under the lock the handler reads them with.
func (s *testServer) mark(set map[string]bool, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set[name] = true
}

// received returns the questions asked so far.
func (s *testServer) received() []query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]query(nil), s.queries...)
}

// ServeDNS implements dns.Handler.
func (s *testServer) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	network := w.RemoteAddr().Network()
	name := strings.ToLower(q.Name)

	s.mu.Lock()
	s.queries = append(s.queries, query{Net: network, Name: q.Name, Qtype: q.Qtype})
	servfail, wrongQ := s.servfail[name], s.wrongQ[name]
	rv := s.rendezvous[name]
	s.mu.Unlock()

	if rv != nil && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA) {
		me, other := 0, 1
		if q.Qtype == dns.TypeAAAA {
			me, other = 1, 0
		}
		rv.once[me].Do(func() { close(rv.arrived[me]) })
		select {
		case <-rv.arrived[other]:
		case <-time.After(3 * time.Second):
		}
	}

	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	switch {
	case servfail:
		resp.Rcode = dns.RcodeServerFailure
	case wrongQ:
		resp.Question[0].Name = "other." + q.Name
	default:
		s.answer(resp, name, q.Qtype)
	}
	if network == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

// answer fills resp for name/qtype from the zone, following CNAMEs.
func (s *testServer) answer(resp *dns.Msg, name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range 10 {
		var owned []dns.RR
		for _, rr := range s.rrs {
			if strings.EqualFold(rr.Header().Name, name) {
				owned = append(owned, rr)
			}
		}
		if len(owned) == 0 {
			resp.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("test. 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300")
			resp.Ns = append(resp.Ns, soa)
			return
		}
		var cname *dns.CNAME
		found := false
		for _, rr := range owned {
			if rr.Header().Rrtype == qtype {
				resp.Answer = append(resp.Answer, dns.Copy(rr))
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found || cname == nil {
			return
		}
		resp.Answer = append(resp.Answer, dns.Copy(cname))
		if s.noChase[name] {
			return
		}
		name = strings.ToLower(cname.Target)
	}
}

// silentServer returns the address of a UDP socket on 127.0.0.1 that
// never answers (nothing reads from it), closed when the test ends.
func silentServer(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}
