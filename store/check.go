package store

import (
	"context"
	"fmt"
	"io"

	"github.com/kvstore/kv/lsm"
)

// Verifier is implemented by stores that can read their engines' data
// whole to check it (lsm.DB.Verify) while they serve: report is called
// once per engine, in order, with what its Verify returned (err: it could
// not be read whole, which is not damage). Verify returns early only when
// ctx is done.
type Verifier interface {
	Verify(ctx context.Context, report func(name string, rep lsm.VerifyReport, err error)) error
}

// WriteVerifyReport writes one engine's verification as a line, and a line
// per damaged table, and reports whether the engine was read whole and
// found sound.
func WriteVerifyReport(w io.Writer, name string, rep lsm.VerifyReport, err error) (sound bool) {
	if err != nil {
		fmt.Fprintf(w, "%s: not checked: %v\n", name, err)
		return false
	}
	verdict := "ok"
	if len(rep.Problems) > 0 {
		verdict = fmt.Sprintf("DAMAGED (%d of %d tables)", len(rep.Problems), rep.Tables)
	}
	fmt.Fprintf(w, "%s: %d tables, %d bytes, %d entries: %s\n", name, rep.Tables, rep.Bytes, rep.Entries, verdict)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	return len(rep.Problems) == 0
}

// Verify checks the engine's tables (Verifier).
func (l *Local) Verify(ctx context.Context, report func(name string, rep lsm.VerifyReport, err error)) error {
	rep, err := l.db.Verify(ctx)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	report("standalone", rep, err)
	return nil
}

// ConsistencyChecker is implemented by cluster nodes: they compare what
// the replicas of each shard hold at one point of its raft log.
type ConsistencyChecker interface {
	// CheckConsistency checks every shard, one after the other.
	CheckConsistency(ctx context.Context) ([]ShardCheck, error)
	// ReplicaHash is this node's hash of its replica of shard at the
	// check entry token names (index: that entry's index where it was
	// proposed), once the replica has applied it (CLUSTER_HASH).
	ReplicaHash(ctx context.Context, shard, token, index uint64) (ReplicaHash, error)
}

// ShardCheck is the outcome of one shard's consistency check.
type ShardCheck struct {
	Shard, Index uint64 // the shard, and the raft entry compared at
	// State is "consistent" (every replica asked has the same hash),
	// "inconsistent" (two differ) or "incomplete" (the others agree but a
	// replica could not be asked).
	State    string
	Replicas []ReplicaHash
}

// ReplicaHash is one replica's answer in a consistency check.
type ReplicaHash struct {
	Node uint64
	Hash string // hex SHA-256 of the replica's state
	Keys int64  // user keys it holds
	Err  string // why it has no hash
	// Unreachable says the node could not be asked at all (down).
	Unreachable bool
}
