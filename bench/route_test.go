package bench

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvstore/kv/bench/fakeserver"
	"github.com/kvstore/kv/shard"
)

// fakeCluster is three fake servers answering as members of one cluster
// whose shard leaders the test sets; each counts the keys it got whose
// shard it does not lead.
type fakeCluster struct {
	srvs      []*fakeserver.Server
	mu        sync.Mutex
	leaders   []string
	misrouted atomic.Int64
	keyed     []atomic.Int64 // PUT/GET/DELETE per server
}

func startFakeCluster(t *testing.T, shards int) *fakeCluster {
	t.Helper()
	fc := &fakeCluster{keyed: make([]atomic.Int64, 3)}
	addrs := make([]string, 3)
	for i := range 3 {
		self := &addrs[i]
		fc.srvs = append(fc.srvs, startServer(t, fakeserver.Options{
			Cluster: fc.layout,
			Key: func(_ string, key []byte) {
				fc.keyed[i].Add(1)
				l := fc.layout()
				if lead := l[shard.Of(key, len(l))-1]; lead != *self && isMember(addrs, lead) {
					fc.misrouted.Add(1)
				}
			},
		}))
		addrs[i] = fc.srvs[i].Addr()
	}
	fc.set(func(s int) string { return addrs[s%3] }, shards)
	return fc
}

func isMember(addrs []string, a string) bool {
	for _, m := range addrs {
		if m == a {
			return true
		}
	}
	return false
}

func (fc *fakeCluster) addrs() []string {
	var a []string
	for _, s := range fc.srvs {
		a = append(a, s.Addr())
	}
	return a
}

func (fc *fakeCluster) layout() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return fc.leaders
}

// set makes leader(s) lead shard s+1.
func (fc *fakeCluster) set(leader func(s int) string, shards int) {
	l := make([]string, shards)
	for s := range l {
		l[s] = leader(s)
	}
	fc.mu.Lock()
	fc.leaders = l
	fc.mu.Unlock()
}

// A routed run sends every key to its shard's leader, over all three
// servers; clients of a shard with no leader, or led by a node not given,
// stay where they are. -verify checks that every get saw the client's
// last put, which holds only if each key always lands on the same fake
// server (they share no data); the prefill, which writes every key once
// through the client that owns it, is not routed.
func TestRoutedRunSendsKeysToLeaders(t *testing.T) {
	fc := startFakeCluster(t, 8)
	addrs := fc.addrs()
	fc.set(func(s int) string {
		switch s {
		case 4:
			return "" // no leader
		case 6:
			return "127.0.0.1:1" // a member not given to kvbench
		}
		return addrs[s%3]
	}, 8)
	for _, prefill := range []bool{true, false} {
		fc.misrouted.Store(0)
		cfg := testConfig(t, "", ProtoPipe)
		cfg.Addrs = addrs
		cfg.Clients = 24
		cfg.Pipeline = 4
		cfg.Total = 6000
		cfg.Mix = mustMix(t, "put=4,get=4,delete=1,range=1,ping=1")
		cfg.Prefill = prefill
		cfg.Verify = true
		res, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if res.Errors != 0 {
			t.Fatalf("%d errors: %v", res.Errors, res.FirstErrors)
		}
		if res.Run.Shards != 8 {
			t.Errorf("report says %d routed shards, want 8", res.Run.Shards)
		}
		if n := fc.misrouted.Load(); n != 0 && !prefill {
			t.Errorf("%d requests went to a node that does not lead their key's shard", n)
		}
		for i := range fc.keyed {
			if fc.keyed[i].Load() == 0 {
				t.Errorf("server %d got no keyed request", i)
			}
		}
	}
}

// Clients are spread over the shards by their share of the key
// distribution's draws.
func TestAssignShards(t *testing.T) {
	uniform, err := newKeySpace(100_000, DistUniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := assignShards(uniform, 8, 512, 1)
	per := make(map[uint64]int)
	for _, s := range got {
		per[s]++
	}
	if len(got) != 512 || len(per) != 8 {
		t.Fatalf("%d clients over %d shards, want 512 over 8", len(got), len(per))
	}
	for s, n := range per {
		if n < 56 || n > 72 {
			t.Errorf("shard %d: %d clients, want about 64 of 512 for an eighth of the keys", s, n)
		}
	}
	// One key: every draw is in its shard, but each shard touched keeps
	// at least one client, and every client has a shard.
	one, err := newKeySpace(1, DistUniform, 0)
	if err != nil {
		t.Fatal(err)
	}
	got = assignShards(one, 8, 10, 1)
	want := shard.Of(appendKey(nil, 0), 8)
	for i, s := range got {
		if s != want {
			t.Errorf("client %d on shard %d, want %d (the only key's)", i, s, want)
		}
	}
}

// With routing off (or nothing to route by), each client keeps to its
// one address, and the nodes would forward.
func TestUnroutedRun(t *testing.T) {
	fc := startFakeCluster(t, 8)
	plain := startServer(t, fakeserver.Options{}) // answers no CLUSTER_STATUS
	for _, c := range []struct {
		name  string
		addrs []string
		route bool
	}{
		{"route off", fc.addrs(), false},
		{"one address", fc.addrs()[:1], true},
		{"servers that do not say", []string{plain.Addr(), plain.Addr()}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fc.misrouted.Store(0)
			cfg := testConfig(t, "", ProtoPipe)
			cfg.Addrs = c.addrs
			cfg.Route = c.route
			cfg.Clients = 6
			cfg.Mix = mustMix(t, "put,get")
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Errors != 0 || res.Run.Shards != 0 {
				t.Errorf("errors %d, routed shards %d: want an unrouted run without errors", res.Errors, res.Run.Shards)
			}
			if c.name == "route off" && fc.misrouted.Load() == 0 {
				t.Error("no key went to a node that does not lead it: the run was routed")
			}
		})
	}
}

// The table follows the leaders as they move.
func TestRefreshRouteFollowsLeaders(t *testing.T) {
	fc := startFakeCluster(t, 4)
	addrs := fc.addrs()
	cfg := testConfig(t, "", ProtoPipe)
	cfg.Addrs = addrs
	r, src := routedRunner(t, cfg)
	r.routeEvery = 10 * time.Millisecond
	defer r.startRefresh(src)()
	fc.set(func(int) string { return addrs[2] }, 4) // all four shards move to the third node
	want := []int{2, 2, 2, 2}
	for deadline := time.Now().Add(5 * time.Second); !slices.Equal(r.route.Load().leader, want) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if got := r.route.Load().leader; !slices.Equal(got, want) {
		t.Fatalf("table %v after the leaders moved to node 3, want %v", got, want)
	}
}

// A client whose shard's leader moved finishes what it has in flight,
// then connects to the new leader.
func TestClientFollowsItsLeader(t *testing.T) {
	fc, r, c := firstLedRun(t)
	addrs := fc.addrs()
	if c.addr != addrs[0] {
		t.Fatalf("client of shard %d on %s, want its leader %s", c.shard, c.addr, addrs[0])
	}
	moveLeaders(t, fc, r, 1)
	r.remaining.Store(100)
	c.startPhase(phase{depth: 2})
	c.n = 1 // a request in flight: the move waits for it
	if !c.follow() || c.addr != addrs[0] || c.moveTo != addrs[1] {
		t.Fatalf("with a request in flight: on %s, moving to %q; want to stay on %s until it is answered", c.addr, c.moveTo, addrs[0])
	}
	c.fill(0)
	if c.n != 1 {
		t.Fatalf("%d in flight: a client about to move sent more", c.n)
	}
	c.n = 0
	if !c.follow() || c.addr != addrs[1] || c.moveTo != "" {
		t.Fatalf("after the reply: on %s (moving to %q), want the new leader %s", c.addr, c.moveTo, addrs[1])
	}
	c.wbuf = c.w.appendPing(c.wbuf[:0])
	if rep, err := c.roundTrip(c.getConn()); err != nil || rep.kind != replyPong {
		t.Fatalf("ping over the new connection: %v, %v", rep, err)
	}
}

// routedRunner is a runner for cfg routed by what the servers say, and the
// source it asked (closed when the test ends).
func routedRunner(t *testing.T, cfg Config) (*runner, *leaderSource) {
	t.Helper()
	src, err := newLeaderSource(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.close)
	table, err := src.table(context.Background())
	if err != nil || table == nil {
		t.Fatalf("table: %v, %v", table, err)
	}
	r, err := newRunner(cfg, table)
	if err != nil {
		t.Fatal(err)
	}
	return r, src
}

// A routed client that lost its server reconnects to its shard's new
// leader, not to the server it lost: a failover moves clients with it.
func TestClientReconnectsToNewLeader(t *testing.T) {
	fc, r, c := firstLedRun(t)
	addrs := fc.addrs()
	fc.srvs[0].Close() // the leader dies; its shards move to the second server
	moveLeaders(t, fc, r, 1)
	r.base = time.Now()
	c.startPhase(phase{depth: 1, endNs: int64(time.Minute)})
	if ok := c.reconnect(errors.New("read: connection reset")); !ok || c.addr != addrs[1] {
		t.Fatalf("reconnect = %v, on %s; want a connection to the new leader %s (errors: %v)", ok, c.addr, addrs[1], r.firstErrs)
	}
}

// firstLedRun is a routed runner, connected, against a fake cluster of
// two shards both led by its first member, and the runner's first client.
func firstLedRun(t *testing.T) (*fakeCluster, *runner, *client) {
	t.Helper()
	fc := startFakeCluster(t, 2)
	addrs := fc.addrs()
	fc.set(func(int) string { return addrs[0] }, 2)
	cfg := testConfig(t, "", ProtoPipe)
	cfg.Addrs = addrs
	cfg.Clients = 2
	r, _ := routedRunner(t, cfg)
	if err := r.connectAll(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.closeAll)
	return fc, r, r.clients[0]
}

// moveLeaders makes member i lead every shard and gives r the table that
// says so, as its refresher would.
func moveLeaders(t *testing.T, fc *fakeCluster, r *runner, i int) {
	t.Helper()
	to := fc.addrs()[i]
	fc.set(func(int) string { return to }, len(fc.layout()))
	src, err := newLeaderSource(&r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.close()
	table, err := src.table(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.route.Store(table)
}
