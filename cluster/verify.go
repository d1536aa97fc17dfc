package cluster

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/kvstore/kv/lsm"
)

// Verify reads every table of the local replicas' engines whole, one
// shard at a time, against their checksums and manifests (lsm.DB.Verify),
// while the node serves (store.Verifier). A replica whose state a
// snapshot replaced while it was read is reported as not read whole.
func (c *Cluster) Verify(ctx context.Context, report func(name string, rep lsm.VerifyReport, err error)) error {
	c.smMu.Lock()
	sms := maps.Clone(c.sms)
	c.smMu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(sms)) {
		rep, err := sms[id].verify(ctx)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		report(fmt.Sprintf("shard %d", id), rep, err)
	}
	return nil
}

// verify runs lsm.DB.Verify on the replica's current engine. It does not
// hold s.mu while it reads, which would hold up Update: a snapshot that
// replaces the engine meanwhile closes it, and Verify says so.
func (s *stateMachine) verify(ctx context.Context) (lsm.VerifyReport, error) {
	s.mu.RLock()
	db, closed := s.db, s.closed
	s.mu.RUnlock()
	if closed || db == nil {
		return lsm.VerifyReport{}, errSMClosed
	}
	rep, err := db.Verify(ctx)
	if err == lsm.ErrClosed {
		err = fmt.Errorf("the replica's engine was replaced (snapshot) or closed while it was read: %w", err)
	}
	return rep, err
}
