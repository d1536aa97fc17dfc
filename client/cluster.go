package client

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/shard"
)

// Cluster is a client of a whole cluster: it sends each key's requests to
// the node that leads the key's shard. Any node would serve them, but a
// node that does not lead the shard forwards the request to the one that
// does, and sparing that hop is worth a fifth to a third more throughput
// (docs/benchmarks.md).
//
// Where the leaders are is a hint, not a condition for correctness:
// leaders move (elections, failover, leader balancing), and the map
// (Leaders) is read again every ClusterOptions.Refresh, so it may be out of
// date. A request therefore goes to another node (the seed addresses, in
// order) when its shard has no known leader, or when it could not be sent
// to the leader: no connection to it could be opened, or it refused the
// request unread because it is shutting down. Those are the failures after
// which a Client given several nodes moves on to the next, the ones where
// nothing was sent or nothing done; a request that may have reached the
// leader is never sent again, since a write may have been applied (its
// error matches ErrOutcomeUnknown, as a Client's would). So a stale map
// fails no request: a former leader that is still up serves it as any
// node does, and one that is down costs a failed connection attempt
// (after which it is tried last for a second, as a Client does).
//
// A Cluster keeps one Client, with its own pool of connections, per node
// it sends requests to; it is safe for concurrent use.
//
// With Options.TLS no request is routed to a leader: the addresses the
// nodes announce are those of their plain client ports
// (cluster.client_address), which a TLS client cannot use. Every request
// then goes to the seeds, as with a Client dialled at them.
type Cluster struct {
	opts    Options // with defaults
	seeds   []*Client
	refresh time.Duration // > 0: the refresher runs
	route   bool          // false with TLS: requests go to the seeds only

	routes atomic.Pointer[routes]
	turn   atomic.Uint64 // where requests for any node start among the seeds

	mu      sync.Mutex
	clients map[string]*Client // by node address: the seeds' and the leaders'

	kick      chan struct{} // a request to a leader failed: read the map again
	stop      context.CancelFunc
	done      chan struct{} // closed when the refresher returns
	closeOnce sync.Once
}

// routes is one leader map, never changed once published: a request reads
// it without a lock.
type routes struct {
	leaders []string  // as ShardLeaders returned it
	clients []*Client // clients[i] serves leaders[i]; nil for "" (or without routing)
}

// ClusterOptions configures a Cluster.
type ClusterOptions struct {
	// Options are every node's connection options (pool size, timeouts,
	// password, TLS), as for Dial: each node the Cluster uses gets a pool
	// of up to PoolSize connections. Timeout bounds a whole call, however
	// many nodes it tries.
	Options
	// Refresh is how often the leader map is read again; default 1s,
	// negative means never after DialCluster. A request that could not be
	// sent to a shard's leader also has it read again at once, at most
	// once per Refresh.
	Refresh time.Duration
}

const defaultRefresh = time.Second

// DialCluster returns a Cluster after reading the leader map from the
// first of addrs that answers; it fails only when none does. addrs are
// nodes' client addresses (an element may itself list several, separated
// by commas, as for Dial). They are also where requests go when a shard's
// leader is unknown or cannot be reached, tried in order: a node that is
// down when DialCluster runs is used once it comes back.
func DialCluster(ctx context.Context, addrs []string, opts ClusterOptions) (*Cluster, error) {
	var seeds []string
	for _, a := range addrs {
		for s := range strings.SplitSeq(a, ",") {
			if s = strings.TrimSpace(s); s != "" && !slices.Contains(seeds, s) {
				seeds = append(seeds, s)
			}
		}
	}
	if len(seeds) == 0 {
		return nil, fmt.Errorf("dial cluster %v: no address", addrs)
	}
	c := &Cluster{
		opts:    opts.Options.withDefaults(),
		refresh: opts.Refresh,
		route:   opts.TLS == nil,
		clients: map[string]*Client{},
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	if c.refresh == 0 {
		c.refresh = defaultRefresh
	}
	for _, s := range seeds {
		cl, err := c.client(s)
		if err != nil {
			c.closeClients()
			return nil, fmt.Errorf("dial cluster %v: %w", seeds, err)
		}
		c.seeds = append(c.seeds, cl)
	}
	leaders, err := c.readLeaders(ctx)
	if err != nil {
		c.closeClients()
		return nil, fmt.Errorf("dial cluster %v: %w", seeds, err)
	}
	c.install(leaders)
	var bg context.Context
	bg, c.stop = context.WithCancel(context.Background())
	if c.refresh > 0 {
		go c.refresher(bg)
	} else {
		close(c.done)
	}
	return c, nil
}

// Close stops reading the leader map, waiting for the goroutine that reads
// it to return, and closes every node's Client. Later calls fail with
// ErrClosed.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.stop()
		<-c.done
		c.closeClients()
	})
	return nil
}

// Leaders returns a copy of the leader map in use: element i is the client
// address of shard i+1's leader, "" when none was known.
func (c *Cluster) Leaders() []string {
	return slices.Clone(c.routes.Load().leaders)
}

// Put stores value under key, sending it to the leader of key's shard.
func (c *Cluster) Put(ctx context.Context, key, value []byte) error {
	return c.onKey(ctx, key, func(ctx context.Context, cl *Client) error {
		return cl.Put(ctx, key, value)
	})
}

// Get returns the value stored under key, or ErrNotFound, asking the
// leader of key's shard.
func (c *Cluster) Get(ctx context.Context, key []byte) ([]byte, error) {
	var value []byte
	err := c.onKey(ctx, key, func(ctx context.Context, cl *Client) error {
		var err error
		value, err = cl.Get(ctx, key)
		return err
	})
	return value, err
}

// Delete removes key, sending it to the leader of key's shard; deleting a
// missing key is not an error.
func (c *Cluster) Delete(ctx context.Context, key []byte) error {
	return c.onKey(ctx, key, func(ctx context.Context, cl *Client) error {
		return cl.Delete(ctx, key)
	})
}

// Batch writes every pair atomically, as Client.Batch. It goes to any node:
// the pairs may belong to several shards, which the node coordinates.
func (c *Cluster) Batch(ctx context.Context, kvs []KV) error {
	if len(kvs) == 0 {
		return nil
	}
	return c.onAny(ctx, func(ctx context.Context, cl *Client) error { return cl.Batch(ctx, kvs) })
}

// Range returns the pairs with start <= key < end, as Client.Range. It goes
// to any node: a range spans every shard.
func (c *Cluster) Range(ctx context.Context, start, end []byte, limit int) ([]KV, error) {
	var kvs []KV
	err := c.onAny(ctx, func(ctx context.Context, cl *Client) error {
		var err error
		kvs, err = cl.Range(ctx, start, end, limit)
		return err
	})
	return kvs, err
}

// Ping sends PING to any node and expects PONG.
func (c *Cluster) Ping(ctx context.Context) error {
	return c.onAny(ctx, func(ctx context.Context, cl *Client) error { return cl.Ping(ctx) })
}

// ClusterStatus returns the CLUSTER_STATUS of any node.
func (c *Cluster) ClusterStatus(ctx context.Context) (Status, error) {
	var st Status
	err := c.onAny(ctx, func(ctx context.Context, cl *Client) error {
		var err error
		st, err = cl.ClusterStatus(ctx)
		return err
	})
	return st, err
}

// leaderOf returns the Client of the leader of key's shard, or nil when
// none is known.
func (c *Cluster) leaderOf(key []byte) *Client {
	r := c.routes.Load()
	if len(r.clients) == 0 {
		return nil
	}
	return r.clients[shard.Of(key, len(r.clients))-1]
}

// onKey runs op for a request about key: on the Client of the leader of
// key's shard, or, when none is known or op fails there with an error
// after which the request may go elsewhere (movable), on the seeds in
// order.
func (c *Cluster) onKey(ctx context.Context, key []byte, op func(context.Context, *Client) error) error {
	leader := c.leaderOf(key)
	if leader == nil {
		start := time.Now()
		return c.fallBack(withCallStart(ctx, start), start, nil, op, nil)
	}
	return c.do(ctx, leader, true, op)
}

// onAny runs op for a request any node serves: on the seeds in turn, so
// that such requests are spread over them, moving on as onKey does.
func (c *Cluster) onAny(ctx context.Context, op func(context.Context, *Client) error) error {
	return c.do(ctx, c.seeds[int(c.turn.Add(1)%uint64(len(c.seeds)))], false, op)
}

// do runs op on first, then on the seeds in order while it fails with an
// error after which the request may go elsewhere. isLeader says first is
// a shard's leader, whose failure suggests the map is out of date.
func (c *Cluster) do(ctx context.Context, first *Client, isLeader bool, op func(context.Context, *Client) error) error {
	start := time.Now()
	if first.down(start) {
		// It failed a connection attempt a moment ago: the others first.
		return c.fallBack(withCallStart(ctx, start), start, nil, op, nil)
	}
	// The usual case costs no allocation: one call on a node that is up.
	err := op(ctx, first)
	if !c.moveOn(ctx, start, first, err) {
		return err
	}
	if isLeader {
		c.readAgain() // a leader that cannot be reached has likely moved
	}
	return c.fallBack(withCallStart(ctx, start), start, first, op, err)
}

// fallBack runs op on the other nodes (tried, when not nil, was tried
// already) until one serves it or fails it with an error that is final:
// the nodes that are up first, the seeds in order, then those that
// recently refused a connection. err is the error to return when no node
// is left to try.
func (c *Cluster) fallBack(ctx context.Context, start time.Time, tried *Client, op func(context.Context, *Client) error, err error) error {
	order := make([]*Client, 0, len(c.seeds)+1)
	var down []*Client
	for _, cl := range c.seeds {
		switch {
		case cl == tried:
		case cl.down(start):
			down = append(down, cl)
		default:
			order = append(order, cl)
		}
	}
	order = append(order, down...)
	for _, cl := range order {
		err = op(ctx, cl)
		if !c.moveOn(ctx, start, cl, err) {
			return err
		}
	}
	if err != nil && movable(err) {
		err = fmt.Errorf("no node reachable, last: %w", err)
	}
	return err
}

// moveOn reports whether a request begun at start that failed on cl with
// err may go to another node, and there is time left for it. A node that
// refused it because it is shutting down is then tried last for a while,
// and its idle connections are dropped, as by a Client of several nodes:
// each would draw the same refusal.
func (c *Cluster) moveOn(ctx context.Context, start time.Time, cl *Client, err error) bool {
	if err == nil || !movable(err) || ctx.Err() != nil {
		return false
	}
	if shuttingDown(err) {
		for _, n := range cl.nodes {
			n.stopping()
		}
	}
	return c.opts.Timeout <= 0 || time.Since(start) < c.opts.Timeout
}

// down reports whether the Client's one node failed a connection attempt
// recently (nodeRetryAfter): it is then tried after the others, as a
// Client given several nodes dials it last.
func (c *Client) down(now time.Time) bool {
	for _, n := range c.nodes {
		if n.downUntil.Load() <= now.UnixNano() {
			return false
		}
	}
	return true
}

// readAgain has the refresher read the leader map now, unless it read it
// on such a request less than Refresh ago.
func (c *Cluster) readAgain() {
	select {
	case c.kick <- struct{}{}:
	default: // one is pending already
	}
}

// refresher reads the leader map every Refresh, and when readAgain asks,
// until ctx ends.
func (c *Cluster) refresher(ctx context.Context) {
	defer close(c.done)
	t := time.NewTimer(c.refresh)
	defer t.Stop()
	var asked time.Time // when a read that readAgain asked for last ran
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
			if time.Since(asked) < c.refresh {
				continue
			}
			asked = time.Now()
		}
		if leaders, err := c.readLeaders(ctx); err == nil {
			// An error keeps the map in use: a request whose leader
			// is unknown or unreachable goes to the seeds anyway.
			c.install(leaders)
		}
		t.Reset(c.refresh)
	}
}

// readLeaders returns the leader map (ShardLeaders) of the first node that
// knows a leader for every shard, asking the seeds in order, then the
// other nodes of the map in use, those that recently refused a connection
// last. When none does, the map naming the most leaders wins: a node cut
// off from the others knows no leader, while the rest of the cluster
// elects new ones.
func (c *Cluster) readLeaders(ctx context.Context) ([]string, error) {
	now := time.Now()
	var nodes, down []*Client
	add := func(cl *Client) {
		switch {
		case cl == nil || slices.Contains(nodes, cl) || slices.Contains(down, cl):
		case cl.down(now):
			down = append(down, cl)
		default:
			nodes = append(nodes, cl)
		}
	}
	for _, cl := range c.seeds {
		add(cl)
	}
	if r := c.routes.Load(); r != nil {
		for _, cl := range r.clients {
			add(cl)
		}
	}
	nodes = append(nodes, down...)
	var best []string
	bestKnown := -1
	var err error
	for _, cl := range nodes {
		leaders, lerr := cl.ShardLeaders(ctx)
		if lerr != nil {
			err = lerr
			if ctx.Err() != nil {
				break
			}
			continue
		}
		known := 0
		for _, a := range leaders {
			if a != "" {
				known++
			}
		}
		if known == len(leaders) {
			return leaders, nil
		}
		if known > bestKnown {
			best, bestKnown = leaders, known
		}
	}
	if best != nil {
		return best, nil
	}
	if len(nodes) > 1 {
		err = fmt.Errorf("no node answered, last: %w", err)
	}
	return nil, err
}

// install publishes leaders as the map in use, with a Client for each
// leader (an address no Client can be made for counts as no leader).
func (c *Cluster) install(leaders []string) {
	r := &routes{leaders: leaders, clients: make([]*Client, len(leaders))}
	if c.route {
		for i, a := range leaders {
			if a != "" {
				r.clients[i], _ = c.client(a)
			}
		}
	}
	c.routes.Store(r)
}

// client returns the Client of the node at addr, making it (without
// connecting) the first time.
func (c *Cluster) client(addr string) (*Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[addr]; ok {
		return cl, nil
	}
	cl, err := newClient(addr, c.opts)
	if err != nil {
		return nil, err
	}
	c.clients[addr] = cl
	return cl, nil
}

func (c *Cluster) closeClients() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.clients {
		cl.Close()
	}
}
