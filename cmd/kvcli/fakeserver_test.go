package main

import (
	"bytes"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvstore/kv/codec"
)

// fakeServer answers the pipe protocol over TCP on 127.0.0.1 from a map,
// enough to run kvcli's commands end to end without a real kvserver.
// Every request it received is recorded, as the wire sent it.
type fakeServer struct {
	ln       net.Listener
	password string
	wg       sync.WaitGroup

	mu         sync.Mutex
	data       map[string]string
	rangeLimit int // caps every RANGE reply, as server.range_limit does
	requests   [][]string
	conns      []net.Conn
}

func newFakeServer(t *testing.T, password string) *fakeServer {
	t.Helper()
	return newFakeServerAt(t, "127.0.0.1:0", password)
}

// newFakeServerAt is newFakeServer listening on addr.
func newFakeServerAt(t *testing.T, addr, password string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, password: password, data: map[string]string{}, rangeLimit: 1000}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() { s.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

// setRangeLimit sets the most pairs one RANGE reply holds.
func (s *fakeServer) setRangeLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rangeLimit = n
}

// fill stores n pairs prefix00000=v0 ... directly.
func (s *fakeServer) fill(prefix string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range n {
		s.data[fmt.Sprintf("%s%05d", prefix, i)] = "v" + strconv.Itoa(i)
	}
}

// count returns how many requests named cmd were received.
func (s *fakeServer) count(cmd string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if r[0] == cmd {
			n++
		}
	}
	return n
}

// last returns the last request received.
func (s *fakeServer) last() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.requests) == 0 {
		return nil
	}
	return s.requests[len(s.requests)-1]
}

func (s *fakeServer) serve(c net.Conn) {
	defer c.Close()
	dec := codec.NewPipeDecoder(codec.Limits{})
	var buf []byte
	rd := make([]byte, 4096)
	authed := s.password == ""
	for {
		for {
			f, n, err := dec.Decode(buf)
			if err != nil {
				c.Write(codec.AppendPipeStrings(nil, "ERROR", err.Error()))
				return
			}
			if n == 0 {
				break
			}
			buf = buf[n:]
			if len(f) == 0 {
				continue
			}
			args := make([]string, len(f))
			for i, b := range f {
				args[i] = string(b)
			}
			if _, err := c.Write(codec.AppendPipeStrings(nil, s.handle(args, &authed)...)); err != nil {
				return
			}
			if strings.EqualFold(args[0], "QUIT") {
				return // PROTOCOL.md: OK, then the server closes
			}
		}
		k, err := c.Read(rd)
		if err != nil {
			return
		}
		buf = append(buf, rd[:k]...)
	}
}

func (s *fakeServer) handle(f []string, authed *bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, f)
	cmd, args := string(bytes.ToUpper([]byte(f[0]))), f[1:]
	switch cmd {
	case "PING":
		return []string{"PONG"}
	case "QUIT":
		return []string{"OK"}
	case "AUTH":
		if len(args) == 1 && args[0] == s.password {
			*authed = true
			return []string{"OK"}
		}
		return []string{"ERROR", "invalid password"}
	}
	if !*authed {
		return []string{"ERROR", "NOAUTH authentication required"}
	}
	switch {
	case cmd == "PUT" && len(args) == 2:
		s.data[args[0]] = args[1]
		return []string{"OK"}
	case cmd == "GET" && len(args) == 1:
		if v, ok := s.data[args[0]]; ok {
			return []string{"VALUE", v}
		}
		return []string{"NOT_FOUND"}
	case cmd == "DELETE" && len(args) == 1:
		delete(s.data, args[0])
		return []string{"OK"}
	case cmd == "BATCH" && len(args) > 0 && len(args)%2 == 0:
		for i := 0; i < len(args); i += 2 {
			s.data[args[i]] = args[i+1]
		}
		return []string{"OK", strconv.Itoa(len(args) / 2)}
	case cmd == "RANGE" && (len(args) == 2 || len(args) == 3):
		limit := s.rangeLimit
		if len(args) == 3 {
			n, _ := strconv.Atoi(args[2])
			limit = min(n, limit)
		}
		var keys []string
		for k := range s.data {
			if k >= args[0] && (args[1] == "" || k < args[1]) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		keys = keys[:min(limit, len(keys))]
		out := []string{"RANGE", strconv.Itoa(len(keys))}
		for _, k := range keys {
			out = append(out, k, s.data[k])
		}
		return out
	case cmd == "CLUSTER_STATUS":
		return []string{"CLUSTER_STATUS", "mode=standalone", "state=healthy", "node_id=1", "nodes=1", "nodes_up=1", "shards=1", "shards_with_leader=1"}
	case cmd == "CLUSTER_NODES":
		return []string{"CLUSTER_NODES", "1", "id=1,client=127.0.0.1:8080,raft=,state=up"}
	case cmd == "CLUSTER_LEADER":
		return []string{"CLUSTER_LEADER", "id=1,client=127.0.0.1:8080"}
	case cmd == "CLUSTER_CHECK":
		return []string{"CLUSTER_CHECK", "2", "shard=1,index=9,state=consistent,keys=3,nodes=1:aa/2:aa",
			"shard=2,index=8,state=inconsistent,keys=4,nodes=1:bb/2:cc"}
	case cmd == "CLUSTER_REMOVE" && len(args) == 1:
		if args[0] == "1" {
			return []string{"ERROR", "cannot remove node 1"}
		}
		return []string{"OK"}
	}
	return []string{"ERROR", "unknown command '" + f[0] + "'"}
}
