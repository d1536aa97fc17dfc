package cluster

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

// TestKill9Linearizable runs the register workload against child-process
// nodes that are killed with SIGKILL (nothing flushed, no Close) and
// restarted inside the history: one node, two in a row (no quorum), all
// three. A call whose child dies before answering has an unknown outcome.
// The KV_CHAOS_* variables (chaos_test.go) apply.
func TestKill9Linearizable(t *testing.T) {
	seed := chaosSeed(t)
	timeout := time.Duration(chaosEnv("KV_CHAOS_TIMEOUT_MS", 500)) * time.Millisecond
	seconds := chaosEnv("KV_CHAOS_SECONDS", 8)
	cfgs := childConfigs(t, 3)
	for i := range cfgs {
		cfgs[i].Cluster.SnapshotEntries = chaosEnv("KV_CHAOS_SNAP", 20)
		cfgs[i].Cluster.RequestTimeout = conf.Duration(timeout)
	}
	t.Logf("request timeout %v, snapshot_entries %d, %d s of faults", timeout, cfgs[0].Cluster.SnapshotEntries, seconds)
	ln := newLiveNodes(len(cfgs))
	procs := startChildren(t, cfgs)
	for i, c := range procs {
		ln.online(i, c)
	}
	rc := startRegisterClients(ln, chaosEnv("KV_CHAOS_CLIENTS", 12), registerKeys(chaosEnv("KV_CHAOS_KEYS", 48)))
	rng := rand.New(rand.NewPCG(seed, 5))
	sleep := func(lo, hi time.Duration) { time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)+1))) }
	kill := func(i int) {
		rc.event(t, "kill -9 node %d", i+1)
		ln.offline(i)
		procs[i].kill()
	}
	start := func(i int) {
		rc.event(t, "start node %d", i+1)
		procs[i] = startChild(t, cfgs[i])
		ln.online(i, procs[i])
	}
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	first := rng.IntN(3)
	time.Sleep(500 * time.Millisecond)
	for step := 0; time.Now().Before(end); step++ {
		kind := rng.IntN(3)
		if step < 3 {
			kind = (first + step) % 3 // every kind once first
		}
		switch kind {
		case 0:
			a := rng.IntN(3)
			kill(a)
			sleep(100*time.Millisecond, 1500*time.Millisecond)
			start(a)
		case 1:
			a := rng.IntN(3)
			b := (a + 1 + rng.IntN(2)) % 3
			kill(a)
			sleep(0, 700*time.Millisecond)
			kill(b)
			sleep(100*time.Millisecond, 1000*time.Millisecond)
			start(a)
			sleep(0, 500*time.Millisecond)
			start(b)
		case 2:
			for _, i := range rng.Perm(3) {
				kill(i)
				sleep(0, 200*time.Millisecond)
			}
			sleep(0, 500*time.Millisecond)
			rc.event(t, "start every node")
			procs = startChildren(t, cfgs)
			for i, c := range procs {
				ln.online(i, c)
			}
		}
		sleep(1000*time.Millisecond, 2500*time.Millisecond)
	}
	rc.event(t, "end of schedule")
	time.Sleep(2 * time.Second)
	rc.stopAndCheck(t, 200, ln.running())
}
