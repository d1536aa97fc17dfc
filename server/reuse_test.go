package server

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kv/lsm"
)

// guardStore checks, from the store's side, that the server keeps the
// batch-ownership contract of store.Store.Write while it reuses write
// groups: a batch is never handed to Write while an earlier Write of it is
// still the store's, and its bytes do not change until done is called.
type guardStore struct {
	*slowStore
	mu       sync.Mutex
	inflight map[*lsm.Batch]bool
	seen     map[*lsm.Batch]int
	errs     []string
}

func (g *guardStore) fail(f string, a ...any) {
	g.mu.Lock()
	g.errs = append(g.errs, fmt.Sprintf(f, a...))
	g.mu.Unlock()
}

func (g *guardStore) Write(b *lsm.Batch, done func(error)) {
	g.mu.Lock()
	if g.inflight[b] {
		g.errs = append(g.errs, fmt.Sprintf("batch %p written again while in flight", b))
	}
	g.inflight[b] = true
	g.seen[b]++
	g.mu.Unlock()
	snap := bytes.Clone(b.Repr())
	g.slowStore.Write(b, func(err error) {
		time.Sleep(time.Duration(len(snap)%50) * time.Microsecond)
		if !bytes.Equal(snap, b.Repr()) {
			g.fail("batch %p changed while the store owned it", b)
		}
		g.mu.Lock()
		delete(g.inflight, b)
		g.mu.Unlock()
		done(err)
	})
}

// TestReusedBatchesAreNeverSharedWithTheStore: with inline, asynchronous
// and mixed completions, pipelined and bursty clients, batches are reused
// (the point of the change) and never while the store still owns them;
// the clients' models check every reply.
func TestReusedBatchesAreNeverSharedWithTheStore(t *testing.T) {
	for name, newStore := range orderingStores() {
		for _, model := range []struct {
			name  string
			check func(string, int) error
		}{{"pipelined", checkPipelinedModel}, {"burst", checkBurstModel}} {
			t.Run(name+"/"+model.name, func(t *testing.T) {
				g := &guardStore{slowStore: newStore(), inflight: map[*lsm.Batch]bool{}, seen: map[*lsm.Batch]int{}}
				runClients(t, startTestServer(t, g, nil), model.check)
				g.mu.Lock()
				defer g.mu.Unlock()
				for _, e := range g.errs {
					t.Error(e)
				}
				reused := 0
				for _, n := range g.seen {
					if n > 1 {
						reused++
					}
				}
				t.Logf("%d batches, %d reused", len(g.seen), reused)
				if reused == 0 {
					t.Error("no batch was reused")
				}
			})
		}
	}
}
