package server

import (
	"errors"
	"strconv"
	"strings"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// Pipe protocol replies that never change.
var (
	pipeOK       = []byte("OK\n")
	pipePong     = []byte("PONG\n")
	pipeNotFound = []byte("NOT_FOUND\n")
)

func (s *Server) pipeCommands() []*command {
	return []*command{
		{name: "PING", minArgs: 1, maxArgs: 1, noAuth: true, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			s.emit(cs, pipePong)
		}},
		{name: "QUIT", minArgs: 1, maxArgs: 1, noAuth: true, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			s.emit(cs, pipeOK)
			cs.closing = true
		}},
		{name: "AUTH", minArgs: 2, maxArgs: 2, noAuth: true, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			if !s.passwordOK(args[1]) {
				s.authFailed(cs)
				s.refuse(cs, args, causeNoAuth, "invalid password")
				return
			}
			s.authenticate(cs)
			s.emit(cs, pipeOK)
		}},
		{name: "GET", minArgs: 2, maxArgs: 2, class: classRead, run: (*Server).pipeGet, waitsInQueue: true},
		{name: "PUT", minArgs: 3, maxArgs: 3, class: classWrite, run: (*Server).pipePut, keys: oneKey, coalesces: true},
		{name: "DELETE", minArgs: 2, maxArgs: 2, class: classWrite, run: (*Server).pipeDelete, keys: oneKey, coalesces: true},
		{name: "RANGE", minArgs: 3, maxArgs: 4, class: classRead, run: (*Server).pipeRange, ranges: true},
		{name: "BATCH", minArgs: 3, maxArgs: -1, class: classWrite, run: (*Server).pipeBatch, keys: pairKeys},
		{name: "CLUSTER_STATUS", minArgs: 1, maxArgs: 1, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			s.emit(cs, codec.AppendPipeStrings(nil, statusFields("CLUSTER_STATUS", s.store.Status())...))
		}},
		{name: "CLUSTER_NODES", minArgs: 1, maxArgs: 1, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			nodes := s.store.Nodes()
			fields := []string{"CLUSTER_NODES", strconv.Itoa(len(nodes))}
			for _, n := range nodes {
				fields = append(fields, nodeField(n))
			}
			s.emit(cs, codec.AppendPipeStrings(nil, fields...))
		}},
		{name: "CLUSTER_LEADER", minArgs: 1, maxArgs: 2, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			var key []byte
			if len(args) == 2 {
				key = args[1]
			}
			n, err := s.store.Leader(key)
			if err != nil {
				s.emit(cs, s.storeErr(cs, nil, s.cmdAdmin, err))
				return
			}
			s.emit(cs, codec.AppendPipeStrings(nil, "CLUSTER_LEADER", "id="+strconv.FormatUint(n.ID, 10)+",client="+n.Client))
		}},
		{name: "CLUSTER_JOIN", minArgs: 4, maxArgs: 4, class: classWrite, run: (*Server).pipeJoin},
		{name: "CLUSTER_REMOVE", minArgs: 2, maxArgs: 2, class: classWrite, run: (*Server).pipeRemove},
		{name: "CLUSTER_CHECK", minArgs: 1, maxArgs: 1, class: classWrite, run: (*Server).pipeCheck},
		// Internal: what a node running CLUSTER_CHECK asks the others.
		{name: "CLUSTER_HASH", minArgs: 4, maxArgs: 4, class: classRead, run: (*Server).pipeHash},
		// Internal: what a joining node asks before it starts raft.
		{name: "CLUSTER_DEPLOYMENT", minArgs: 1, maxArgs: 1, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			s.emit(cs, codec.AppendPipe(nil, []byte("DEPLOYMENT"), strconv.AppendUint(nil, s.store.Deployment(), 10)))
		}},
	}
}

func (s *Server) pipeGet(cs *conn, args [][]byte, start int64) {
	s.get(cs, args, start, pipeGetReply)
}

var (
	bVALUE       = []byte("VALUE")
	pipeGetReply = &readReply{
		found:   func(dst, v []byte) []byte { return codec.AppendPipe(dst, bVALUE, v) },
		missing: pipeNotFound,
	}
)

func (s *Server) pipePut(cs *conn, args [][]byte, start int64) {
	if msg := s.checkKey(args[1]); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	s.writeOne(cs, s.cmdPut, args[1], args[2], false, start, pipeOK)
}

func (s *Server) pipeDelete(cs *conn, args [][]byte, start int64) {
	if msg := s.checkKey(args[1]); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	s.writeOne(cs, s.cmdDelete, args[1], nil, true, start, pipeOK)
}

func (s *Server) pipeBatch(cs *conn, args [][]byte, start int64) {
	pairs := args[1:]
	if len(pairs)%2 != 0 {
		s.refuse(cs, args, causeArity, "wrong number of fields for 'BATCH'")
		return
	}
	if msg := s.checkKeys(pairs, 2); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	ok := codec.AppendPipeStrings(nil, "OK", strconv.Itoa(len(pairs)/2))
	s.write(cs, newBatchPairs(pairs), s.cmdBatch, start, ok)
}

func (s *Server) pipeRange(cs *conn, args [][]byte, start int64) {
	limit := s.rangeLimit(0)
	if len(args) == 4 {
		n, err := strconv.Atoi(string(args[3]))
		if errors.Is(err, strconv.ErrRange) && n > 0 {
			err = nil // beyond int: capped like any limit over range_limit
		}
		if err != nil || n <= 0 {
			s.refuse(cs, args, causeInvalid, "limit must be a positive integer")
			return
		}
		limit = s.rangeLimit(n)
	}
	p := s.newPending(cs, classRead, s.cmdRange, start)
	s.store.Range(args[1], args[2], limit, func(kvs []store.KV, err error) {
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		fields := make([][]byte, 0, 2+2*len(kvs))
		fields = append(fields, []byte("RANGE"), strconv.AppendInt(nil, int64(len(kvs)), 10))
		size := 16
		for _, kv := range kvs {
			fields = append(fields, kv.Key, kv.Value)
			size += len(kv.Key) + len(kv.Value) + 2
		}
		s.finish(p, codec.AppendPipe(make([]byte, 0, size), fields...))
	})
	s.settle(p)
}

func (s *Server) pipeJoin(cs *conn, args [][]byte, start int64) {
	s.membership(cs, args, start, func(id uint64, done func(error)) {
		s.store.Join(id, string(args[2]), string(args[3]), done)
	})
}

func (s *Server) pipeRemove(cs *conn, args [][]byte, start int64) {
	s.membership(cs, args, start, s.store.Remove)
}

// membership runs a CLUSTER_JOIN/CLUSTER_REMOVE for the node id in
// args[1]. The fields op needs are copied by the store before it returns.
func (s *Server) membership(cs *conn, args [][]byte, start int64, op func(id uint64, done func(error))) {
	id, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil || id == 0 {
		s.refuse(cs, args, causeInvalid, "node id must be a positive integer")
		return
	}
	p := s.newPending(cs, classWrite, s.cmdAdmin, start)
	op(id, func(err error) { s.finishOK(p, cs, err, pipeOK) })
	s.settle(p)
}

// write hands a batch to the store and replies ok once it is durable.
func (s *Server) write(cs *conn, b *lsm.Batch, cmd int, start int64, ok []byte) {
	p := s.newPending(cs, classWrite, cmd, start)
	p.bytes = int64(b.Size())
	s.writing.Add(p.bytes)
	s.store.Write(b, func(err error) {
		s.writing.Add(-p.bytes)
		s.finishOK(p, cs, err, ok)
	})
	s.settle(p)
}

// finishOK completes p with ok, or with the error in cs's protocol.
func (s *Server) finishOK(p *pending, cs *conn, err error, ok []byte) {
	if err != nil {
		s.finish(p, s.storeErr(cs, nil, p.cmd, err))
		return
	}
	s.finish(p, ok)
}

// statusFields renders a Status as CLUSTER_STATUS fields, in the order
// PROTOCOL.md fixes.
func statusFields(head string, st store.Status) []string {
	f := []string{head,
		"mode=" + st.Mode,
		"state=" + st.State,
		"node_id=" + strconv.FormatUint(st.NodeID, 10),
		"nodes=" + strconv.Itoa(st.Nodes),
		"nodes_up=" + strconv.Itoa(st.NodesUp),
		"shards=" + strconv.Itoa(st.Shards),
		"shards_with_leader=" + strconv.Itoa(st.ShardsWithLeader),
	}
	// PROTOCOL.md lets other fields follow its seven; the standalone reply
	// stays exactly those.
	if st.Mode == "cluster" {
		f = append(f, "nodes_nonvoting="+strconv.Itoa(st.NodesNonVoting))
	}
	return f
}

func nodeField(n store.Node) string {
	state := "down"
	if n.Up {
		state = "up"
	}
	var b strings.Builder
	b.WriteString("id=")
	b.WriteString(strconv.FormatUint(n.ID, 10))
	b.WriteString(",client=")
	b.WriteString(n.Client)
	b.WriteString(",raft=")
	b.WriteString(n.Raft)
	b.WriteString(",state=")
	b.WriteString(state)
	return b.String()
}
