package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/kvstore/kv/client"
)

// joinRequest is what a new node asks a member for.
type joinRequest struct {
	ID       uint64
	Raft     string
	Client   string
	Password string // the member's requirepass, if any (cluster nodes share it)
	Shards   int    // the joining node's cluster.shards, which must be the cluster's
}

// joinRefusedError is a member's ERROR reply to CLUSTER_JOIN (or AUTH).
type joinRefusedError struct {
	addr, msg string
}

func (e *joinRefusedError) Error() string {
	return fmt.Sprintf("join via %s refused: %s", e.addr, e.msg)
}

// transient reports a refusal worth retrying: the member could not reach a
// quorum or timed out, as opposed to refusing the node itself.
func (e *joinRefusedError) transient() bool { return transientRefusal(e.msg) }

func transientRefusal(msg string) bool {
	return strings.HasPrefix(msg, "cluster unavailable") || strings.HasPrefix(msg, "timeout")
}

// joinOutcome is what sendJoin learnt about the node's membership.
type joinOutcome struct {
	// nonVoting says the node's replicas must start non-voting: it may have
	// been added as a non-voting replica of some shard.
	nonVoting bool
	// maybeAdded says a CLUSTER_JOIN was sent whose outcome is unknown (no
	// reply, or a timeout or unavailability reply): the node may have been
	// added although sendJoin failed.
	maybeAdded bool
}

// sendJoin asks the members at addrs, in order, to add the node, until one
// says OK or refuses it for good, retrying unreachable or unavailable
// members for up to wait. prior is what earlier starts' requests may have
// done (from the join marker). A refusal saying the node is a member
// already at its raft address is success if an earlier request, of this
// call or before, may have been carried out.
//
// The outcome says how the node's replicas must start. A replica that
// starts non-voting and is added as a voter at once stays non-voting in
// raft, and one that starts as a voter and finds itself added non-voting
// panics, so non-voting it is whenever a request that may have taken
// effect went to a member that adds joiners non-voting, or a member says
// the node is non-voting in some shard. markNonVoting records the former
// before such a request is sent, for a later start. CLUSTER_JOIN's reply
// is fixed as OK by PROTOCOL.md, so the member's build tells how it adds
// joiners: one that adds them non-voting reports nodes_nonvoting in
// CLUSTER_STATUS (the two came in the same build); one without it adds
// them as voters, promoting any non-voting replica of the node it finds
// (which a non-voting start then follows).
func sendJoin(ctx context.Context, addrs []string, req joinRequest, prior joinOutcome, markNonVoting func() error,
	wait time.Duration, log *slog.Logger) (joinOutcome, error) {
	out := prior
	marked := prior.nonVoting
	err := askMembers(ctx, addrs, req.Password, wait, log, func(ctx context.Context, addr string, c *client.Client) error {
		// Keys map to shards by their count: a node configured with another
		// count would serve wrong answers. CLUSTER_STATUS says the cluster's.
		st, err := c.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		if got := st.Get("shards"); got != strconv.Itoa(req.Shards) {
			return &joinRefusedError{addr: addr, msg: fmt.Sprintf("the cluster has %s shards but this node's cluster.shards = %d", got, req.Shards)}
		}
		_, addsNonVoting := st.Lookup("nodes_nonvoting")
		if addsNonVoting && !marked {
			if err := markNonVoting(); err != nil {
				return err
			}
			marked = true
		}
		_, err = c.Do(ctx, []byte("CLUSTER_JOIN"), strconv.AppendUint(nil, req.ID, 10), []byte(req.Raft), []byte(req.Client))
		var se *client.ServerError
		switch {
		case err == nil:
			out.nonVoting = out.nonVoting || addsNonVoting
			return nil
		case errors.As(err, &se):
			if member, nonVoting := parseAlreadyMember(se.Msg, req.ID); member && out.maybeAdded {
				log.Info("join was granted by an earlier request", "via", addr)
				out.nonVoting = out.nonVoting || nonVoting
				return nil
			}
			if !transientRefusal(se.Msg) && !strings.Contains(se.Msg, partlyDoneNote) {
				return err // nothing changed
			}
		}
		// Sent, and no answer for sure: it may yet be carried out.
		out.maybeAdded = true
		out.nonVoting = out.nonVoting || addsNonVoting
		return err
	})
	return out, err
}

// fetchDeployment asks the members at addrs for the cluster's raft
// deployment id (CLUSTER_DEPLOYMENT), as sendJoin asks to join. A member
// of a build without the command answers "unknown command": its cluster
// runs under dragonboat's default, 0.
func fetchDeployment(ctx context.Context, addrs []string, password string, wait time.Duration, log *slog.Logger) (uint64, error) {
	var id uint64
	err := askMembers(ctx, addrs, password, wait, log, func(ctx context.Context, addr string, c *client.Client) error {
		f, err := c.Do(ctx, []byte("CLUSTER_DEPLOYMENT"))
		var se *client.ServerError
		if errors.As(err, &se) && strings.HasPrefix(se.Msg, "unknown command") {
			id = 0
			return nil
		}
		if err != nil {
			return err
		}
		if len(f) != 2 || string(f[0]) != "DEPLOYMENT" {
			return &joinRefusedError{addr: addr, msg: fmt.Sprintf("unexpected reply to CLUSTER_DEPLOYMENT: %q", f)}
		}
		if id, err = strconv.ParseUint(string(f[1]), 10, 64); err != nil {
			return &joinRefusedError{addr: addr, msg: fmt.Sprintf("bad deployment id %q", f[1])}
		}
		return nil
	})
	return id, err
}

// askMembers runs ask against the members at addrs, in order (after AUTH
// when the cluster has a password), until one succeeds or refuses for
// good, retrying unreachable or unavailable members for up to wait.
func askMembers(ctx context.Context, addrs []string, password string, wait time.Duration, log *slog.Logger,
	ask func(ctx context.Context, addr string, c *client.Client) error) error {
	if len(addrs) == 0 {
		return errors.New("join: cluster.join lists no member")
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	backoff := 200 * time.Millisecond
	for {
		var last error
		for _, addr := range addrs {
			err := askVia(ctx, addr, password, ask)
			if err == nil {
				return nil
			}
			var refused *joinRefusedError
			if errors.As(err, &refused) && !refused.transient() {
				return err
			}
			log.Warn("join attempt failed", "via", addr, "err", err)
			last = err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("join: no member accepted the request: %w", last)
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// askVia runs ask against one member over the pipe protocol, through the
// Go client.
func askVia(ctx context.Context, addr, password string, ask func(ctx context.Context, addr string, c *client.Client) error) error {
	// Adding a node to every shard can take a while; the caller's deadline,
	// not the client's default request timeout, bounds it.
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	c, err := client.Dial(addr, client.Options{Password: password, PoolSize: 1,
		DialTimeout: min(timeout, 2*time.Second), Timeout: timeout})
	if err != nil {
		return joinError(addr, err)
	}
	defer c.Close()
	return joinError(addr, ask(ctx, addr, c))
}

// joinError turns a member's ERROR reply (to AUTH or CLUSTER_JOIN) into a
// joinRefusedError and wraps anything else with the member's address.
func joinError(addr string, err error) error {
	var refused *joinRefusedError
	if err == nil || errors.As(err, &refused) {
		return err
	}
	var se *client.ServerError
	if errors.As(err, &se) {
		return &joinRefusedError{addr: addr, msg: se.Msg}
	}
	return fmt.Errorf("join via %s: %w", addr, err)
}
