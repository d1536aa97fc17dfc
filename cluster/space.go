package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/lsm"
)

// The free-space guard, etcd's NOSPACE alarm in spirit. Dragonboat's raft
// log (a pebble LogDB) panics when a write fails, so a node whose disk
// fills stops at once; and a member's disk fills with the entries every
// other member proposes, not only its own. So writes are refused before
// that, cluster-wide: each node measures the space left on storage.dir's
// file system (spaceInterval); under cluster.min_free_bytes it is "low"
// and refuses new writes, and its answer to the members' liveness probes
// (probeMember, twice a second) says so, so every member that sees it up
// refuses them too. The space below the threshold is for what is already
// under way: proposals in flight, memtable flushes, raft log compactions.
// Deletes still go through (they can make room once compacted, and cost
// the log little), as do membership changes. The refusal is definite:
// nothing was proposed. It lifts once space is back above the threshold
// plus an eighth (so it does not flap at the line), by itself.
const spaceInterval = 100 * time.Millisecond

// ErrNoSpace is wrapped by the errors of writes refused because a member
// is short of disk space.
var ErrNoSpace = errors.New("storage unavailable: no space left on device")

// spaceGuard tracks this node's free space against cluster.min_free_bytes.
type spaceGuard struct {
	dir  string
	min  uint64
	free func(dir string) (uint64, error) // bytes available; freeSpace outside tests
	log  *slog.Logger

	mu      sync.Mutex // serializes check
	low     atomic.Bool
	avail   atomic.Uint64 // at the last check
	lastErr string        // last measurement error logged (check's)
}

func newSpaceGuard(dir string, min uint64, free func(string) (uint64, error), log *slog.Logger) *spaceGuard {
	return &spaceGuard{dir: dir, min: min, free: free, log: log}
}

// check measures the free space and raises or lifts the alarm. A failed
// measurement changes nothing (it is logged once per distinct error).
func (g *spaceGuard) check() {
	g.mu.Lock()
	defer g.mu.Unlock()
	avail, err := g.free(g.dir)
	if err != nil {
		if err.Error() != g.lastErr {
			g.lastErr = err.Error()
			g.log.Warn("cannot measure free disk space; the free-space guard keeps its state", "dir", g.dir, "err", err)
		}
		return
	}
	g.lastErr = ""
	g.avail.Store(avail)
	switch low := g.low.Load(); {
	case !low && avail < g.min:
		g.low.Store(true)
		g.log.Error("free disk space under cluster.min_free_bytes: refusing writes, here and on every member, until space is freed",
			"dir", g.dir, "free", fmtBytes(avail), "min_free_bytes", fmtBytes(g.min))
	case low && avail >= g.liftAt():
		g.low.Store(false)
		g.log.Info("free disk space is back: accepting writes again", "dir", g.dir, "free", fmtBytes(avail), "min_free_bytes", fmtBytes(g.min))
	}
}

// liftAt is the free space at which a raised alarm lifts.
func (g *spaceGuard) liftAt() uint64 { return g.min + g.min/8 }

// memberSpace is a member whose probe answer said it is short of disk
// space, and the bytes it has free.
type memberSpace struct {
	id    uint64
	avail uint64
}

func (c *Cluster) spaceLoop() { c.every(spaceInterval, c.space.check) }

// spaceErr returns why writes are refused for want of space (this node's
// or a member's that this node sees up), or nil.
func (c *Cluster) spaceErr() error {
	if g := c.space; g != nil && g.low.Load() {
		return fmt.Errorf("%w: node %d has %s free in %s, under cluster.min_free_bytes (%s); writes are refused until space is freed",
			ErrNoSpace, c.nodeID, fmtBytes(g.avail.Load()), g.dir, fmtBytes(g.min))
	}
	if v := c.view.Load(); v != nil {
		for _, m := range v.lowSpace {
			return fmt.Errorf("%w: node %d has %s free, under its cluster.min_free_bytes; writes are refused until space is freed there",
				ErrNoSpace, m.id, fmtBytes(m.avail))
		}
	}
	return nil
}

// spaceRefusal is spaceErr for a write of b: nil if b only deletes.
func (c *Cluster) spaceRefusal(b *lsm.Batch) error {
	err := c.spaceErr()
	if err == nil {
		return nil
	}
	errPut := errors.New("put")
	if b.Each(func(del bool, _, _ []byte) error {
		if !del {
			return errPut
		}
		return nil
	}) == nil {
		return nil
	}
	return err
}

// fmtBytes renders n for an operator: "12.3MiB".
func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n), -1
	for f >= unit && i < 3 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f%ciB", f, "KMGT"[i])
}
