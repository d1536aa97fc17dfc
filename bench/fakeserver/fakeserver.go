// Package fakeserver is a tiny in-memory server speaking the pipe protocol
// and the RESP2 subset kvbench uses, for testing the load generator
// itself: it is not kvserver and stores nothing durably. Like kvserver it
// picks the protocol per connection from the first byte ('*' is RESP).
//
// Hooks let a test make it misbehave in known ways: stall before a reply,
// return a wrong value, fail requests. With Canned it keeps no data and
// answers at once, to measure how fast the generator can go.
package fakeserver

import (
	"bytes"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/shard"
)

// Options configures a Server; the zero value is a well-behaved server.
type Options struct {
	Password string // when set, commands but AUTH and PING need AUTH first
	// Canned answers without a store: OK to writes, NOT_FOUND / null to
	// gets, empty ranges.
	Canned bool
	// Stall, when set, is called with the 1-based number of each request
	// (over all connections) and the connection sleeps that long before
	// answering it.
	Stall func(n int64) time.Duration
	// Corrupt, when set, is called for each get that finds a value; when it
	// returns true the reply carries a different value.
	Corrupt func(key []byte) bool
	// Fail, when set, is called with each request's command; a non-empty
	// result is sent as an error reply instead of executing it.
	Fail func(cmd string) string
	// Cluster, when set, makes the server answer CLUSTER_STATUS and
	// CLUSTER_LEADER|key as a member of a cluster whose shard leaders
	// (client addresses, shard s at index s-1; "" for none) Cluster
	// returns when asked. Keys map to shards by shard.Of.
	Cluster func() []string
	// Key, when set, is called with the command and key of every PUT,
	// GET and DELETE (pipe protocol) before it runs.
	Key func(cmd string, key []byte)
	// MeasureCPU pins each connection to an OS thread and adds the
	// thread's CPU time to CPU when the connection ends (Linux only).
	MeasureCPU bool
}

// Server is a running fake server on 127.0.0.1.
type Server struct {
	opts Options
	ln   net.Listener
	wg   sync.WaitGroup

	mu   sync.Mutex
	data map[string][]byte
	conn map[net.Conn]bool

	requests atomic.Int64
	cpuNanos atomic.Int64
	closed   atomic.Bool
}

// Start listens on 127.0.0.1 on a free port and serves until Close.
func Start(opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, ln: ln, data: make(map[string][]byte), conn: make(map[net.Conn]bool)}
	s.wg.Go(s.accept)
	return s, nil
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Requests is the number of requests received so far.
func (s *Server) Requests() int64 { return s.requests.Load() }

// CPU is the CPU time of the connections that have ended, with MeasureCPU.
func (s *Server) CPU() time.Duration { return time.Duration(s.cpuNanos.Load()) }

// Get returns the stored value of key.
func (s *Server) Get(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	return v, ok
}

// Len is the number of keys stored.
func (s *Server) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data)
}

// Close stops the server, closes every connection and waits for them.
func (s *Server) Close() error {
	s.closed.Store(true)
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed.Load() {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conn[c] = true
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(c) })
	}
}

func (s *Server) serve(c net.Conn) {
	if s.opts.MeasureCPU {
		stop := pinThread()
		defer func() { s.cpuNanos.Add(int64(stop())) }()
	}
	defer func() {
		s.mu.Lock()
		delete(s.conn, c)
		s.mu.Unlock()
		_ = c.Close()
	}()
	buf := make([]byte, 64<<10)
	var lo, hi int
	var out []byte
	authed := s.opts.Password == ""
	var decode func([]byte) ([][]byte, int, error)
	resp := false
	for {
		if hi == len(buf) {
			if lo > 0 {
				hi = copy(buf, buf[lo:hi])
				lo = 0
			} else {
				buf = append(buf, make([]byte, len(buf))...)
			}
		}
		n, err := c.Read(buf[hi:])
		hi += n
		if decode == nil && hi > lo {
			resp = buf[lo] == '*'
			if resp {
				decode = codec.NewRESPDecoder(codec.Limits{}).Decode
			} else {
				decode = codec.NewPipeDecoder(codec.Limits{}).Decode
			}
		}
		for decode != nil && lo < hi {
			args, m, derr := decode(buf[lo:hi])
			if derr != nil {
				out = reply(out, resp, kindError, []byte(derr.Error()), 0)
				_, _ = c.Write(out)
				return
			}
			if m == 0 {
				break
			}
			lo += m
			if len(args) == 0 {
				continue
			}
			num := s.requests.Add(1)
			if s.opts.Stall != nil {
				if d := s.opts.Stall(num); d > 0 {
					if len(out) > 0 {
						_, _ = c.Write(out)
						out = out[:0]
					}
					time.Sleep(d)
				}
			}
			var quit bool
			out, quit = s.execute(out, resp, args, &authed)
			if quit {
				_, _ = c.Write(out)
				return
			}
		}
		if lo == hi {
			lo, hi = 0, 0
		}
		if len(out) > 0 {
			if _, werr := c.Write(out); werr != nil {
				return
			}
			out = out[:0]
		}
		if err != nil {
			return
		}
	}
}

type kind uint8

const (
	kindOK kind = iota
	kindPong
	kindValue
	kindNotFound
	kindCount // OK|n for pipe writes of n pairs; :n for RESP
	kindInt   // DEL over RESP
	kindRange
	kindError
)

var (
	errWrongArgs = errors.New("wrong number of fields")
)

func (s *Server) execute(out []byte, resp bool, args [][]byte, authed *bool) ([]byte, bool) {
	var up [16]byte
	name := upperASCII(up[:0], args[0])
	switch string(name) {
	case "PING":
		if s.opts.Fail == nil {
			return reply(out, resp, kindPong, nil, 0), false
		}
	case "PUT", "SET":
		if s.opts.Canned && *authed && s.opts.Fail == nil {
			return reply(out, resp, kindOK, nil, 0), false // the ceiling benchmark's fast path
		}
	case "GET":
		if s.opts.Canned && *authed && s.opts.Fail == nil {
			return reply(out, resp, kindNotFound, nil, 0), false
		}
	}
	cmd := string(name)
	if cmd == "QUIT" {
		return reply(out, resp, kindOK, nil, 0), true
	}
	if cmd == "AUTH" {
		if len(args) != 2 || string(args[1]) != s.opts.Password {
			return reply(out, resp, kindError, []byte("invalid password"), 0), false
		}
		*authed = true
		return reply(out, resp, kindOK, nil, 0), false
	}
	if cmd != "PING" && !*authed {
		return reply(out, resp, kindError, []byte("NOAUTH authentication required"), 0), false
	}
	if s.opts.Fail != nil {
		if msg := s.opts.Fail(cmd); msg != "" {
			return reply(out, resp, kindError, []byte(msg), 0), false
		}
	}
	if s.opts.Key != nil && len(args) >= 2 && (cmd == "PUT" || cmd == "GET" || cmd == "DELETE") {
		s.opts.Key(cmd, args[1])
	}
	switch cmd {
	case "PING":
		return reply(out, resp, kindPong, nil, 0), false
	case "CLUSTER_STATUS", "CLUSTER_LEADER":
		if s.opts.Cluster == nil || resp {
			break
		}
		return s.cluster(out, args), false
	case "PUT", "SET":
		if len(args) != 3 {
			break
		}
		s.put(args[1:])
		return reply(out, resp, kindOK, nil, 0), false
	case "GET":
		if len(args) != 2 {
			break
		}
		v, ok := s.get(args[1])
		if !ok {
			return reply(out, resp, kindNotFound, nil, 0), false
		}
		return reply(out, resp, kindValue, v, 0), false
	case "DELETE", "DEL":
		if len(args) != 2 {
			break
		}
		existed := s.del(args[1])
		if resp {
			return reply(out, resp, kindInt, nil, existed), false
		}
		return reply(out, resp, kindOK, nil, 0), false
	case "BATCH", "MSET":
		if len(args) < 3 || len(args)%2 == 0 {
			break
		}
		s.put(args[1:])
		if resp {
			return reply(out, resp, kindOK, nil, 0), false
		}
		return reply(out, resp, kindCount, nil, int64(len(args)/2)), false
	case "RANGE", "SCAN":
		return s.scan(out, resp, args), false
	default:
		return reply(out, resp, kindError, []byte("unknown command '"+cmd+"'"), 0), false
	}
	if cmd == "CLUSTER_STATUS" || cmd == "CLUSTER_LEADER" {
		return reply(out, resp, kindError, []byte("unknown command '"+cmd+"'"), 0), false
	}
	return reply(out, resp, kindError, []byte(errWrongArgs.Error()+" for '"+cmd+"'"), 0), false
}

// cluster answers CLUSTER_STATUS and CLUSTER_LEADER from Options.Cluster.
func (s *Server) cluster(out []byte, args [][]byte) []byte {
	leaders := s.opts.Cluster()
	n := strconv.Itoa(len(leaders))
	if string(args[0]) == "CLUSTER_STATUS" {
		return codec.AppendPipeStrings(out, "CLUSTER_STATUS", "mode=cluster", "state=healthy", "node_id=1",
			"nodes=3", "nodes_up=3", "shards="+n, "shards_with_leader="+n)
	}
	var key []byte
	if len(args) > 1 {
		key = args[1]
	}
	sh := shard.Of(key, len(leaders))
	if leaders[sh-1] == "" {
		return codec.AppendPipeStrings(out, "ERROR", "cluster unavailable: no leader for shard "+strconv.FormatUint(sh, 10))
	}
	return codec.AppendPipeStrings(out, "CLUSTER_LEADER", "id="+strconv.FormatUint(sh, 10)+",client="+leaders[sh-1])
}

// upperASCII appends b upper-cased to dst.
func upperASCII(dst, b []byte) []byte {
	for _, c := range b {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

func (s *Server) put(kvs [][]byte) {
	if s.opts.Canned {
		return
	}
	s.mu.Lock()
	for i := 0; i+1 < len(kvs); i += 2 {
		s.data[string(kvs[i])] = slices.Clone(kvs[i+1])
	}
	s.mu.Unlock()
}

func (s *Server) get(key []byte) ([]byte, bool) {
	if s.opts.Canned {
		return nil, false
	}
	s.mu.Lock()
	v, ok := s.data[string(key)]
	s.mu.Unlock()
	if ok && s.opts.Corrupt != nil && s.opts.Corrupt(key) {
		v = append([]byte("corrupt-"), v...)
	}
	return v, ok
}

func (s *Server) del(key []byte) int64 {
	if s.opts.Canned {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.data[string(key)]
	delete(s.data, string(key))
	if ok {
		return 1
	}
	return 0
}

// scan answers RANGE|start|end|limit (pipe) or SCAN cursor COUNT n (RESP,
// from the first key) with up to limit keys in order.
func (s *Server) scan(out []byte, resp bool, args [][]byte) []byte {
	var start []byte
	limit := 1000
	if resp {
		for i := 2; i+1 < len(args); i += 2 {
			if string(bytes.ToUpper(args[i])) == "COUNT" {
				limit, _ = strconv.Atoi(string(args[i+1]))
			}
		}
	} else if len(args) >= 2 {
		start = args[1]
		if len(args) >= 4 {
			limit, _ = strconv.Atoi(string(args[3]))
		}
	}
	var keys []string
	if !s.opts.Canned {
		s.mu.Lock()
		for k := range s.data {
			if k >= string(start) {
				keys = append(keys, k)
			}
		}
		s.mu.Unlock()
		slices.Sort(keys)
		keys = keys[:min(len(keys), max(limit, 0))]
	}
	if resp {
		out = codec.AppendArrayHeader(out, 2)
		out = codec.AppendBulkString(out, "0")
		out = codec.AppendArrayHeader(out, len(keys))
		for _, k := range keys {
			out = codec.AppendBulkString(out, k)
		}
		return out
	}
	out = append(out, "RANGE|"...)
	out = strconv.AppendInt(out, int64(len(keys)), 10)
	for _, k := range keys {
		v, _ := s.Get(k)
		out = append(out, '|')
		out = codec.AppendPipeEscaped(out, []byte(k))
		out = append(out, '|')
		out = codec.AppendPipeEscaped(out, v)
	}
	return append(out, '\n')
}

func reply(out []byte, resp bool, k kind, val []byte, n int64) []byte {
	if resp {
		switch k {
		case kindOK:
			return codec.AppendSimple(out, "OK")
		case kindPong:
			return codec.AppendSimple(out, "PONG")
		case kindValue:
			return codec.AppendBulk(out, val)
		case kindNotFound:
			return codec.AppendNull(out)
		case kindCount, kindInt:
			return codec.AppendInt(out, n)
		case kindError:
			return codec.AppendError(out, "ERR "+string(val))
		}
		return out
	}
	switch k {
	case kindOK, kindInt:
		return append(out, "OK\n"...)
	case kindPong:
		return append(out, "PONG\n"...)
	case kindValue:
		out = append(out, "VALUE|"...)
		out = codec.AppendPipeEscaped(out, val)
		return append(out, '\n')
	case kindNotFound:
		return append(out, "NOT_FOUND\n"...)
	case kindCount:
		out = append(out, "OK|"...)
		out = strconv.AppendInt(out, n, 10)
		return append(out, '\n')
	case kindError:
		out = append(out, "ERROR|"...)
		out = codec.AppendPipeEscaped(out, val)
		return append(out, '\n')
	}
	return out
}
