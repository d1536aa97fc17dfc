package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kv/shard"
)

func dialClusterT(t *testing.T, seeds []string, opts ClusterOptions) *Cluster {
	t.Helper()
	c, err := DialCluster(context.Background(), seeds, opts)
	if err != nil {
		t.Fatalf("DialCluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// addrs returns the servers' addresses.
func addrs(s ...*fakeServer) []string {
	var a []string
	for _, srv := range s {
		a = append(a, srv.addr())
	}
	return a
}

// landsOn runs f, a request with command cmd, and fails the test unless
// exactly one of s received it: s[want].
func landsOn(t *testing.T, s []*fakeServer, want int, cmd string, f func() error) {
	t.Helper()
	before := make([]int, len(s))
	for i, srv := range s {
		before[i] = srv.received(cmd)
	}
	if err := f(); err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatalf("%s: %v", cmd, err)
	}
	for i, srv := range s {
		got, exp := srv.received(cmd)-before[i], 0
		if i == want {
			exp = 1
		}
		if got != exp {
			t.Fatalf("%s: node %d received %d, want %d (expected on node %d)", cmd, i+1, got, exp, want+1)
		}
	}
}

// leaderIndex is the index in s of the leader layout l gives key's shard.
func leaderIndex(s []*fakeServer, l fakeLayout, key []byte) int {
	return slices.Index(addrs(s...), l.leaders[shard.Of(key, len(l.leaders))-1])
}

// waitFor polls cond until it holds, failing the test after 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestClusterRoutesToLeaders: with eight shards over three nodes, every
// key's PUT, GET and DELETE is received by its shard's leader and by no
// other node, though only one node was given; requests any node serves
// work too.
func TestClusterRoutesToLeaders(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, 1, 2, 0, 1, 2, 2, 1)
	c := dialClusterT(t, []string{s[0].addr()}, ClusterOptions{Refresh: -1})
	if got := c.Leaders(); !slices.Equal(got, l.leaders) {
		t.Fatalf("Leaders = %q, want %q", got, l.leaders)
	}
	ctx := context.Background()
	shards := map[uint64]bool{}
	for i := range 200 {
		key := fmt.Appendf(nil, "key:%d", i)
		shards[shard.Of(key, 8)] = true
		want := leaderIndex(s, l, key)
		value := fmt.Appendf(nil, "v%d", i)
		landsOn(t, s, want, "PUT", func() error { return c.Put(ctx, key, value) })
		landsOn(t, s, want, "GET", func() error {
			got, err := c.Get(ctx, key)
			if err == nil && string(got) != string(value) {
				err = fmt.Errorf("Get(%s) = %q, want %q", key, got, value)
			}
			return err
		})
		landsOn(t, s, want, "DELETE", func() error { return c.Delete(ctx, key) })
		if _, err := c.Get(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(%s) after Delete: %v, want ErrNotFound", key, err)
		}
	}
	if len(shards) != 8 {
		t.Fatalf("the keys covered %d shards of 8", len(shards))
	}

	if err := c.Batch(ctx, []KV{{[]byte("a"), []byte("1")}, {[]byte("b"), []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Batch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Range(ctx, nil, nil, 10); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := c.ClusterStatus(ctx); err != nil || st.Get("shards") != "8" {
		t.Fatalf("ClusterStatus = %v, %v", st.Fields(), err)
	}
}

// TestClusterRefresh: a layout that changes (leaders moved) is read again
// within Refresh, and requests follow it.
func TestClusterRefresh(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, 0, 0, 0)
	c := dialClusterT(t, []string{s[1].addr()}, ClusterOptions{Refresh: 20 * time.Millisecond})
	ctx := context.Background()
	key := []byte("k")
	landsOn(t, s, 0, "PUT", func() error { return c.Put(ctx, key, []byte("v")) })

	l.leaders = []string{s[2].addr(), s[1].addr(), "", s[0].addr()}
	setLayout(s, l)
	waitFor(t, "the new leaders", func() bool { return slices.Equal(c.Leaders(), l.leaders) })
	for i := range 50 {
		key := fmt.Appendf(nil, "key:%d", i)
		want := leaderIndex(s, l, key)
		if want < 0 {
			want = 1 // no leader: the seed
		}
		landsOn(t, s, want, "PUT", func() error { return c.Put(ctx, key, []byte("v")) })
	}
}

// TestClusterLeaderDown: a shard whose leader cannot be reached is served
// by another node (the first seed that is up); nothing is sent twice.
func TestClusterLeaderDown(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, 1, 2, 2)
	dead := deadAddr(t)
	l.leaders[1] = dead // shard 2: a leader that no longer listens
	setLayout(s, l)
	c := dialClusterT(t, []string{dead, s[1].addr(), s[0].addr()}, ClusterOptions{Refresh: -1})
	putsLand(t, s, l, c, 1)

	// Node 3, leader of shards 3 and 4, stops: once the client would
	// notice (an idle connection is probed before reuse after
	// livenessAfter), its keys go to node 2, the first seed up.
	s[2].close()
	time.Sleep(2 * livenessAfter)
	ctx := context.Background()
	for i := range 100 {
		key := fmt.Appendf(nil, "key:%d", i)
		want := leaderIndex(s, l, key)
		if want < 0 || want == 2 {
			want = 1
		}
		landsOn(t, s[:2], want, "PUT", func() error { return c.Put(ctx, key, []byte("v")) })
		landsOn(t, s[:2], want, "GET", func() error { _, err := c.Get(ctx, key); return err })
	}
}

// TestClusterNoLeader: a shard with no known leader is served by the
// seeds, in order.
func TestClusterNoLeader(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, -1, 2, -1)
	c := dialClusterT(t, []string{s[1].addr(), s[0].addr()}, ClusterOptions{Refresh: -1})
	if got := c.Leaders(); !slices.Equal(got, l.leaders) {
		t.Fatalf("Leaders = %q, want %q", got, l.leaders)
	}
	putsLand(t, s, l, c, 1)
}

// TestClusterNoResend: a request that reached the leader is never sent to
// another node, whatever became of it: the leader may have applied the
// write. Its error says the outcome is unknown. A refusal from a node
// that is shutting down (nothing done) does go to another node, as a
// Client given several nodes sends it.
func TestClusterNoResend(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, 1, 2)
	c := dialClusterT(t, []string{s[0].addr(), s[1].addr(), s[2].addr()}, ClusterOptions{Refresh: -1})
	ctx := context.Background()
	var key []byte
	for i := 0; key == nil; i++ {
		if k := fmt.Appendf(nil, "key:%d", i); leaderIndex(s, l, k) == 2 {
			key = k
		}
	}

	crash := l
	crash.hangup = []string{"PUT", "GET"}
	s[2].setLayout(crash)
	var err error
	landsOn(t, s, 2, "PUT", func() error { err = c.Put(ctx, key, []byte("v")); return nil })
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Put cut off after it was sent: %v, want ErrOutcomeUnknown", err)
	}
	landsOn(t, s, 2, "GET", func() error { _, err = c.Get(ctx, key); return nil })
	if err == nil {
		t.Fatal("Get cut off after it was sent succeeded")
	}

	s[2].setLayout(l)
	s[2].stopping.Store(true)
	landsOn(t, s, 0, "PUT", func() error { return c.Put(ctx, key, []byte("v")) })
	landsOn(t, s, 0, "PUT", func() error { return c.Put(ctx, key, []byte("v")) })
	if n := s[2].refused.Load(); n != 1 {
		t.Fatalf("the stopping leader refused %d requests, want 1 (then passed over)", n)
	}
}

// TestClusterClose: Close returns once the refresher has stopped, closes
// every node's client, and may be called twice.
func TestClusterClose(t *testing.T) {
	s, _ := fakeCluster(t, 2, 0, 1)
	c, err := DialCluster(context.Background(), addrs(s...), ClusterOptions{Refresh: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a refresh", func() bool { return s[0].received("CLUSTER_STATUS") >= 3 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	default:
		t.Fatal("Close returned with the refresher running")
	}
	if err := c.Put(context.Background(), []byte("k"), []byte("v")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
	if err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDialClusterErrors: DialCluster fails only when no node answers,
// with an error that says so and does not claim anything was sent; a seed
// down at the start is passed over.
func TestDialClusterErrors(t *testing.T) {
	ctx := context.Background()
	_, err := DialCluster(ctx, []string{deadAddr(t), deadAddr(t)}, ClusterOptions{})
	if err == nil || !strings.HasPrefix(err.Error(), "dial cluster") || !strings.Contains(err.Error(), "no node answered") || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("DialCluster with every node down = %v", err)
	}
	if _, err := DialCluster(ctx, []string{" ", ""}, ClusterOptions{}); err == nil {
		t.Fatal("DialCluster with no address succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s, l := fakeCluster(t, 2, 0, 1)
	if _, err := DialCluster(cctx, addrs(s...), ClusterOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("DialCluster with a cancelled context = %v", err)
	}

	// One element may list several nodes, as for Dial.
	c := dialClusterT(t, []string{deadAddr(t) + ", " + s[1].addr()}, ClusterOptions{Refresh: -1})
	if got := c.Leaders(); !slices.Equal(got, l.leaders) {
		t.Fatalf("Leaders = %q, want %q", got, l.leaders)
	}
	if err := c.Put(ctx, []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// TestClusterConcurrent: requests from many goroutines while the leaders
// keep moving all succeed (run with -race).
func TestClusterConcurrent(t *testing.T) {
	s, l := fakeCluster(t, 3, 0, 1, 2, 0, 1, 2, 0, 1)
	c := dialClusterT(t, []string{s[0].addr()}, ClusterOptions{Refresh: time.Millisecond, Options: Options{PoolSize: 4}})
	ctx := context.Background()
	stop := make(chan struct{})
	moved := make(chan struct{})
	go func() {
		defer close(moved)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			m := l
			m.leaders = slices.Clone(l.leaders)
			m.leaders[i%8] = s[i%3].addr()
			if i%5 == 0 {
				m.leaders[(i+3)%8] = ""
			}
			setLayout(s, m)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Appendf(nil, "g%d:%d", g, i)
				if err := c.Put(ctx, key, []byte("v")); err != nil {
					errs <- err
					return
				}
				if _, err := c.Get(ctx, key); err != nil && !errors.Is(err, ErrNotFound) {
					errs <- err
					return
				}
				_ = c.Leaders()
			}
		})
	}
	wg.Wait()
	close(stop)
	<-moved
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClusterTLS: the nodes announce their plain client ports, so with
// Options.TLS no request goes to a leader; all go to the seeds, over TLS.
func TestClusterTLS(t *testing.T) {
	seed, clientTLS := tlsFake(t)
	plain := newFakeServer(t, "")
	l := fakeLayout{leaders: []string{plain.addr(), plain.addr()}, nodes: []string{plain.addr()}}
	setLayout([]*fakeServer{seed, plain}, l)
	c := dialClusterT(t, []string{seed.addr()}, ClusterOptions{Refresh: -1, Options: Options{TLS: clientTLS}})
	if got := c.Leaders(); !slices.Equal(got, l.leaders) {
		t.Fatalf("Leaders = %q, want %q", got, l.leaders)
	}
	for i := range 10 {
		landsOn(t, []*fakeServer{seed, plain}, 0, "PUT", func() error {
			return c.Put(context.Background(), fmt.Appendf(nil, "k%d", i), []byte("v"))
		})
	}
}

// TestClusterPrefersFullMap: a node that knows no leader for some shard
// (cut off from the others) does not hide the map of one that knows them
// all; with no full map, the one naming the most leaders is used.
func TestClusterPrefersFullMap(t *testing.T) {
	s, full := fakeCluster(t, 3, 0, 1, 2, 0)
	cut := full
	cut.leaders = []string{"", "", "", ""}
	s[0].setLayout(cut)
	partial := full
	partial.leaders = []string{s[0].addr(), "", s[2].addr(), ""}
	s[1].setLayout(partial)
	c := dialClusterT(t, addrs(s...), ClusterOptions{Refresh: -1})
	if got := c.Leaders(); !slices.Equal(got, full.leaders) {
		t.Fatalf("Leaders = %q, want the full map %q", got, full.leaders)
	}
	s[2].close()
	c = dialClusterT(t, addrs(s...), ClusterOptions{Refresh: -1})
	if got := c.Leaders(); !slices.Equal(got, partial.leaders) {
		t.Fatalf("Leaders = %q, want the fullest map %q", got, partial.leaders)
	}
}

// TestClusterTimeoutBoundsCall: Options.Timeout runs from the start of a
// Cluster call across the nodes it tries, not again on each.
func TestClusterTimeoutBoundsCall(t *testing.T) {
	s, _ := fakeCluster(t, 1, 0)
	c := dialClusterT(t, addrs(s...), ClusterOptions{Refresh: -1, Options: Options{Timeout: time.Second}})
	start := time.Now().Add(-900 * time.Millisecond)
	ctx := withCallStart(context.Background(), start)
	if d, fromCtx := c.seeds[0].deadline(ctx); fromCtx || !d.Equal(start.Add(time.Second)) {
		t.Fatalf("deadline = %v (from the context: %v), want %v", d, fromCtx, start.Add(time.Second))
	}
	notSent := &dialError{errors.New("connection refused")}
	if !c.moveOn(context.Background(), time.Now(), c.seeds[0], notSent) {
		t.Fatal("a request that could not be sent, with time left, does not move on")
	}
	if c.moveOn(context.Background(), time.Now().Add(-time.Second), c.seeds[0], notSent) {
		t.Fatal("a request whose Timeout has passed moves on")
	}
}

// putsLand puts 100 keys through c and checks each lands on its shard's
// leader in l, or on server fallback when the shard has none.
func putsLand(t *testing.T, s []*fakeServer, l fakeLayout, c *Cluster, fallback int) {
	t.Helper()
	ctx := context.Background()
	for i := range 100 {
		key := fmt.Appendf(nil, "key:%d", i)
		want := leaderIndex(s, l, key)
		if want < 0 {
			want = fallback
		}
		landsOn(t, s, want, "PUT", func() error { return c.Put(ctx, key, []byte("v")) })
	}
}
