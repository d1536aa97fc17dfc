// Package client is the Go client for the pipe protocol of kvserver
// (PROTOCOL.md §1): Dial, then Put/Get/Delete/Range/Batch, CLUSTER_*
// queries, raw requests and pipelines, over a pool of connections to one
// server or to the nodes of a cluster. DialCluster returns a Cluster,
// which sends each key's requests to the leader of its shard, sparing the
// node-to-leader hop.
//
// Invariants:
//   - A Client is safe for concurrent use. Each request (or pipeline) holds
//     one pooled connection for its whole round trip, so replies are never
//     mixed between callers; at most Options.PoolSize connections are open.
//   - A connection goes back to the pool only after a complete, well-formed
//     exchange. Any I/O error, timeout, cancellation or unparseable reply
//     closes it: a connection that may still have a reply in flight would
//     hand that reply to the next caller. An idle connection is probed
//     before reuse (after an ERROR reply, or when idle a while), so one the
//     server has closed is replaced instead of failing a request.
//   - Requests are never retried: a write whose connection failed may or may
//     not have been applied (its error matches ErrOutcomeUnknown), and only
//     the caller can decide what to do. Connecting is retried: given a
//     cluster's nodes, a new connection goes to the next node in turn that
//     accepts one, so a dead node costs no request that was sent. A
//     Cluster moves a request to another node in the same cases only.
//   - Every new connection authenticates (with Options.Password, or the
//     password of the last successful Auth; one that Auth opens, with the
//     password it is trying) before it carries a request; after Auth,
//     connections opened before it are not reused.
//   - Byte slices returned to the caller are copies; they stay valid forever.
//
// A call that runs out of time, whichever bound fired (Options.Timeout,
// Options.DialTimeout, or the context's deadline, while connecting, waiting
// for a free connection or waiting for the reply), returns an error that
// satisfies net.Error with Timeout() true, so one test detects them all:
//
//	var ne net.Error
//	if errors.As(err, &ne) && ne.Timeout() {
//		// timed out
//	}
//
// When the context's deadline fired, the error also matches
// context.DeadlineExceeded (itself a net.Error whose Timeout is true). The
// error of a cancelled context matches context.Canceled and is not a
// timeout. A cluster node's own "timeout: outcome unknown" answer is a
// *ServerError, not a net.Error: the node answered. Whether a timed-out
// write took effect is a separate question, answered by
// errors.Is(err, ErrOutcomeUnknown).
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/codec"
)

// Options configures a Client. The zero value is usable.
type Options struct {
	// Password is sent with AUTH on every new connection when not empty.
	Password string
	// DialTimeout bounds connecting (and authenticating); default 5s.
	DialTimeout time.Duration
	// Timeout bounds each request or pipeline round trip, in addition to
	// the context's deadline; default 10s, negative means none. It runs
	// from the call: a call that waited for a free connection (PoolSize)
	// until its deadline passed fails without sending anything. An error
	// from any timeout satisfies net.Error with Timeout() true (see the
	// package documentation). Keep it above the server's
	// cluster.request_timeout (default 5s): a cluster node answers a
	// request it could not complete by then with an error that says
	// whether it was applied, which a shorter Timeout turns into a
	// connection error whose outcome is unknown.
	Timeout time.Duration
	// PoolSize is the most connections open at once; default 8. A caller
	// that finds them all busy waits for one, up to its context's deadline
	// or Timeout (then it fails without sending anything).
	PoolSize int
	// MaxReplyBytes bounds one reply line; default 512 MiB. A longer reply
	// (a Range over large values, say) is an error that names this option,
	// and its connection is closed.
	MaxReplyBytes int
	// TLS, when set, makes every connection TLS (the server's
	// server.tls_listen port) with this configuration; a ServerName left
	// empty is the host of the address dialled.
	TLS *tls.Config
}

const (
	defaultDialTimeout   = 5 * time.Second
	defaultTimeout       = 10 * time.Second
	defaultPoolSize      = 8
	defaultMaxReplyBytes = codec.DefaultMaxReply
)

func (o Options) withDefaults() Options {
	if o.DialTimeout <= 0 {
		o.DialTimeout = defaultDialTimeout
	}
	if o.Timeout == 0 {
		o.Timeout = defaultTimeout
	}
	if o.PoolSize <= 0 {
		o.PoolSize = defaultPoolSize
	}
	if o.MaxReplyBytes <= 0 {
		o.MaxReplyBytes = defaultMaxReplyBytes
	}
	return o
}

// Client talks to a kvserver, or to any node of a cluster, through a pool
// of connections.
type Client struct {
	addr  string  // as given to Dial
	nodes []*node // the addresses in addr
	turn  atomic.Uint64
	opts  Options
	pool  pool

	authMu   sync.Mutex
	password string        // sent with AUTH by every new connection
	authGen  atomic.Uint64 // bumped by Auth: older connections are redialed
}

// KV is one key/value pair.
type KV struct {
	Key, Value []byte
}

// Dial returns a Client for addr after checking, with a PING on a fresh
// connection, that a server answers and, when Options.Password is set,
// accepts the password. (PING needs no AUTH: a server with requirepass and
// no password given answers the first other request with a NOAUTH error;
// Auth can still authenticate the client then.)
//
// addr is host:port, or the client addresses of a cluster's nodes
// separated by commas ("127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082"):
// every node serves every request, so new connections go to the nodes in
// turn, and a node that refuses or times out a connection is passed over
// (and tried last for a second) until one accepts.
func Dial(addr string, opts Options) (*Client, error) {
	c, err := newClient(addr, opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.DialTimeout+max(c.opts.Timeout, 0))
	defer cancel()
	// Named "dial", not PING, in errors: the caller asked to connect.
	err = c.roundTrip(ctx, "dial", func(b []byte) []byte { return appendRequest(b, "PING") }, 1,
		func(_ int, f [][]byte) error { return expect("PING", f, "PONG") })
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// newClient is Dial without the check: no connection is opened until the
// first request. A Cluster makes its clients so, since a node it learns
// of from a leader map need not be up for the Cluster to work.
func newClient(addr string, opts Options) (*Client, error) {
	c := &Client{addr: addr, opts: opts.withDefaults(), password: opts.Password}
	for a := range strings.SplitSeq(addr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			c.nodes = append(c.nodes, &node{addr: a})
		}
	}
	if len(c.nodes) == 0 {
		return nil, fmt.Errorf("kv dial: no address in %q", addr)
	}
	c.pool.init(c.opts.PoolSize, c.dial, func(cn *conn) bool { return cn.authGen == c.authGen.Load() && !cn.stale() })
	return c, nil
}

// Close closes idle connections at once and the others when their current
// request ends. Later calls fail with ErrClosed.
func (c *Client) Close() error {
	c.pool.close()
	return nil
}

// Auth authenticates with password (AUTH): it is checked on one connection,
// then every connection of the client uses it (connections opened before
// are closed and reopened when next taken from the pool).
func (c *Client) Auth(ctx context.Context, password string) error {
	pw := []byte(password)
	// A connection opened for this AUTH authenticates with the new
	// password, not the current one: once the server's password has
	// changed (a restart with a new requirepass), the current one fails
	// every new connection, and Auth, the way to recover, could never
	// succeed. Marked with the current authGen, the connection is not
	// reused after a successful Auth bumps it, like the others opened
	// before; its AUTH is sent twice, harmlessly.
	dial := func(ctx context.Context, deadline time.Time) (*conn, error) {
		return c.dialAs(ctx, deadline, password, c.authGen.Load())
	}
	err := c.roundTripDial(ctx, "AUTH", dial, func(b []byte) []byte { return appendRequest(b, "AUTH", pw) }, 1,
		func(_ int, f [][]byte) error { return expect("AUTH", f, "OK") })
	if err != nil {
		return err
	}
	c.authMu.Lock()
	c.password = password
	c.authGen.Add(1)
	c.authMu.Unlock()
	return nil
}

// Addr returns the address given to Dial: one server's, or several.
func (c *Client) Addr() string { return c.addr }

// Ping sends PING and expects PONG.
func (c *Client) Ping(ctx context.Context) error {
	return c.simple(ctx, "PING", "PONG")
}

// Put stores value under key.
func (c *Client) Put(ctx context.Context, key, value []byte) error {
	return c.simple(ctx, "PUT", "OK", key, value)
}

// Delete removes key; deleting a missing key is not an error.
func (c *Client) Delete(ctx context.Context, key []byte) error {
	return c.simple(ctx, "DELETE", "OK", key)
}

// Get returns the value stored under key, or ErrNotFound.
func (c *Client) Get(ctx context.Context, key []byte) ([]byte, error) {
	var value []byte
	err := c.roundTrip(ctx, "GET", func(b []byte) []byte { return appendRequest(b, "GET", key) }, 1,
		func(_ int, f [][]byte) error {
			var err error
			value, err = parseGet(f)
			return err
		})
	return value, err
}

// Range returns the pairs with start <= key < end in ascending key order;
// an empty end means no upper bound. limit > 0 asks for at most that many
// pairs; the server also caps every reply at its server.range_limit
// (default 1000), so a reply shorter than limit does not mean the range is
// done: a caller that wants everything asks again from the last key plus a
// NUL byte until a reply comes back empty.
func (c *Client) Range(ctx context.Context, start, end []byte, limit int) ([]KV, error) {
	var kvs []KV
	build := func(b []byte) []byte {
		if limit > 0 {
			return appendRequest(b, "RANGE", start, end, strconv.AppendInt(nil, int64(limit), 10))
		}
		return appendRequest(b, "RANGE", start, end)
	}
	err := c.roundTrip(ctx, "RANGE", build, 1, func(_ int, f [][]byte) error {
		var err error
		kvs, err = parseRange(f)
		return err
	})
	return kvs, err
}

// Batch writes every pair atomically (BATCH): after a crash either all are
// present or none. An empty batch sends nothing.
func (c *Client) Batch(ctx context.Context, kvs []KV) error {
	if len(kvs) == 0 {
		return nil
	}
	build := func(b []byte) []byte {
		b = append(b, "BATCH"...)
		for _, kv := range kvs {
			b = append(b, '|')
			b = appendEscaped(b, kv.Key)
			b = append(b, '|')
			b = appendEscaped(b, kv.Value)
		}
		return append(b, '\n')
	}
	return c.roundTrip(ctx, "BATCH", build, 1, func(_ int, f [][]byte) error {
		if err := replyError(f); err != nil {
			return err
		}
		if len(f) != 2 || string(f[0]) != "OK" || string(f[1]) != strconv.Itoa(len(kvs)) {
			return unexpected("BATCH", f)
		}
		return nil
	})
}

// ClusterStatus returns the fields of CLUSTER_STATUS in the server's order.
func (c *Client) ClusterStatus(ctx context.Context) (Status, error) {
	var st Status
	err := c.roundTrip(ctx, "CLUSTER_STATUS", func(b []byte) []byte { return appendRequest(b, "CLUSTER_STATUS") }, 1,
		func(_ int, f [][]byte) error {
			var err error
			st, err = parseStatus(f)
			return err
		})
	return st, err
}

// ClusterNodes returns one description per member, as the server formats
// it: "id=1,client=127.0.0.1:8080,raft=127.0.0.1:7001,state=up".
func (c *Client) ClusterNodes(ctx context.Context) ([]string, error) {
	return c.countedList(ctx, "CLUSTER_NODES")
}

// countedList sends cmd, which takes no argument and answers
// CMD|n|item1|...|itemn, and returns the items.
func (c *Client) countedList(ctx context.Context, cmd string) ([]string, error) {
	var list []string
	err := c.roundTrip(ctx, cmd, func(b []byte) []byte { return appendRequest(b, cmd) }, 1,
		func(_ int, f [][]byte) error {
			if err := replyError(f); err != nil {
				return err
			}
			items, err := parseCounted(cmd, f, 1)
			if err != nil {
				return err
			}
			list = make([]string, len(items))
			for i, it := range items {
				list[i] = string(it)
			}
			return nil
		})
	return list, err
}

// ClusterCheck runs a consistency check of the cluster (CLUSTER_CHECK): the
// replicas of every shard are compared at one point of its raft log. It
// returns one description per shard, such as
// "shard=1,index=120,state=consistent,keys=1000,nodes=1:9f86d081884c7d65/2:9f86d081884c7d65/3:down";
// state is consistent, inconsistent or incomplete. Every replica reads its
// whole shard: give it a timeout to match the data.
func (c *Client) ClusterCheck(ctx context.Context) ([]string, error) {
	return c.countedList(ctx, "CLUSTER_CHECK")
}

// ClusterLeader describes the leader of the shard owning key
// ("id=2,client=127.0.0.1:8081"); an empty key asks about the shard of the
// empty key.
func (c *Client) ClusterLeader(ctx context.Context, key []byte) (string, error) {
	var leader string
	build := func(b []byte) []byte {
		if len(key) == 0 {
			return appendRequest(b, "CLUSTER_LEADER")
		}
		return appendRequest(b, "CLUSTER_LEADER", key)
	}
	err := c.roundTrip(ctx, "CLUSTER_LEADER", build, 1, func(_ int, f [][]byte) error {
		if err := replyError(f); err != nil {
			return err
		}
		if len(f) != 2 || string(f[0]) != "CLUSTER_LEADER" {
			return unexpected("CLUSTER_LEADER", f)
		}
		leader = string(f[1])
		return nil
	})
	return leader, err
}

// ClusterRemove removes node id from every shard (CLUSTER_REMOVE).
func (c *Client) ClusterRemove(ctx context.Context, id uint64) error {
	return c.simple(ctx, "CLUSTER_REMOVE", "OK", strconv.AppendUint(nil, id, 10))
}

// Do sends one request made of fields (the first is the command) and
// returns the reply's fields. An ERROR reply is returned as *ServerError.
func (c *Client) Do(ctx context.Context, fields ...[]byte) ([][]byte, error) {
	if len(fields) == 0 || len(fields[0]) == 0 {
		return nil, errors.New("kv do: no command")
	}
	var reply [][]byte
	cmd := string(fields[0])
	err := c.roundTrip(ctx, cmd, func(b []byte) []byte { return appendFields(b, fields) }, 1,
		func(_ int, f [][]byte) error {
			if err := replyError(f); err != nil {
				return err
			}
			reply = copyFields(f)
			return nil
		})
	return reply, err
}

// simple sends cmd with args and expects a one-field reply equal to want.
func (c *Client) simple(ctx context.Context, cmd, want string, args ...[]byte) error {
	return c.roundTrip(ctx, cmd, func(b []byte) []byte { return appendRequest(b, cmd, args...) }, 1,
		func(_ int, f [][]byte) error { return expect(cmd, f, want) })
}

// isQuit reports whether a request closes its connection on the server side.
func isQuit(cmd string) bool { return strings.EqualFold(cmd, "QUIT") }

// roundTrip runs one exchange on a pooled connection: build appends n
// requests to the write buffer, each of the n replies is handed to handle in
// order. handle's fields are valid only during the call. The first error
// handle returns is the result; after a *ServerError or ErrNotFound the
// remaining replies are still read so the connection stays in step, after
// any other error (a reply of the wrong shape) the connection is dropped.
func (c *Client) roundTrip(ctx context.Context, cmd string, build func([]byte) []byte, n int, handle func(i int, fields [][]byte) error) error {
	return c.roundTripDial(ctx, cmd, c.dial, build, n, handle)
}

// roundTripDial is roundTrip opening a connection, when no idle one is
// left, with dial.
func (c *Client) roundTripDial(ctx context.Context, cmd string, dial func(context.Context, time.Time) (*conn, error),
	build func([]byte) []byte, n int, handle func(i int, fields [][]byte) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv %s: %w", cmd, err)
	}
	deadline, fromCtx := c.deadline(ctx)
	for attempt := 0; ; attempt++ {
		cn, err := c.pool.getOrDial(ctx, deadline, dial)
		if err != nil {
			// Nothing sent. A dial cut short by the context's deadline fails
			// with the net package's "i/o timeout": make it match the
			// context's error as the other failures do.
			return fmt.Errorf("kv %s %s: %w", cmd, c.addr, contextError(ctx, deadline, fromCtx, err))
		}
		// The wait for a free connection may have outlasted the deadline (the
		// wait itself ends only with the context). Writing now would fail on
		// the deadline, close a healthy connection and report an outcome
		// unknown for a request that was never sent.
		if err := expired(ctx, deadline, fromCtx); err != nil {
			c.pool.putUnused(cn)
			return fmt.Errorf("kv %s %s: not sent: %w", cmd, c.addr, err)
		}
		ok, err := cn.exchange(ctx, deadline, build, n, handle)
		quit := isQuit(cmd)
		if ok && quit {
			ok = false
		}
		if n == 1 && len(c.nodes) > 1 && attempt < len(c.nodes) && shuttingDown(err) {
			// The node refused the request unread: it did nothing, as
			// if the connection had never opened. Another node takes it.
			cn.node.stopping()
			c.pool.put(cn, false)
			continue
		}
		c.pool.put(cn, ok)
		if !ok && !quit {
			c.pool.suspectIdle()
		}
		if err != nil && !ok {
			err = contextError(ctx, deadline, fromCtx, err)
			// The request went out (or may have): unless the server's own
			// answer was read (see replyAfterWriteError), nobody knows
			// whether it took effect. Dial's check has no effect to speak of.
			var se *ServerError
			if cmd != "dial" && !errors.As(err, &se) {
				err = fmt.Errorf("%w (%w)", err, ErrOutcomeUnknown)
			}
			return fmt.Errorf("kv %s %s: %w", cmd, cn.addr, err)
		}
		return err
	}
}

// msgShuttingDown is the refusal of a server that is shutting down: it
// answers it to a request it has not read (a definite refusal, nothing
// done) and to a connection it will not serve, and closes.
const msgShuttingDown = "server is shutting down"

// shuttingDown reports whether err is a server's refusal because it is
// shutting down.
func shuttingDown(err error) bool {
	var se *ServerError
	return errors.As(err, &se) && se.Msg == msgShuttingDown
}

// movable reports whether a request that failed with err, as a Client
// reports it, may be sent to another node: for the same two reasons a
// Client given several nodes moves on to the next, no connection to the
// node could be opened (dialError: nothing was sent) or the node refused
// the request unread (shuttingDown: nothing was done). Any other failure
// is an answer, or a request that may have been applied; sending that
// again could apply a write twice.
func movable(err error) bool {
	var de *dialError
	return errors.As(err, &de) || shuttingDown(err)
}

// expired returns the error of a call whose context has ended or whose
// deadline has passed, and nil otherwise.
func expired(ctx context.Context, deadline time.Time, fromCtx bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if deadline.IsZero() || time.Now().Before(deadline) {
		return nil
	}
	if fromCtx {
		return context.DeadlineExceeded // its timer has not fired yet
	}
	return os.ErrDeadlineExceeded
}

// contextError makes err, the failure of I/O bounded by deadline, report
// the context's error when the context ended or its deadline passed, so
// that errors.Is(err, context.DeadlineExceeded) and context.Canceled hold
// whichever fired first: the socket deadline may fire a moment before the
// context's own timer.
func contextError(ctx context.Context, deadline time.Time, fromCtx bool, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && fromCtx && !time.Now().Before(deadline) && errors.Is(err, os.ErrDeadlineExceeded) {
		ctxErr = context.DeadlineExceeded
	}
	switch {
	case ctxErr == nil || errors.Is(err, ctxErr):
		return err
	case errors.Is(ctxErr, context.Canceled):
		// Cancellation interrupts I/O by setting a past deadline (see
		// exchange): the "i/o timeout" that comes of it is kept as text
		// only, or the error would satisfy net.Error with Timeout() true
		// and a cancelled call would look like a timeout.
		return fmt.Errorf("%w (%v)", ctxErr, err)
	}
	return fmt.Errorf("%w (%w)", ctxErr, err)
}

// deadline is the earlier of the context's deadline and Timeout after the
// call began (callStart), and whether it is the context's; zero means none.
func (c *Client) deadline(ctx context.Context) (d time.Time, fromCtx bool) {
	if c.opts.Timeout > 0 {
		d = callStart(ctx).Add(c.opts.Timeout)
	}
	if cd, ok := ctx.Deadline(); ok && (d.IsZero() || !d.Before(cd)) {
		return cd, true
	}
	return d, false
}

// startKey is the context key under which a Cluster passes when its call
// began to the Clients it tries in turn: Options.Timeout then bounds the
// whole call, as it bounds a Client's call across the nodes it dials,
// and a call that moves on to a second node after the first timed out
// connecting does not get a second Timeout. A context value rather than a
// parameter, so that every method of Client serves both without a
// variant of each.
type startKey struct{}

// withCallStart returns ctx marked with the time a Cluster call began.
func withCallStart(ctx context.Context, start time.Time) context.Context {
	return context.WithValue(ctx, startKey{}, start)
}

// callStart is when the call with ctx began: now, unless a Cluster
// marked it with an earlier time.
func callStart(ctx context.Context) time.Time {
	if t, ok := ctx.Value(startKey{}).(time.Time); ok {
		return t
	}
	return time.Now()
}
