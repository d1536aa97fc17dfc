package bench

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	kvclient "github.com/kvstore/kv/client"
	"github.com/kvstore/kv/shard"
)

// routeRefresh is how often a routed run reads the shard leaders again:
// leaders move (elections, the cluster's leader balancing), and a key sent
// to a node that no longer leads its shard is forwarded, not refused, so
// a stale table costs a hop for at most this long.
const routeRefresh = time.Second

// pickTries bounds the draws for a key of a routed client's shard; a
// shard of the key space that rare is given a client only by rounding.
const pickTries = 1000

// routeTable says which of Config.Addrs leads each shard.
type routeTable struct {
	shards int
	leader []int // per shard (shard s at s-1): index into Config.Addrs, or -1
}

// newRouteTable matches leaders (client addresses per shard, as
// client.ShardLeaders returns them) to addrs. A leader not among addrs
// (another spelling of the address, a member not given) maps to -1.
func newRouteTable(leaders, addrs []string) *routeTable {
	t := &routeTable{shards: len(leaders), leader: make([]int, len(leaders))}
	for s, l := range leaders {
		t.leader[s] = slices.Index(addrs, l)
	}
	return t
}

// routes reports whether cfg asks for routing that can be done: the pipe
// protocol (a Redis server has no shards) and more than one address.
func routes(cfg *Config) bool {
	return cfg.Route && cfg.Proto == ProtoPipe && len(cfg.Addrs) > 1
}

// findLeaders returns, when cfg asks for routing, where the shard leaders
// are and the source to read them again from (to close after the run).
// The table is nil when the run is not routed; the error says why when
// routing was asked for and cannot be done.
func findLeaders(ctx context.Context, cfg *Config) (*leaderSource, *routeTable, error) {
	if !routes(cfg) {
		return nil, nil, nil
	}
	src, err := newLeaderSource(cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	table, err := src.table(ctx)
	if err == nil && table != nil && table.shards > cfg.Clients {
		table, err = nil, fmt.Errorf("%d clients cannot cover %d shards", cfg.Clients, table.shards)
	}
	return src, table, err
}

// leaderSource reads shard leaders from the run's servers.
type leaderSource struct {
	c     *kvclient.Client
	addrs []string
}

func newLeaderSource(cfg *Config) (*leaderSource, error) {
	c, err := kvclient.Dial(strings.Join(cfg.Addrs, ","), kvclient.Options{
		Password:    cfg.Password,
		TLS:         cfg.TLS,
		DialTimeout: cfg.Timeout,
		Timeout:     cfg.Timeout,
		PoolSize:    1,
	})
	if err != nil {
		return nil, fmt.Errorf("shard leaders: %w", err)
	}
	return &leaderSource{c: c, addrs: cfg.Addrs}, nil
}

// table asks for the leaders now. A standalone server, or a cluster of one
// shard, gives no table: there is nothing to route.
func (s *leaderSource) table(ctx context.Context) (*routeTable, error) {
	leaders, err := s.c.ShardLeaders(ctx)
	if err != nil {
		return nil, fmt.Errorf("shard leaders: %w", err)
	}
	if len(leaders) < 2 {
		return nil, nil
	}
	return newRouteTable(leaders, s.addrs), nil
}

func (s *leaderSource) close() { _ = s.c.Close() }

// clientShard returns the shard client id works on, 0 when the run is not
// routed.
func (r *runner) clientShard(id int) uint64 {
	if r.shards == nil {
		return 0
	}
	return r.shards[id]
}

// assignShards gives each of clients a shard to work on, as many clients
// to a shard as its share of the requests the key distribution makes
// (estimated from a sample of draws), so that the run's requests fall on
// the keys and shards as an unrouted run's do: each client draws from the
// distribution conditioned on its shard. Every shard the sample touched
// gets at least one client when there are enough.
func assignShards(keys *keySpace, shards, clients int, seed uint64) []uint64 {
	const samples = 1 << 16
	hits := make([]int, shards)
	rng := rand.New(rand.NewPCG(seed, 0x5a4d))
	var buf []byte
	for range samples {
		buf = appendKey(buf[:0], keys.pick(rng))
		hits[shard.Of(buf, shards)-1]++
	}
	n := make([]int, shards)
	type rest struct {
		s    int
		frac float64
	}
	var rests []rest
	left := clients
	for s, h := range hits {
		share := float64(h) / samples * float64(clients)
		n[s] = int(share)
		left -= n[s]
		rests = append(rests, rest{s, share - float64(n[s])})
	}
	slices.SortStableFunc(rests, func(a, b rest) int { return cmp.Compare(b.frac, a.frac) })
	for i := 0; left > 0; i++ {
		n[rests[i%len(rests)].s]++
		left--
	}
	for s := range n {
		if n[s] == 0 && hits[s] > 0 {
			if most := slices.Index(n, slices.Max(n)); n[most] > 1 {
				n[most]--
				n[s]++
			}
		}
	}
	out := make([]uint64, 0, clients)
	for s, k := range n {
		for range k {
			out = append(out, uint64(s+1))
		}
	}
	return out
}
