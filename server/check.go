package server

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/store"
)

// checkTimeout bounds a consistency check, and a member's hash for one:
// each replica reads its whole shard.
const checkTimeout = 10 * time.Minute

// pipeCheck runs CLUSTER_CHECK: the replicas of every shard compared at
// one point of its raft log. The reply is CLUSTER_CHECK|n|shard1|...,
// one field per shard: shard=1,index=120,state=consistent,keys=1000,
// nodes=1:9f86d081/2:9f86d081/3:down (each node's hash, its first 16 hex
// digits, or why it has none).
func (s *Server) pipeCheck(cs *conn, args [][]byte, start int64) {
	cc, ok := s.store.(store.ConsistencyChecker)
	if !ok {
		s.refuse(cs, args, causeInvalid, store.ErrStandalone.Error())
		return
	}
	p := s.newPending(cs, classWrite, s.cmdAdmin, start)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		defer cancel()
		checks, err := cc.CheckConsistency(ctx)
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		fields := []string{"CLUSTER_CHECK", strconv.Itoa(len(checks))}
		for _, c := range checks {
			fields = append(fields, checkField(c))
		}
		s.finish(p, codec.AppendPipeStrings(nil, fields...))
	}()
	s.settle(p)
}

func checkField(c store.ShardCheck) string {
	var b strings.Builder
	b.WriteString("shard=" + strconv.FormatUint(c.Shard, 10))
	b.WriteString(",index=" + strconv.FormatUint(c.Index, 10))
	b.WriteString(",state=" + c.State)
	for _, r := range c.Replicas {
		if r.Err == "" {
			b.WriteString(",keys=" + strconv.FormatInt(r.Keys, 10))
			break
		}
	}
	b.WriteString(",nodes=")
	for i, r := range c.Replicas {
		if i > 0 {
			b.WriteByte('/')
		}
		b.WriteString(strconv.FormatUint(r.Node, 10) + ":")
		switch {
		case r.Err == "":
			b.WriteString(r.Hash[:min(16, len(r.Hash))])
		case r.Unreachable:
			b.WriteString("down")
		default:
			b.WriteString("error")
		}
	}
	return b.String()
}

// pipeHash runs CLUSTER_HASH|shard|token|index (internal: what the node
// running a consistency check asks the others): HASH|hex|keys.
func (s *Server) pipeHash(cs *conn, args [][]byte, start int64) {
	cc, ok := s.store.(store.ConsistencyChecker)
	if !ok {
		s.refuse(cs, args, causeInvalid, store.ErrStandalone.Error())
		return
	}
	var n [3]uint64
	for i := range n {
		v, err := strconv.ParseUint(string(args[i+1]), 10, 64)
		if err != nil {
			s.refuse(cs, args, causeInvalid, "shard, token and index must be unsigned integers")
			return
		}
		n[i] = v
	}
	p := s.newPending(cs, classRead, s.cmdAdmin, start)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		defer cancel()
		rh, err := cc.ReplicaHash(ctx, n[0], n[1], n[2])
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		s.finish(p, codec.AppendPipeStrings(nil, "HASH", rh.Hash, strconv.FormatInt(rh.Keys, 10)))
	}()
	s.settle(p)
}
