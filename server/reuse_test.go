package server

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
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

func newGuardStore(s *slowStore) *guardStore {
	return &guardStore{slowStore: s, inflight: map[*lsm.Batch]bool{}, seen: map[*lsm.Batch]int{}}
}

// check reports every breach of the contract seen, and returns how many
// writes the store was given and how many of their batches were
// distinct and reused. Call it once the clients are done.
func (g *guardStore) check(t *testing.T) (writes, batches, reused int) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.errs {
		t.Error(e)
	}
	for _, n := range g.seen {
		writes += n
		if n > 1 {
			reused++
		}
	}
	return writes, len(g.seen), reused
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
				g := newGuardStore(newStore())
				runClients(t, startTestServer(t, g, nil), model.check)
				_, batches, reused := g.check(t)
				t.Logf("%d batches, %d reused", batches, reused)
				if reused == 0 {
					t.Error("no batch was reused")
				}
			})
		}
	}
}

// checkEnginePipelined sends 200 pipelined bursts of up to 300 PUTs (values
// up to 3 KB, so some groups outgrow what a connection keeps), DELETEs and
// GETs of its own keys, and checks every reply against its model.
func checkEnginePipelined(addr string, c int) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	rng := rand.New(rand.NewSource(int64(c)))
	data := map[string]string{}
	r := bufio.NewReader(conn)
	_ = conn.SetDeadline(time.Now().Add(workloadDeadline))
	for round := 0; round < 200; round++ {
		var req strings.Builder
		var want []string
		for i := 0; i < 1+rng.Intn(300); i++ {
			k := fmt.Sprintf("c%d-k%d", c, rng.Intn(50))
			switch rng.Intn(5) {
			case 0, 1, 2:
				v := fmt.Sprintf("%d-%d-%s", round, i, strings.Repeat("x", rng.Intn(3000)))
				fmt.Fprintf(&req, "PUT|%s|%s\n", k, v)
				data[k] = v
				want = append(want, "OK")
			case 3:
				fmt.Fprintf(&req, "DELETE|%s\n", k)
				delete(data, k)
				want = append(want, "OK")
			default:
				fmt.Fprintf(&req, "GET|%s\n", k)
				if v, ok := data[k]; ok {
					want = append(want, "VALUE|"+v)
				} else {
					want = append(want, "NOT_FOUND")
				}
			}
		}
		errc := make(chan error, 1)
		go func() { _, err := conn.Write([]byte(req.String())); errc <- err }()
		for j, w := range want {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("conn %d round %d reply %d: %v", c, round, j, err)
			}
			if got := strings.TrimSuffix(line, "\n"); got != w {
				return fmt.Errorf("conn %d round %d reply %d: got %.60q want %.60q", c, round, j, got, w)
			}
		}
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}

// TestReusedBatchesOnTheEngine: the same reuse on a real engine, whose
// small memtables rotate often, in each sync mode (inline commits with
// none and batch, the committer with always).
func TestReusedBatchesOnTheEngine(t *testing.T) {
	for _, sync := range []lsm.SyncMode{lsm.SyncNone, lsm.SyncBatch, lsm.SyncAlways} {
		t.Run(fmt.Sprint(sync), func(t *testing.T) {
			db, err := lsm.Open(t.TempDir(), lsm.Options{Sync: sync, MemtableBytes: 256 << 10, SyncInterval: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			st := store.NewLocal(db, "x")
			t.Cleanup(func() {
				if err := st.Close(); err != nil {
					t.Error(err)
				}
			})
			runClients(t, startTestServer(t, st, nil), checkEnginePipelined)
		})
	}
}

// TestDirectlyAnsweredGroupsAreReused: unpipelined writes on an
// asynchronous store are nearly all answered by their completion
// (tryDirect), whose group no connection keeps; it goes back to the
// server's pool, so the writes share a few batches instead of allocating
// one each, and the guard checks none is handed out while the store owns it.
func TestDirectlyAnsweredGroupsAreReused(t *testing.T) {
	g := newGuardStore(newSlowStore())
	m := NewMetrics(nil)
	const puts = 300
	runClients(t, startTestServerWith(t, g, nil, m), func(addr string, c int) error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(workloadDeadline))
		r := bufio.NewReader(conn)
		for i := 0; i < puts; i++ {
			fmt.Fprintf(conn, "PUT|c%d|%d\n", c, i)
			if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
				return fmt.Errorf("conn %d put %d: %q %v", c, i, line, err)
			}
		}
		fmt.Fprintf(conn, "GET|c%d\n", c)
		if line, err := r.ReadString('\n'); err != nil || line != fmt.Sprintf("VALUE|%d\n", puts-1) {
			return fmt.Errorf("conn %d: last value %q %v", c, line, err)
		}
		return nil
	})
	writes, batches, _ := g.check(t)
	t.Logf("%d writes in %d batches, %d answered directly", writes, batches, m.directReplies())
	if int(m.directReplies()) < writes/2 {
		t.Fatalf("%d of %d writes answered directly: the test does not exercise tryDirect", m.directReplies(), writes)
	}
	// Under the race detector sync.Pool drops a quarter of what it is
	// given (a quarter of the writes then start a new batch); without the
	// pool nearly every write does.
	if batches > writes/2 {
		t.Errorf("%d writes used %d batches: directly answered groups are not reused", writes, batches)
	}
}
