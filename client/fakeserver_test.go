package client

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/shard"
)

// fakeServer speaks enough of the pipe protocol over real TCP on 127.0.0.1
// to exercise the client's framing, pooling, pipelining and error paths.
// Requests on one connection are answered in order, one write per reply,
// so a client that does not read while it writes a long pipeline stalls.
//
// Test-only commands: SLEEP|ms delays the reply "OK" (and signals
// sleeping, so a test knows the request is in flight); HANGUP closes the
// connection without a reply; TIMEOUT answers a cluster's "outcome unknown"
// error; TOOLARGE and ERRCLOSE reply ERROR and close; BADREPLY answers with
// a line the client must reject; BIG|n answers VALUE with n bytes.
//
// By default it answers the CLUSTER_* queries with fixed lines (a
// standalone status, a CLUSTER_LEADER naming 127.0.0.1:8081 whatever the
// key). With setLayout it plays a member of a cluster instead, answering
// them from the layout; a Cluster is only ever dialled at servers with a
// layout, so that it never routes to an address a test did not open.
type fakeServer struct {
	t        testing.TB
	ln       net.Listener
	password string
	done     chan struct{}

	accepted atomic.Int64  // connections accepted
	open     atomic.Int64  // connections open now
	maxOpen  atomic.Int64  // most connections open at once
	auths    atomic.Int64  // successful AUTHs
	sleeping chan struct{} // a SLEEP request arrived (dropped when full)
	// stopping makes every request draw kvserver's refusal while it shuts
	// down ("ERROR|server is shutting down", then the close); refused
	// counts those.
	stopping atomic.Bool
	refused  atomic.Int64

	mu       sync.Mutex
	data     map[string][]byte
	conns    map[net.Conn]bool
	layout   *fakeLayout    // nil: the fixed standalone answers
	requests map[string]int // requests received, by command (upper case)
	wg       sync.WaitGroup
}

// fakeLayout is the cluster a fakeServer with setLayout claims to belong
// to.
type fakeLayout struct {
	// leaders[i] is the client address of shard i+1's leader, "" for
	// none; len(leaders) is the shard count.
	leaders []string
	// nodes are the members' client addresses; node i+1 is nodes[i]. A
	// server not among them reports node_id=0.
	nodes []string
	// standalone answers CLUSTER_STATUS with mode=standalone.
	standalone bool
	// raw, by command, replaces the computed reply with this line
	// (without its newline): malformed answers.
	raw map[string]string
	// hangup lists commands the server reads and then closes the
	// connection on without a reply, as a node that crashes after
	// receiving a request: the request counts as received.
	hangup []string
}

// setLayout makes s answer as a member of l from now on; the layout is
// copied, so one can be given to several servers and changed later.
func (s *fakeServer) setLayout(l fakeLayout) {
	l.leaders = slices.Clone(l.leaders)
	l.nodes = slices.Clone(l.nodes)
	l.raw = maps.Clone(l.raw)
	l.hangup = slices.Clone(l.hangup)
	s.mu.Lock()
	s.layout = &l
	s.mu.Unlock()
}

// received returns how many requests with command cmd (upper case) s
// has read.
func (s *fakeServer) received(cmd string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[cmd]
}

// nodeID is the member id of s in l: its position in l.nodes plus one, or
// 0 when it is not a member.
func (s *fakeServer) nodeID(l *fakeLayout) int {
	return slices.Index(l.nodes, s.addr()) + 1
}

// clusterReply answers a CLUSTER_* query from the layout; ok is false for
// a command it does not answer.
func (s *fakeServer) clusterReply(l *fakeLayout, cmd string, args [][]byte) (reply []byte, ok bool) {
	if raw, found := l.raw[cmd]; found {
		return []byte(raw + "\n"), true
	}
	switch cmd {
	case "CLUSTER_STATUS":
		mode, state, withLeader := "cluster", "healthy", 0
		if l.standalone {
			mode = "standalone"
		}
		for _, a := range l.leaders {
			if a != "" {
				withLeader++
			}
		}
		if withLeader < len(l.leaders) {
			state = "unavailable"
		}
		return codec.AppendPipeStrings(nil, "CLUSTER_STATUS", "mode="+mode, "state="+state,
			"node_id="+strconv.Itoa(s.nodeID(l)), "nodes="+strconv.Itoa(len(l.nodes)), "nodes_up="+strconv.Itoa(len(l.nodes)),
			"shards="+strconv.Itoa(len(l.leaders)), "shards_with_leader="+strconv.Itoa(withLeader)), true
	case "CLUSTER_LEADER":
		var key []byte
		if len(args) > 0 {
			key = args[0]
		}
		sh := shard.Of(key, len(l.leaders))
		leader := l.leaders[sh-1]
		if leader == "" {
			return errReply(fmt.Sprintf("cluster unavailable: no leader for shard %d", sh)), true
		}
		id := slices.Index(l.nodes, leader) + 1
		return codec.AppendPipeStrings(nil, "CLUSTER_LEADER", fmt.Sprintf("id=%d,client=%s", id, leader)), true
	case "CLUSTER_NODES":
		fields := []string{"CLUSTER_NODES", strconv.Itoa(len(l.nodes))}
		for i, a := range l.nodes {
			fields = append(fields, fmt.Sprintf("id=%d,client=%s,raft=node%d.invalid:7000,state=up", i+1, a, i+1))
		}
		return codec.AppendPipeStrings(nil, fields...), true
	}
	return nil, false
}

func newFakeServer(t testing.TB, password string) *fakeServer {
	t.Helper()
	return newFakeServerAt(t, "127.0.0.1:0", password)
}

// newFakeServerAt is newFakeServer listening on addr, as a restarted
// server listens where the one before it did.
func newFakeServerAt(t testing.TB, addr, password string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return serveFake(t, ln, password)
}

// serveFake is a fake server accepting on ln (a TLS listener, say).
func serveFake(t testing.TB, ln net.Listener, password string) *fakeServer {
	s := &fakeServer{t: t, ln: ln, password: password, done: make(chan struct{}),
		sleeping: make(chan struct{}, 16), data: map[string][]byte{}, conns: map[net.Conn]bool{}, requests: map[string]int{}}
	s.wg.Add(1)
	go s.acceptLoop()
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.ln.Close()
	s.hangUpAll()
	s.wg.Wait()
}

// hangUpAll closes every open connection, as a server's idle timeout would.
func (s *fakeServer) hangUpAll() {
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

func (s *fakeServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.accepted.Add(1)
		n := s.open.Add(1)
		for {
			m := s.maxOpen.Load()
			if n <= m || s.maxOpen.CompareAndSwap(m, n) {
				break
			}
		}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serve(c)
	}
}

func (s *fakeServer) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.open.Add(-1)
		c.Close()
	}()
	dec := codec.NewPipeDecoder(codec.Limits{MaxFrame: 64 << 20})
	var buf []byte
	authed := s.password == ""
	rd := make([]byte, 64<<10)
	for {
		for {
			fields, n, err := dec.Decode(buf)
			if err != nil {
				c.Write(codec.AppendPipeStrings(nil, "ERROR", err.Error()))
				return
			}
			if n == 0 {
				break
			}
			reply, keep := s.handle(fields, &authed)
			buf = buf[n:]
			if reply != nil {
				if _, err := c.Write(reply); err != nil {
					return
				}
			}
			if !keep {
				return
			}
		}
		k, err := c.Read(rd)
		if err != nil {
			return
		}
		buf = append(buf, rd[:k]...)
	}
}

func errReply(msg string) []byte { return codec.AppendPipeStrings(nil, "ERROR", msg) }

// handle answers one request; keep false closes the connection after the reply.
func (s *fakeServer) handle(f [][]byte, authed *bool) (reply []byte, keep bool) {
	if len(f) == 0 {
		return nil, true
	}
	if s.stopping.Load() {
		s.refused.Add(1)
		return errReply("server is shutting down"), false
	}
	cmd := string(bytes.ToUpper(f[0]))
	args := f[1:]
	ok := []byte("OK\n")
	s.mu.Lock()
	s.requests[cmd]++
	layout := s.layout
	s.mu.Unlock()
	if layout != nil && slices.Contains(layout.hangup, cmd) {
		return nil, false
	}
	switch cmd {
	case "PING":
		return []byte("PONG\n"), true
	case "QUIT":
		return ok, false
	case "AUTH":
		if len(args) != 1 {
			return errReply("wrong number of fields for 'AUTH'"), true
		}
		if string(args[0]) != s.password {
			return errReply("invalid password"), true
		}
		*authed = true
		s.auths.Add(1)
		return ok, true
	}
	if !*authed {
		return errReply("NOAUTH authentication required"), true
	}
	if layout != nil {
		if reply, ok := s.clusterReply(layout, cmd, args); ok {
			return reply, true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cmd {
	case "PUT":
		if len(args) != 2 {
			return errReply("wrong number of fields for 'PUT'"), true
		}
		s.data[string(args[0])] = bytes.Clone(args[1])
		return ok, true
	case "GET":
		if len(args) != 1 {
			return errReply("wrong number of fields for 'GET'"), true
		}
		v, found := s.data[string(args[0])]
		if !found {
			return []byte("NOT_FOUND\n"), true
		}
		return codec.AppendPipe(nil, []byte("VALUE"), v), true
	case "DELETE":
		if len(args) != 1 {
			return errReply("wrong number of fields for 'DELETE'"), true
		}
		delete(s.data, string(args[0]))
		return ok, true
	case "BATCH":
		if len(args) == 0 || len(args)%2 != 0 {
			return errReply("wrong number of fields for 'BATCH'"), true
		}
		for i := 0; i < len(args); i += 2 {
			s.data[string(args[i])] = bytes.Clone(args[i+1])
		}
		return codec.AppendPipeStrings(nil, "OK", strconv.Itoa(len(args)/2)), true
	case "RANGE":
		if len(args) < 2 || len(args) > 3 {
			return errReply("wrong number of fields for 'RANGE'"), true
		}
		limit := 1000
		if len(args) == 3 {
			n, err := strconv.Atoi(string(args[2]))
			if err != nil || n <= 0 {
				return errReply("bad limit"), true
			}
			limit = min(n, limit)
		}
		var keys []string
		for k := range s.data {
			if k >= string(args[0]) && (len(args[1]) == 0 || k < string(args[1])) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		keys = keys[:min(len(keys), limit)]
		out := [][]byte{[]byte("RANGE"), []byte(strconv.Itoa(len(keys)))}
		for _, k := range keys {
			out = append(out, []byte(k), s.data[k])
		}
		return codec.AppendPipe(nil, out...), true
	case "CLUSTER_STATUS":
		return []byte("CLUSTER_STATUS|mode=standalone|state=healthy|node_id=1|nodes=1|nodes_up=1|shards=1|shards_with_leader=1|extra=a=b\n"), true
	case "CLUSTER_NODES":
		return []byte("CLUSTER_NODES|2|id=1,client=127.0.0.1:8080,raft=127.0.0.1:7001,state=up|id=2,client=127.0.0.1:8081,raft=127.0.0.1:7002,state=down\n"), true
	case "CLUSTER_LEADER":
		if len(args) == 1 {
			return codec.AppendPipeStrings(nil, "CLUSTER_LEADER", "id=2,client=127.0.0.1:8081,key="+string(args[0])), true
		}
		return []byte("CLUSTER_LEADER|id=1,client=127.0.0.1:8080\n"), true
	case "CLUSTER_REMOVE":
		if len(args) != 1 || string(args[0]) == "0" {
			return errReply("bad node id"), true
		}
		return ok, true
	case "SLEEP":
		ms, _ := strconv.Atoi(string(args[0]))
		select {
		case s.sleeping <- struct{}{}:
		default:
		}
		s.mu.Unlock()
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-s.done:
		}
		s.mu.Lock()
		return ok, true
	case "HANGUP":
		return nil, false
	case "TIMEOUT":
		return errReply("timeout: outcome unknown"), true
	case "TOOLARGE":
		return errReply("request too large"), false
	case "ERRCLOSE":
		return errReply("max number of clients reached"), false
	case "BADREPLY":
		return []byte("VALUE|a|b|c\n"), true
	case "BADESCAPE":
		return []byte("VALUE|a\\q\n"), true
	case "BIG":
		n, _ := strconv.Atoi(string(args[0]))
		return codec.AppendPipe(nil, []byte("VALUE"), bytes.Repeat([]byte{'x'}, n)), true
	}
	return errReply("unknown command '" + string(f[0]) + "'"), true
}

// silentServer returns the address of a listener that accepts connections
// and never answers, until the test ends.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().String()
}

// errorsAs is errors.As returning the target, for terse assertions.
func errorsAs[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}
