package cluster

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/kvstore/kv/store"
)

type regInput struct {
	put   bool
	key   string
	value string
}

type regOutput struct {
	value string // "" = not found
}

// registerModel is a map of registers, checked one key at a time.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		var parts [][]porcupine.Operation
		for _, ops := range byKey {
			parts = append(parts, ops)
		}
		return parts
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(regInput)
		if in.put {
			return true, in.value
		}
		return output.(regOutput).value == state.(string), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(regInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output.(regOutput).value)
	},
}

// registerClients runs clients against the nodes of a cluster, each a
// goroutine doing random puts of unique values and gets on a few keys,
// recording a porcupine history. A write that failed with "outcome
// unknown" may take effect at any later time (its return is open-ended);
// any other failed write must not have taken effect (the protocol's
// promise), so it is left out; failed reads are left out. As many writes
// again go to keys of their own, so that checkUnique can check
// that promise directly: a failed write's key must stay absent, an
// acknowledged one's present (a register history only catches a wrongly
// failed write when some read happens to see its value).
type registerClients struct {
	base time.Time
	done chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	history    []porcupine.Operation
	unknown    int
	failed     map[string]int // by error, writes and reads
	uniqAcked  []string
	uniqFailed map[string]string // key -> error
}

// startRegisterClients starts n clients; client c uses node c%nodes, as
// node(i) returns it at each operation (nil: the node is down; the client
// waits for it).
func startRegisterClients(nodes, n int, keys []string, node func(i int) *Cluster) *registerClients {
	rc := &registerClients{base: time.Now(), done: make(chan struct{}), failed: map[string]int{}, uniqFailed: map[string]string{}}
	for c := range n {
		rc.wg.Add(1)
		go func() {
			defer rc.wg.Done()
			ni := c % nodes
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for seq := 0; ; seq++ {
				select {
				case <-rc.done:
					return
				default:
				}
				node := node(ni)
				if node == nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				key := keys[rng.IntN(len(keys))]
				op := rng.IntN(4)
				if op == 0 {
					ukey := fmt.Sprintf("u/%d/%d", c, seq)
					err := put(node, ukey, "x")
					rc.mu.Lock()
					switch {
					case err == nil:
						rc.uniqAcked = append(rc.uniqAcked, ukey)
					case errors.Is(err, store.ErrTimeout):
						rc.unknown++
					default:
						rc.uniqFailed[ukey] = err.Error()
					}
					rc.mu.Unlock()
					continue
				}
				if op == 1 {
					val := fmt.Sprintf("c%d-%d", c, seq)
					call := rc.now()
					err := put(node, key, val)
					ret := rc.now()
					switch {
					case err == nil:
					case errors.Is(err, store.ErrTimeout):
						ret = math.MaxInt64
						rc.mu.Lock()
						rc.unknown++
						rc.mu.Unlock()
					default:
						rc.fail(err)
						continue // definitely not applied
					}
					rc.record(porcupine.Operation{ClientId: c, Input: regInput{put: true, key: key, value: val}, Call: call, Output: regOutput{}, Return: ret})
					continue
				}
				call := rc.now()
				v, err := get(node, key)
				ret := rc.now()
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					rc.fail(err)
					continue
				}
				rc.record(porcupine.Operation{ClientId: c, Input: regInput{key: key}, Call: call, Output: regOutput{value: v}, Return: ret})
			}
		}()
	}
	return rc
}

func (rc *registerClients) now() int64 { return int64(time.Since(rc.base)) }

// registerKeys returns n key names. More keys means fewer writes of
// unknown outcome per key, which keeps the checker's search short.
func registerKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("r%02d", i)
	}
	return keys
}

func (rc *registerClients) record(op porcupine.Operation) {
	rc.mu.Lock()
	rc.history = append(rc.history, op)
	rc.mu.Unlock()
}

func (rc *registerClients) fail(err error) {
	rc.mu.Lock()
	rc.failed[err.Error()]++
	rc.mu.Unlock()
}

func (rc *registerClients) ops() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.history)
}

// completedBy counts the operations of clients on node that completed
// (were answered, not left unknown) and were called between from and to,
// the instants given by now.
func (rc *registerClients) completedBy(node, nodes int, from, to int64) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, op := range rc.history {
		if op.ClientId%nodes == node && op.Return != math.MaxInt64 && op.Call >= from && op.Call <= to {
			n++
		}
	}
	return n
}

// stopAndCheck stops the clients, checks the history (an inconclusive
// check fails too: an illegal history is the one whose search runs long),
// and checks the unique keys through node.
func (rc *registerClients) stopAndCheck(t *testing.T, minOps int, node *Cluster) {
	t.Helper()
	close(rc.done)
	rc.wg.Wait()
	t.Logf("%d operations, %d writes with unknown outcome, failures: %v; own-key writes: %d acknowledged, %d failed",
		len(rc.history), rc.unknown, rc.failed, len(rc.uniqAcked), len(rc.uniqFailed))
	if len(rc.history) < minOps {
		t.Fatalf("only %d operations completed", len(rc.history))
	}
	switch porcupine.CheckOperationsTimeout(registerModel, rc.history, 60*time.Second) {
	case porcupine.Illegal:
		t.Fatal("history is not linearizable")
	case porcupine.Unknown:
		t.Fatal("linearizability check timed out: inconclusive")
	}
	for _, k := range rc.uniqAcked {
		if v, err := get(node, k); err != nil || v != "x" {
			t.Fatalf("acknowledged write of %s reads %q, %v", k, v, err)
		}
	}
	for k, werr := range rc.uniqFailed {
		if _, err := get(node, k); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("write of %s failed (%s), yet it reads as %v", k, werr, err)
		}
	}
}

// TestLinearizable runs concurrent clients against every node while the
// leader of one shard is stopped part way, and checks the history with
// porcupine.
func TestLinearizable(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	victim := tc.leaderOf(tc.nodes[0], 1)
	stopAt := time.Now().Add(600 * time.Millisecond)
	nodes := append([]*Cluster(nil), tc.nodes...)
	rc := startRegisterClients(3, 9, []string{"a", "b", "c", "d", "e", "f"}, func(i int) *Cluster {
		if i == victim && !time.Now().Before(stopAt) {
			return nil // its node is gone
		}
		return nodes[i]
	})
	time.Sleep(time.Until(stopAt))
	tc.stop(victim)
	// Run for at least a second more and until enough operations are in
	// (a loaded machine is slower), within reason.
	minEnd, maxEnd := time.Now().Add(time.Second), time.Now().Add(8*time.Second)
	for {
		if now := time.Now(); now.After(maxEnd) || now.After(minEnd) && rc.ops() >= 600 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rc.stopAndCheck(t, 100, tc.nodes[(victim+1)%3])
}

// TestLinearizableUnderPartitions runs concurrent clients against every
// node through network partitions of the raft links (the nodes and their
// clients stay up) and checks the history with porcupine, and that the
// majority side keeps serving during each partition and every node serves
// again after it heals:
//   - the leader of shard 1 cut off from both peers (it must step down:
//     check quorum), while clients of its node keep sending to it;
//   - a one-way partition: the new leader of shard 1 still sends to its
//     peers but hears nothing back;
//   - every node cut from every other (no quorum anywhere): every request
//     fails or ends with unknown outcome.
func TestLinearizableUnderPartitions(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2, requestTimeout: 2 * time.Second})
	const nodes = 3
	fixed := append([]*Cluster(nil), tc.nodes...)
	rc := startRegisterClients(nodes, 12, registerKeys(24), func(i int) *Cluster { return fixed[i] })
	others := func(i int) []int {
		var o []int
		for j := range nodes {
			if j != i {
				o = append(o, j)
			}
		}
		return o
	}
	// phase runs fault, waits, heals, and then waits for leaders on every
	// node. It returns the window (in rc.now time) in which the fault was
	// in force, less the first settle (for the re-election).
	const settle = 1500 * time.Millisecond
	phase := func(name string, d time.Duration, fault func()) (from, to int64) {
		t.Logf("fault: %s", name)
		fault()
		from = rc.now() + int64(settle)
		time.Sleep(d)
		to = rc.now()
		tc.heal()
		tc.waitLeaders(tc.nodes...)
		return from, to
	}
	time.Sleep(500 * time.Millisecond)

	victim := tc.leaderOf(tc.nodes[0], 1)
	from, to := phase(fmt.Sprintf("node %d isolated", victim+1), 3*time.Second, func() {
		tc.partition([]int{victim}, others(victim))
	})
	for _, i := range others(victim) {
		if n := rc.completedBy(i, nodes, from, to); n == 0 {
			t.Errorf("node %d (majority side) completed nothing while node %d was isolated", i+1, victim+1)
		}
	}

	victim = tc.leaderOf(tc.nodes[0], 1)
	from, to = phase(fmt.Sprintf("node %d hears nothing", victim+1), 3*time.Second, func() {
		for _, j := range others(victim) {
			tc.cutOneWay(j, victim)
		}
	})
	for _, i := range others(victim) {
		if n := rc.completedBy(i, nodes, from, to); n == 0 {
			t.Errorf("node %d completed nothing while node %d heard nothing", i+1, victim+1)
		}
	}

	phase("every node isolated", 2*time.Second, func() {
		tc.partition([]int{0}, []int{1}, []int{2})
	})

	// Dragonboat waits 0.5-1.5 s before redialing a peer it failed to
	// reach (its circuit breaker), and a client may be in a request that
	// started before the heal until that request's timeout: give both time.
	healed := rc.now()
	time.Sleep(3 * time.Second)
	for i := range nodes {
		if n := rc.completedBy(i, nodes, healed, rc.now()); n == 0 {
			t.Errorf("node %d completed nothing after the partitions healed", i+1)
		}
	}
	rc.stopAndCheck(t, 200, tc.nodes[0])
}

// liveNodes lets register clients follow the nodes of a test cluster
// through restarts: a stopped node reads as nil until it is back.
type liveNodes struct {
	tc   *testCluster
	ptrs []atomic.Pointer[Cluster]
}

func newLiveNodes(tc *testCluster) *liveNodes {
	l := &liveNodes{tc: tc, ptrs: make([]atomic.Pointer[Cluster], len(tc.nodes))}
	for i, n := range tc.nodes {
		l.ptrs[i].Store(n)
	}
	return l
}

func (l *liveNodes) get(i int) *Cluster { return l.ptrs[i].Load() }

func (l *liveNodes) stop(i int) {
	l.ptrs[i].Store(nil)
	l.tc.stop(i)
}

func (l *liveNodes) start(i int) {
	l.tc.start(i)
	l.ptrs[i].Store(l.tc.nodes[i])
}

// TestLinearizableUnderRestarts runs the register clients while nodes
// stop and restart on their data directories: the leader of a shard, a
// follower, two nodes at once (no quorum until they are back), then the
// whole cluster. Requests in flight on a stopping node end with a failure
// or an unknown outcome; with short timeouts and frequent snapshots the
// restarted nodes catch up from the log or a snapshot. The history must be
// linearizable, every acknowledged write present, every failed one absent.
func TestLinearizableUnderRestarts(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2, requestTimeout: time.Second, snapshotEntries: 20})
	ln := newLiveNodes(tc)
	rc := startRegisterClients(len(tc.nodes), 12, registerKeys(24), ln.get)
	step := func(name string, fault func()) {
		t.Logf("fault: %s", name)
		fault()
		tc.waitLeaders(tc.live()...)
		time.Sleep(700 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	leader := tc.leaderOf(tc.nodes[0], 1)
	step(fmt.Sprintf("node %d (leader of shard 1) restarted", leader+1), func() {
		ln.stop(leader)
		time.Sleep(300 * time.Millisecond)
		ln.start(leader)
	})
	follower := (tc.leaderOf(tc.nodes[0], 1) + 1) % 3
	step(fmt.Sprintf("node %d (a follower of shard 1) restarted", follower+1), func() {
		ln.stop(follower)
		time.Sleep(300 * time.Millisecond)
		ln.start(follower)
	})
	step("nodes 1 and 2 down at once, then back", func() {
		ln.stop(0)
		ln.stop(1)
		time.Sleep(time.Second)
		ln.start(1)
		ln.start(0)
	})
	step("whole cluster restarted", func() {
		for i := range tc.nodes {
			ln.stop(i)
		}
		for i := range tc.nodes {
			ln.start(i)
		}
	})
	rc.stopAndCheck(t, 200, tc.nodes[0])
}
