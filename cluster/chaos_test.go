package cluster

// The chaos tests run the register workload (registerClients) while a
// random fault schedule restarts nodes, cuts raft links and makes nodes
// flap, then check the history (linearizable), the own keys (acknowledged
// writes present, failed ones absent, through every node) and that every
// replica of every shard converged to the same state.
//
// By default each test runs a short schedule, so that the package stays
// within CI's time; the first steps of a schedule go through the test's
// fault kinds from a seed-chosen one on, so that successive runs cover all
// of them. For longer runs by hand, set (all optional):
//
//	KV_CHAOS_SECONDS     length of the fault schedule of each test (default 8)
//	KV_CHAOS_SEED        seed of the schedule (default: from the clock; logged)
//	KV_CHAOS_TIMEOUT_MS  request timeout (default: the test's own)
//	KV_CHAOS_SNAP        snapshot_entries (default: the test's own)
//	KV_CHAOS_SHARDS      shards (default 2; the kill -9 test always runs 4)
//	KV_CHAOS_CLIENTS     register clients (default 12)
//	KV_CHAOS_KEYS        register keys (default 48)
//	KV_SNAPREC_ROUNDS    rounds of TestSnapshotRecoveryInterrupted (default 2)
//
// These apply to TestChaosRestarts*, TestKill9Linearizable and (the last)
// TestSnapshotRecoveryInterrupted, e.g.
//
//	KV_CHAOS_SECONDS=60 go test -race -count=1 -run 'Chaos|Kill9Linearizable' ./cluster/

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chaosEnv returns the integer in the environment variable name, or def.
func chaosEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// chaosSeed returns the seed of a fault schedule, and logs it.
func chaosSeed(t *testing.T) uint64 {
	seed := uint64(chaosEnv("KV_CHAOS_SEED", int(time.Now().UnixNano()%1e6)))
	t.Logf("seed %d (KV_CHAOS_SEED=%d repeats the schedule)", seed, seed)
	return seed
}

// chaos drives the fault schedule of one test.
type chaos struct {
	t      *testing.T
	tc     *testCluster
	ln     *liveNodes
	rc     *registerClients // for its event log
	rng    *rand.Rand
	shards int
}

func (ch *chaos) stop(i int) {
	ch.rc.event(ch.t, "stop node %d", i+1)
	ch.ln.stop(i)
}

func (ch *chaos) start(i int) {
	ch.rc.event(ch.t, "start node %d", i+1)
	ch.ln.start(i)
}

func (ch *chaos) sleep(lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(ch.rng.Int64N(int64(hi-lo)+1)))
}

// leader returns the leader of a random shard as seen by a running node,
// or a random node when none is known.
func (ch *chaos) leader() int {
	shard := uint64(1 + ch.rng.IntN(ch.shards))
	for _, n := range ch.tc.live() {
		if id, _, ok, err := n.nh.GetLeaderID(shard); err == nil && ok && id >= 1 && int(id) <= len(ch.tc.nodes) && ch.tc.nodes[id-1] != nil {
			return int(id - 1)
		}
	}
	return ch.rng.IntN(len(ch.tc.nodes))
}

func (ch *chaos) other(not ...int) int {
	for {
		i := ch.rng.IntN(len(ch.tc.nodes))
		ok := true
		for _, n := range not {
			ok = ok && i != n
		}
		if ok {
			return i
		}
	}
}

func (ch *chaos) step(kind int) {
	n := len(ch.tc.nodes)
	switch kind {
	case 0: // restart a leader
		l := ch.leader()
		ch.rc.event(ch.t, "-- restart leader %d", l+1)
		ch.stop(l)
		ch.sleep(200*time.Millisecond, 1500*time.Millisecond)
		ch.start(l)
	case 1: // restart a follower
		l := ch.leader()
		f := ch.other(l)
		ch.rc.event(ch.t, "-- restart follower %d", f+1)
		ch.stop(f)
		ch.sleep(100*time.Millisecond, 1200*time.Millisecond)
		ch.start(f)
	case 2: // two in a row: quorum lost for a while
		a := ch.leader()
		b := ch.other(a)
		ch.rc.event(ch.t, "-- stop %d then %d (no quorum)", a+1, b+1)
		ch.stop(a)
		ch.sleep(50*time.Millisecond, 800*time.Millisecond)
		ch.stop(b)
		ch.sleep(100*time.Millisecond, 1000*time.Millisecond)
		if ch.rng.IntN(2) == 0 {
			ch.start(a)
			ch.sleep(0, 500*time.Millisecond)
			ch.start(b)
		} else {
			ch.start(b)
			ch.sleep(0, 500*time.Millisecond)
			ch.start(a)
		}
	case 3: // the whole cluster
		ch.rc.event(ch.t, "-- restart all")
		order := ch.rng.Perm(n)
		for _, i := range order {
			ch.stop(i)
			ch.sleep(0, 300*time.Millisecond)
		}
		ch.sleep(0, 500*time.Millisecond)
		for _, i := range ch.rng.Perm(n) {
			ch.start(i)
			ch.sleep(0, 300*time.Millisecond)
		}
	case 4: // isolate the leader, restart it while isolated, heal
		l := ch.leader()
		ch.rc.event(ch.t, "-- isolate leader %d, restart it isolated", l+1)
		ch.tc.partition([]int{l}, others(n, l))
		ch.sleep(300*time.Millisecond, 1500*time.Millisecond)
		ch.stop(l)
		ch.sleep(0, 500*time.Millisecond)
		ch.start(l)
		ch.sleep(200*time.Millisecond, 1000*time.Millisecond)
		ch.rc.event(ch.t, "heal")
		ch.tc.heal()
	case 5: // isolate one node, restart another (no quorum while it is down)
		a := ch.rng.IntN(n)
		b := ch.other(a)
		ch.rc.event(ch.t, "-- isolate %d, restart %d", a+1, b+1)
		ch.tc.partition([]int{a}, others(n, a))
		ch.sleep(200*time.Millisecond, 800*time.Millisecond)
		ch.stop(b)
		ch.sleep(100*time.Millisecond, 800*time.Millisecond)
		ch.start(b)
		ch.sleep(200*time.Millisecond, 1000*time.Millisecond)
		ch.rc.event(ch.t, "heal")
		ch.tc.heal()
	case 6: // the leader hears nothing, then a follower restarts
		l := ch.leader()
		f := ch.other(l)
		ch.rc.event(ch.t, "-- leader %d hears nothing; restart %d", l+1, f+1)
		for _, j := range others(n, l) {
			ch.tc.cutOneWay(j, l)
		}
		ch.sleep(300*time.Millisecond, 1500*time.Millisecond)
		ch.stop(f)
		ch.sleep(100*time.Millisecond, 800*time.Millisecond)
		ch.start(f)
		ch.sleep(0, 800*time.Millisecond)
		ch.rc.event(ch.t, "heal")
		ch.tc.heal()
	case 7: // a follower cut off while the others compact, then restarted
		l := ch.leader()
		f := ch.other(l)
		ch.rc.event(ch.t, "-- isolate follower %d, restart it, heal", f+1)
		ch.tc.partition([]int{f}, others(n, f))
		ch.sleep(500*time.Millisecond, 2000*time.Millisecond)
		ch.stop(f)
		ch.start(f)
		ch.sleep(0, 500*time.Millisecond)
		ch.rc.event(ch.t, "heal")
		ch.tc.heal()
	case 8: // a follower falls behind the compacted log, catches up by
		// snapshot, and is stopped while that may be under way
		l := ch.leader()
		f := ch.other(l)
		ch.rc.event(ch.t, "-- isolate follower %d, heal, stop it during catch-up", f+1)
		ch.tc.partition([]int{f}, others(n, f))
		ch.sleep(800*time.Millisecond, 2000*time.Millisecond)
		ch.rc.event(ch.t, "heal")
		ch.tc.heal()
		ch.sleep(0, 400*time.Millisecond)
		ch.stop(f)
		ch.sleep(0, 300*time.Millisecond)
		ch.start(f)
	case 9: // a follower hears nothing from the others (its forwarded
		// proposals still reach the leader and commit), is restarted
		// while still deaf, then healed
		l := ch.leader()
		f := ch.other(l)
		ch.rc.event(ch.t, "-- follower %d hears nothing; restart it deaf; heal", f+1)
		for _, j := range others(n, f) {
			ch.tc.cutOneWay(j, f)
		}
		ch.sleep(300*time.Millisecond, 1500*time.Millisecond)
		ch.stop(f)
		ch.start(f)
		ch.sleep(200*time.Millisecond, 1000*time.Millisecond)
		ch.rc.event(ch.t, "heal")
		ch.tc.heal()
	case 10: // a node flaps: stopped again soon after each start, while it
		// still replays its log or loads a snapshot
		a := ch.rng.IntN(n)
		ch.rc.event(ch.t, "-- node %d flaps", a+1)
		for range 2 + ch.rng.IntN(3) {
			ch.stop(a)
			ch.sleep(0, 200*time.Millisecond)
			ch.start(a)
			ch.sleep(0, 300*time.Millisecond)
		}
	}
}

// runChaos runs the register workload on a fresh cluster through a
// random schedule of faults of the given kinds (see chaos.step), then
// checks the history, the own keys and that the replicas converged.
func runChaos(t *testing.T, timeout time.Duration, snapEntries int, kinds []int) {
	seed := chaosSeed(t)
	seconds := chaosEnv("KV_CHAOS_SECONDS", 8)
	shards := chaosEnv("KV_CHAOS_SHARDS", 2)
	t.Logf("request timeout %v, snapshot_entries %d, %d shards, %d s of faults", timeout, snapEntries, shards, seconds)
	tc := newTestCluster(t, clusterOpts{shards: shards, requestTimeout: timeout, snapshotEntries: snapEntries})
	for i, cfg := range tc.cfgs {
		t.Logf("node %d: raft %s", i+1, cfg.Cluster.RaftAddress)
	}
	ln := liveCluster(tc)
	rc := startRegisterClients(ln, chaosEnv("KV_CHAOS_CLIENTS", 12), registerKeys(chaosEnv("KV_CHAOS_KEYS", 48)))
	ch := &chaos{t: t, tc: tc, ln: ln, rc: rc, rng: rand.New(rand.NewPCG(seed, 3)), shards: shards}
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	first := ch.rng.IntN(len(kinds))
	time.Sleep(300 * time.Millisecond)
	steps := 0
	for time.Now().Before(end) {
		kind := kinds[ch.rng.IntN(len(kinds))]
		if steps < len(kinds) {
			kind = kinds[(first+steps)%len(kinds)] // every kind once first
		}
		ch.step(kind)
		steps++
		poll(5*time.Second, func() bool { return haveLeaders(tc.live()...) })
		ch.sleep(200*time.Millisecond, 800*time.Millisecond)
	}
	rc.event(t, "end of schedule (%d steps); heal, wait for leaders", steps)
	tc.heal()
	tc.waitLeaders(tc.nodes...)
	time.Sleep(2 * timeout)
	rc.stopAndCheck(t, 200, ln.running())
	checkConverged(t, tc)
}

// replicaDump is every stored key of one replica (user data, applied
// index, proposer states), as a snapshot would carry it.
func replicaDump(c *Cluster, shard uint64) (string, uint64) {
	c.smMu.Lock()
	s := c.sms[shard]
	c.smMu.Unlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.db == nil {
		return "", 0
	}
	it := s.db.NewIterator(nil, nil)
	defer it.Close()
	var sb strings.Builder
	var applied uint64
	for ok := it.First(); ok; ok = it.Next() {
		if string(it.Key()) == string(appliedKey) {
			applied = binary.BigEndian.Uint64(it.Value())
		}
		fmt.Fprintf(&sb, "%q=%q\n", it.Key(), it.Value())
	}
	return sb.String(), applied
}

// checkConverged checks that every replica of every shard holds the same
// state once they applied the same index (no writes are running).
func checkConverged(t *testing.T, tc *testCluster) {
	t.Helper()
	for s := uint64(1); s <= uint64(tc.nodes[0].shards); s++ {
		var dumps []string
		var applied []uint64
		deadline := time.Now().Add(20 * time.Second)
		for {
			dumps, applied = nil, nil
			for _, n := range tc.nodes {
				d, a := replicaDump(n, s)
				dumps = append(dumps, d)
				applied = append(applied, a)
			}
			if applied[0] == applied[1] && applied[1] == applied[2] || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if applied[0] != applied[1] || applied[1] != applied[2] {
			t.Errorf("shard %d: replicas at applied indexes %v", s, applied)
			continue
		}
		for i := 1; i < len(dumps); i++ {
			if dumps[i] != dumps[0] {
				a, b := strings.Split(dumps[0], "\n"), strings.Split(dumps[i], "\n")
				var diff []string
				for j := 0; j < len(a) || j < len(b); j++ {
					var x, y string
					if j < len(a) {
						x = a[j]
					}
					if j < len(b) {
						y = b[j]
					}
					if x != y && len(diff) < 10 {
						diff = append(diff, fmt.Sprintf("node 1: %s | node %d: %s", x, i+1, y))
					}
				}
				t.Errorf("shard %d: replicas 1 and %d differ at applied index %d:\n%s", s, i+1, applied[0], strings.Join(diff, "\n"))
			}
		}
		t.Logf("shard %d: replicas agree at applied index %d (%d stored keys)", s, applied[0], strings.Count(dumps[0], "\n"))
	}
}

var allChaosKinds = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

// TestChaosRestartsSnapshots favours the faults where a restarted or cut
// off node catches up by snapshot.
func TestChaosRestartsSnapshots(t *testing.T) {
	runChaos(t, time.Duration(chaosEnv("KV_CHAOS_TIMEOUT_MS", 500))*time.Millisecond, chaosEnv("KV_CHAOS_SNAP", 5), []int{10, 8, 2, 3, 7, 10, 8})
}

func TestChaosRestartsShortTimeout(t *testing.T) {
	runChaos(t, time.Duration(chaosEnv("KV_CHAOS_TIMEOUT_MS", 300))*time.Millisecond, chaosEnv("KV_CHAOS_SNAP", 5), allChaosKinds)
}

func TestChaosRestartsLongerTimeout(t *testing.T) {
	runChaos(t, time.Duration(chaosEnv("KV_CHAOS_TIMEOUT_MS", 1000))*time.Millisecond, chaosEnv("KV_CHAOS_SNAP", 30), allChaosKinds)
}
