package cluster

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
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

// regNode is a node as the register clients see it: one in this process
// (localNode) or in a child process (*child). A put whose outcome is
// unknown fails with an error that wraps store.ErrTimeout; a get of an
// absent key fails with store.ErrNotFound.
type regNode interface {
	put(key, value string) error
	get(key string) (string, error)
}

// localNode is a node of this process as a regNode.
type localNode struct{ c *Cluster }

func (n localNode) put(key, value string) error    { return put(n.c, key, value) }
func (n localNode) get(key string) (string, error) { return get(n.c, key) }

// liveNodes is what the register clients talk to: the current incarnation
// of every node, nil while it is down. The fault schedule swaps them
// (online, offline); over a testCluster (tc set) stop and start do both.
type liveNodes struct {
	tc     *testCluster // nil for child-process nodes
	slots  []atomic.Pointer[incarnation]
	starts []atomic.Int64
}

// incarnation is one run of a node.
type incarnation struct {
	node  regNode
	epoch int64 // restarts before this one
}

func newLiveNodes(n int) *liveNodes {
	return &liveNodes{slots: make([]atomic.Pointer[incarnation], n), starts: make([]atomic.Int64, n)}
}

// liveCluster returns the liveNodes of tc's nodes, all running.
func liveCluster(tc *testCluster) *liveNodes {
	l := newLiveNodes(len(tc.nodes))
	l.tc = tc
	for i, n := range tc.nodes {
		l.online(i, localNode{n})
	}
	return l
}

func (l *liveNodes) at(i int) *incarnation { return l.slots[i].Load() }

func (l *liveNodes) offline(i int) { l.slots[i].Store(nil) }

func (l *liveNodes) online(i int, n regNode) {
	l.slots[i].Store(&incarnation{node: n, epoch: l.starts[i].Add(1) - 1})
}

// running returns the nodes that are up.
func (l *liveNodes) running() []regNode {
	var ns []regNode
	for i := range l.slots {
		if in := l.at(i); in != nil {
			ns = append(ns, in.node)
		}
	}
	return ns
}

func (l *liveNodes) stop(i int) {
	l.offline(i)
	l.tc.stop(i)
}

func (l *liveNodes) start(i int) {
	l.tc.start(i)
	l.online(i, localNode{l.tc.nodes[i]})
}

// registerClients runs clients against the nodes of a cluster, each a
// goroutine doing random puts of unique values and gets on a few keys,
// recording a porcupine history. A client follows its node (client c uses
// node c%nodes) across restarts, waiting while it is down. A write that
// failed with "outcome unknown" may take effect at any later time (its
// return is open-ended); any other failed write must not have taken effect
// (the protocol's promise), so it is left out; failed reads are left out.
// As many writes again go to keys of their own, so that checkOwnKeys can
// check that promise directly: a failed write's key must stay absent, an
// acknowledged one's present (a register history only catches a wrongly
// failed write when some read happens to see its value).
type registerClients struct {
	base time.Time
	done chan struct{}
	wg   sync.WaitGroup

	mu         sync.Mutex
	history    []porcupine.Operation
	info       []opInfo // parallel to history
	events     []string // the fault schedule (see event)
	unknown    int
	failed     map[string]int // by error, writes and reads
	uniqAcked  []string
	uniqFailed map[string]string // key -> error
}

// opInfo annotates a history entry for failure dumps.
type opInfo struct {
	node  int
	epoch int64
	err   string // of a write of unknown outcome
}

// startRegisterClients starts n clients on the nodes of ln.
func startRegisterClients(ln *liveNodes, n int, keys []string) *registerClients {
	rc := &registerClients{base: time.Now(), done: make(chan struct{}), failed: map[string]int{}, uniqFailed: map[string]string{}}
	for c := range n {
		rc.wg.Add(1)
		go func() {
			defer rc.wg.Done()
			ni := c % len(ln.slots)
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for seq := 0; ; seq++ {
				select {
				case <-rc.done:
					return
				default:
				}
				in := ln.at(ni)
				if in == nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				at := opInfo{node: ni, epoch: in.epoch}
				var err error
				switch key := keys[rng.IntN(len(keys))]; rng.IntN(4) {
				case 0:
					err = rc.ownKeyPut(in.node, fmt.Sprintf("u/%d/%d", c, seq), at)
				case 1:
					err = rc.registerPut(in.node, c, key, fmt.Sprintf("c%d-%d", c, seq), at)
				default:
					err = rc.registerGet(in.node, c, key, at)
				}
				if err != nil && !errors.Is(err, store.ErrTimeout) {
					// As a client backs off: a shard without a leader
					// fails requests at once, and a client retrying in a
					// tight loop only grows the history to check.
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	return rc
}

func (rc *registerClients) ownKeyPut(n regNode, key string, at opInfo) error {
	err := n.put(key, "x")
	rc.mu.Lock()
	defer rc.mu.Unlock()
	switch {
	case err == nil:
		rc.uniqAcked = append(rc.uniqAcked, key)
	case errors.Is(err, store.ErrTimeout):
		rc.unknown++
	default:
		rc.uniqFailed[key] = fmt.Sprintf("%s (node %d epoch %d)", err, at.node+1, at.epoch)
		rc.failed[err.Error()]++
	}
	return err
}

func (rc *registerClients) registerPut(n regNode, client int, key, val string, at opInfo) error {
	call := rc.now()
	err := n.put(key, val)
	ret := rc.now()
	switch {
	case err == nil:
	case errors.Is(err, store.ErrTimeout):
		ret = math.MaxInt64
		at.err = err.Error()
		rc.mu.Lock()
		rc.unknown++
		rc.mu.Unlock()
	default:
		rc.fail(err)
		return err // definitely not applied
	}
	rc.record(porcupine.Operation{ClientId: client, Input: regInput{put: true, key: key, value: val}, Call: call, Output: regOutput{}, Return: ret}, at)
	return err
}

func (rc *registerClients) registerGet(n regNode, client int, key string, at opInfo) error {
	call := rc.now()
	v, err := n.get(key)
	ret := rc.now()
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		rc.fail(err)
		return err
	}
	if err != nil {
		v = ""
	}
	rc.record(porcupine.Operation{ClientId: client, Input: regInput{key: key}, Call: call, Output: regOutput{value: v}, Return: ret}, at)
	return nil
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

func (rc *registerClients) record(op porcupine.Operation, at opInfo) {
	rc.mu.Lock()
	rc.history = append(rc.history, op)
	rc.info = append(rc.info, at)
	rc.mu.Unlock()
}

func (rc *registerClients) fail(err error) {
	rc.mu.Lock()
	rc.failed[err.Error()]++
	rc.mu.Unlock()
}

// event logs a step of the fault schedule and keeps it, in the clients'
// time, for the dump of a key that fails the check.
func (rc *registerClients) event(t testing.TB, format string, args ...any) {
	t.Helper()
	at := time.Since(rc.base).Seconds()
	msg := fmt.Sprintf(format, args...)
	rc.mu.Lock()
	rc.events = append(rc.events, fmt.Sprintf("  %.3f %s\n", at, msg))
	rc.mu.Unlock()
	t.Logf("%.3f fault: %s", at, msg)
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

// stopAndCheck stops the clients and checks the history key by key (an
// inconclusive check fails too: an illegal history is the one whose
// search runs long), dumping the operations of a key that fails, and the
// own keys through every node of nodes.
func (rc *registerClients) stopAndCheck(t *testing.T, minOps int, nodes []regNode) {
	t.Helper()
	close(rc.done)
	rc.wg.Wait()
	puts, unknownPuts, restarted := 0, 0, 0
	byKey := map[string][]int{}
	for i, op := range rc.history {
		in := op.Input.(regInput)
		byKey[in.key] = append(byKey[in.key], i)
		if in.put {
			puts++
			if op.Return == math.MaxInt64 {
				unknownPuts++
			}
		}
		if rc.info[i].epoch > 0 {
			restarted++
		}
	}
	t.Logf("%d register operations (%d puts, %d of unknown outcome; %d through restarted nodes), %d writes with unknown outcome in all, failures: %v; own-key writes: %d acknowledged, %d failed",
		len(rc.history), puts, unknownPuts, restarted, rc.unknown, rc.failed, len(rc.uniqAcked), len(rc.uniqFailed))
	if len(rc.history) < minOps {
		t.Errorf("only %d operations completed", len(rc.history))
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bad := 0
	for _, k := range keys {
		ops := make([]porcupine.Operation, 0, len(byKey[k]))
		for _, i := range byKey[k] {
			ops = append(ops, rc.history[i])
		}
		res := porcupine.CheckOperationsTimeout(registerModel, ops, 60*time.Second)
		if res == porcupine.Ok {
			continue
		}
		bad++
		t.Errorf("key %s: %d ops, check result %v (Illegal: not linearizable; Unknown: the check timed out)", k, len(ops), res)
		if bad <= 2 {
			rc.dump(t, byKey[k])
		}
	}
	rc.checkOwnKeys(t, nodes)
}

// dump logs the operations idx of the history in call order, and the
// fault schedule.
func (rc *registerClients) dump(t *testing.T, idx []int) {
	sort.Slice(idx, func(a, b int) bool { return rc.history[idx[a]].Call < rc.history[idx[b]].Call })
	var sb strings.Builder
	for _, i := range idx {
		op, in := rc.history[i], rc.info[i]
		ret := "inf"
		if op.Return != math.MaxInt64 {
			ret = fmt.Sprintf("%.3f", float64(op.Return)/1e9)
		}
		fmt.Fprintf(&sb, "  [%.3f, %s] client %2d node %d/e%d %s %s\n", float64(op.Call)/1e9, ret, op.ClientId, in.node+1, in.epoch,
			registerModel.DescribeOperation(op.Input, op.Output), in.err)
	}
	t.Logf("ops:\n%s", sb.String())
	t.Logf("faults:\n%s", strings.Join(rc.events, ""))
}

// checkOwnKeys reads every own key through every node of nodes: an
// acknowledged write must be present, a failed one absent.
func (rc *registerClients) checkOwnKeys(t *testing.T, nodes []regNode) {
	t.Helper()
	type check struct{ key, werr string } // werr "": acknowledged
	var checks []check
	for _, k := range rc.uniqAcked {
		checks = append(checks, check{k, ""})
	}
	for k, werr := range rc.uniqFailed {
		checks = append(checks, check{k, werr})
	}
	for ni, n := range nodes {
		var missing, present atomic.Int64
		deadline := time.Now().Add(time.Minute)
		parallel(len(checks), 8, func(i int) {
			c := checks[i]
			v, err := readBack(n, c.key, deadline)
			switch {
			case c.werr == "" && (err != nil || v != "x"):
				if missing.Add(1) <= 5 {
					t.Errorf("via node %d: acknowledged write of %s reads %q, %v", ni+1, c.key, v, err)
				}
			case c.werr != "" && !errors.Is(err, store.ErrNotFound):
				if present.Add(1) <= 5 {
					t.Errorf("via node %d: write of %s failed (%s), yet it reads as %q, %v", ni+1, c.key, c.werr, v, err)
				}
			}
		})
		if missing.Load()+present.Load() > 0 {
			t.Errorf("via node %d: %d acknowledged own-key writes missing, %d failed ones present", ni+1, missing.Load(), present.Load())
		}
	}
}

// readBack reads key through n for a check, retrying until deadline while
// the read fails with anything but not-found: the cluster is idle by then,
// but a read can still time out on a loaded machine.
func readBack(n regNode, key string, deadline time.Time) (string, error) {
	for {
		v, err := n.get(key)
		if err == nil || errors.Is(err, store.ErrNotFound) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parallel calls f(0..n-1) on up to workers goroutines and waits for them.
func parallel(n, workers int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// TestLinearizable runs concurrent clients against every node while the
// leader of one shard is stopped part way, and checks the history with
// porcupine.
func TestLinearizable(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	victim := tc.leaderOf(tc.nodes[0], 1)
	ln := liveCluster(tc)
	rc := startRegisterClients(ln, 9, []string{"a", "b", "c", "d", "e", "f"})
	time.Sleep(600 * time.Millisecond)
	rc.event(t, "stop node %d (leader of shard 1)", victim+1)
	ln.stop(victim)
	// Run for at least a second more and until enough operations are in
	// (a loaded machine is slower), within reason.
	minEnd, maxEnd := time.Now().Add(time.Second), time.Now().Add(8*time.Second)
	for {
		if now := time.Now(); now.After(maxEnd) || now.After(minEnd) && rc.ops() >= 600 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rc.stopAndCheck(t, 100, ln.running())
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
	ln := liveCluster(tc)
	rc := startRegisterClients(ln, 12, registerKeys(24))
	// phase runs fault, waits, heals, and then waits for leaders on every
	// node. It returns the window (in rc.now time) in which the fault was
	// in force, less the first settle (for the re-election).
	const settle = 1500 * time.Millisecond
	phase := func(name string, d time.Duration, fault func()) (from, to int64) {
		rc.event(t, "%s", name)
		fault()
		from = rc.now() + int64(settle)
		time.Sleep(d)
		to = rc.now()
		rc.event(t, "heal")
		tc.heal()
		tc.waitLeaders(tc.nodes...)
		return from, to
	}
	time.Sleep(500 * time.Millisecond)

	victim := tc.leaderOf(tc.nodes[0], 1)
	from, to := phase(fmt.Sprintf("node %d isolated", victim+1), 3*time.Second, func() {
		tc.partition([]int{victim}, others(nodes, victim))
	})
	for _, i := range others(nodes, victim) {
		if n := rc.completedBy(i, nodes, from, to); n == 0 {
			t.Errorf("node %d (majority side) completed nothing while node %d was isolated", i+1, victim+1)
		}
	}

	// Longer than the isolation above: the victim must first notice it
	// hears nothing (check quorum) before its followers, which still hear
	// it, time out and elect; under a loaded CI run that took the whole of
	// a 3 s fault once.
	victim = tc.leaderOf(tc.nodes[0], 1)
	from, to = phase(fmt.Sprintf("node %d hears nothing", victim+1), 5*time.Second, func() {
		for _, j := range others(nodes, victim) {
			tc.cutOneWay(j, victim)
		}
	})
	for _, i := range others(nodes, victim) {
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
	rc.stopAndCheck(t, 200, ln.running())
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
	ln := liveCluster(tc)
	rc := startRegisterClients(ln, 12, registerKeys(24))
	step := func(name string, fault func()) {
		rc.event(t, "%s", name)
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
	rc.stopAndCheck(t, 200, ln.running())
}
