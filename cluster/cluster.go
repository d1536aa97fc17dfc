package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/lni/vfs"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/cluster/raftwal"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/lsm/sstable"
	"github.com/kvstore/kv/store"
)

// Memory and log-size policy.
const (
	// minMemtableBytes is the floor of a shard's share of
	// storage.memtable_bytes.
	minMemtableBytes = 1 << 20
	// minInMemLogBytes is the floor of a shard's unapplied in-memory raft
	// log; proposals beyond it wait (ErrSystemBusy, retried).
	minInMemLogBytes = 64 << 20
	// maxCompactionOverhead bounds the entries kept below a snapshot so a
	// slightly lagging follower gets entries rather than a full snapshot.
	maxCompactionOverhead = 1000
	// raftQueueBytes bounds the replication entries queued for one peer
	// connection (sending) and for one shard (receiving); dragonboat drops
	// replication messages past it, which raft sends again. Dragonboat
	// leaves both unbounded by default (2048 and 1024 messages of up to
	// 64 MiB), and a leader catching a follower up from the log sends it
	// its whole backlog again at every heartbeat answer (resendfilter.go): the
	// copies waited in these queues for a follower busy taking in the
	// first, on top of those the step worker held. Past this bound one
	// more message of any size still goes in (the check comes before the
	// message counts), so two of the largest entries can wait for a peer,
	// as before, and a queue holds at most about 130 MiB.
	raftQueueBytes = maxFramePayload
)

// errClosed is reported for requests to a closing node.
var errClosed = errors.New("cluster unavailable: node shutting down")

func errNoLeader(shard uint64) error {
	return fmt.Errorf("cluster unavailable: no leader for shard %d", shard)
}

// Cluster is this node's part of the replicated store: a dragonboat
// NodeHost with one replica of every shard, and the request paths in front
// of it. It implements store.Store.
type Cluster struct {
	cfg     conf.Config
	nodeID  uint64
	shards  int
	timeout time.Duration // cluster.request_timeout
	stale   bool          // read_consistency = "stale"
	log     *slog.Logger
	fs      vfs.FS
	dir     string

	cache      *cache.Cache
	tableFiles *sstable.FileCache // bounds the open table files of every shard

	wal       atomic.Pointer[raftwal.DB] // the raft log, unless dragonboat's pebble LogDB
	releasing []atomic.Bool              // per shard: releaseLog under way
	// earlySnapshots counts releaseLog's snapshots.
	earlySnapshots atomic.Uint64

	lsmOpts lsm.Options
	nh      *dragonboat.NodeHost
	// deploymentID is the NodeHost's raft deployment id (deployment).
	deploymentID uint64
	// nonVoting says this node joined as a non-voting replica of every
	// shard (joinNonVoting): its replicas start non-voting, and promoteLoop
	// runs until it is a voter everywhere.
	nonVoting bool
	// members caches each shard's membership for the status view (index
	// shard-1; refresh's alone).
	members []*dragonboat.Membership
	// refreshMu serializes refresh, which updates members.
	refreshMu sync.Mutex

	// attemptTimeout bounds one attempt of a proposal or ReadIndex; both
	// are retried (proposals are exactly-once) until the request timeout.
	// Dragonboat can lose a request silently (a proposal a follower
	// forwards while its connection to the leader is down), so without
	// this a request would wait out its whole timeout.
	attemptTimeout time.Duration
	// election is a shard's election timeout (electionTicks), the longest
	// a leader transfer runs before dragonboat gives it up.
	election time.Duration

	leaders   []shardLeader // index shard-1
	proposers []*proposer
	readers   []*reader
	// leaderMoves counts the balancer's leadership moves that took
	// (balance.go).
	leaderMoves atomic.Uint64
	// rechecks counts forwarded proposals sent again early
	// (proposer.recheck).
	rechecks atomic.Uint64
	// leaving is set when the node starts handing its leaderships over to
	// stop (TransferLeadership); its probe answers then say so, and the
	// other nodes hand it none.
	leaving atomic.Bool

	smMu sync.Mutex
	sms  map[uint64]*stateMachine

	view atomic.Pointer[view]

	closed atomic.Bool
	// removed is set once a replica of this node applied the node's
	// removal (removed.go): every request is then refused.
	removed   atomic.Bool
	removedMu sync.Mutex // serializes noteRemoved
	// removals is shared with the raft transport: the replicas this node
	// knows removed (refresh), to tell them if they still send.
	removals *removals
	// space is the free-space guard (space.go); nil when
	// cluster.min_free_bytes is 0.
	space *spaceGuard
	// tls secures the raft port's connections (peertls.go); nil: plain
	// TCP.
	tls       *peerTLS
	bgMu      sync.Mutex
	bgClosed  bool // no new membership calls; guards loops.Add after Open
	stop      chan struct{}
	stopCtx   context.Context
	cancel    context.CancelFunc
	loops     sync.WaitGroup // proposer/reader loops, status loop, membership calls
	waiters   sync.WaitGroup // goroutines waiting on dragonboat request states
	closeOnce sync.Once
}

var _ store.Store = (*Cluster)(nil)

// Open starts this node's NodeHost and a replica of every shard: it
// bootstraps them from [[cluster.members]] on first start, restarts them
// when their data exists, and for a new node with cluster.join set first
// asks a member to add it. It does not wait for leaders: requests retry
// until the request timeout, and a cluster restarted one node at a time
// only has a quorum once enough nodes are up.
func Open(ctx context.Context, cfg conf.Config, logger *slog.Logger) (*Cluster, error) {
	return open(ctx, cfg, logger, vfs.Default)
}

func open(ctx context.Context, cfg conf.Config, logger *slog.Logger, fs vfs.FS) (*Cluster, error) {
	return openWithFaults(ctx, cfg, logger, fs, nil)
}

// openWithFaults is open with test faults on the node's raft links.
func openWithFaults(ctx context.Context, cfg conf.Config, logger *slog.Logger, fs vfs.FS, faults *linkFaults) (*Cluster, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cc := cfg.Cluster
	switch {
	case cc.NodeID == 0:
		return nil, errors.New("open cluster: cluster.node_id must be set")
	case cc.RaftAddress == "":
		return nil, errors.New("open cluster: cluster.raft_address must be set")
	case cc.Shards < 1:
		return nil, fmt.Errorf("open cluster: cluster.shards must be at least 1, got %d", cc.Shards)
	case cc.RTTMillis < 1:
		return nil, fmt.Errorf("open cluster: cluster.rtt_ms must be at least 1, got %d", cc.RTTMillis)
	case cc.RequestTimeout <= 0:
		return nil, fmt.Errorf("open cluster: cluster.request_timeout must be positive")
	}
	c := &Cluster{
		cfg:     cfg,
		nodeID:  cc.NodeID,
		shards:  cc.Shards,
		timeout: cc.RequestTimeout.D(),
		stale:   cc.ReadConsistency == conf.ReadStale,
		log:     logger.With("component", "cluster", "node", cc.NodeID),
		fs:      fs,
		dir:     cfg.Storage.Dir,
		sms:     make(map[uint64]*stateMachine),
		stop:    make(chan struct{}),
	}
	c.stopCtx, c.cancel = context.WithCancel(context.Background())
	c.removals = &removals{heard: c.noteRemoved}
	// An attempt outlasts a few elections; electionTicks may have raised
	// the configured timeout to cover persisting the largest entry.
	tick := time.Duration(cc.RTTMillis) * time.Millisecond
	configured, effective := time.Duration(cc.ElectionRTT)*tick, time.Duration(electionTicks(cfg))*tick
	c.attemptTimeout = min(max(20*configured, 4*effective, 2*time.Second), c.timeout)
	c.election = effective

	var err error
	if c.tls, err = loadPeerTLS(cc, c.log); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	if err := fs.MkdirAll(c.dir, 0o700); err != nil {
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	if min := cc.MinFreeBytes; min > 0 {
		c.space = newSpaceGuard(c.dir, uint64(min), freeSpace, c.log)
		c.space.check()
	}
	if c.cache, err = cache.New(int64(cfg.Storage.BlockCacheBytes)); err != nil {
		return nil, fmt.Errorf("open cluster: block cache: %w", err)
	}
	c.lsmOpts = store.LSMOptions(cfg.Storage, logger.With("component", "lsm"))
	c.lsmOpts.DisableWAL = true
	c.lsmOpts.Cache = c.cache
	c.tableFiles = sstable.NewFileCache(cfg.Storage.MaxOpenTables)
	c.lsmOpts.TableFiles = c.tableFiles
	c.lsmOpts.FS = fs
	c.lsmOpts.MemtableBytes = ShardMemtableBytes(cfg)

	c.leaders = make([]shardLeader, c.shards)
	for i := range c.leaders {
		c.leaders[i].changed = make(chan struct{})
	}
	if err := c.checkDataDir(); err != nil {
		c.cache.Close()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	if c.deploymentID, err = c.deployment(ctx); err != nil {
		c.cache.Close()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	setRaftLogger(logger.With("component", "raft", "node", cc.NodeID))
	c.releasing = make([]atomic.Bool, c.shards)
	logDB, err := logDBFactory(fs, fs.PathJoin(c.dir, RaftDir), raftwal.Factory{
		Log: logger.With("component", "raftwal"), SegmentBytes: raftLogSegmentBytes(cfg), Opened: c.wal.Store,
	})
	if err != nil {
		c.cache.Close()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
		DeploymentID:   c.deploymentID,
		NodeHostDir:    fs.PathJoin(c.dir, RaftDir),
		RTTMillisecond: uint64(cc.RTTMillis),
		RaftAddress:    cc.RaftAddress,
		// Our transport does the TLS (peertls.go); dragonboat only checks
		// the files are named, and logs whether traffic is secured.
		MutualTLS:           c.tls != nil,
		CAFile:              cc.TLSCAFile,
		CertFile:            cc.TLSCertFile,
		KeyFile:             cc.TLSKeyFile,
		MaxSendQueueSize:    raftQueueBytes,
		MaxReceiveQueueSize: raftQueueBytes,
		RaftEventListener:   leaderListener{c},
		SystemEventListener: systemListener{c},
		Expert: expertConfig(cfg, fs, logDB, transportFactory{log: logger.With("component", "transport"), faults: faults, removals: c.removals,
			stale: max(engineStale, 4*time.Duration(cc.HeartbeatRTT)*tick, 2*effective), secret: []byte(cc.Secret), space: c.space, leaving: &c.leaving, tls: c.tls,
			resendWindow: effective / 2}),
	})
	if err != nil {
		c.cache.Close()
		// dragonboat's error (internal/server.ErrLockDirectory) says only
		// "failed to lock data directory".
		if strings.Contains(err.Error(), "lock data directory") {
			return nil, fmt.Errorf("open cluster: %s is in use by another process (another kvserver on the same storage.dir?): %w", fs.PathJoin(c.dir, RaftDir), err)
		}
		return nil, fmt.Errorf("open cluster: start raft node host on %s: %w", cc.RaftAddress, err)
	}
	c.nh = nh
	c.proposers = make([]*proposer, c.shards)
	c.readers = make([]*reader, c.shards)
	proposerID := rand.Uint64() | 1 // never 0, which means "no checks"
	for i := range c.shards {
		shard := uint64(i + 1)
		c.proposers[i] = newProposer(c, shard, proposerID)
		c.readers[i] = newReader(c, shard)
	}
	for i := range c.shards {
		c.loops.Add(2)
		go c.proposers[i].run()
		go c.readers[i].run()
	}
	if err := c.startReplicas(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("open cluster: %w", err)
	}
	c.refresh()
	c.loops.Add(2)
	go c.statusLoop()
	go c.every(logKeeperInterval, c.keepLog)
	if c.space != nil {
		c.loops.Add(1)
		go c.spaceLoop()
	}
	if c.nonVoting {
		c.loops.Add(1)
		go c.promoteLoop()
	}
	if cc.BalanceLeaders {
		c.loops.Add(1)
		go c.balanceLoop(balanceInterval, balanceSettle)
	}
	c.log.Info("cluster node started", "raft", cc.RaftAddress, "shards", c.shards)
	return c, nil
}

// clientAddress is the address this node gives the cluster and clients for
// its client port: cluster.client_address, or server.listen.
func (c *Cluster) clientAddress() string {
	if a := c.cfg.Cluster.ClientAddress; a != "" {
		return a
	}
	return c.cfg.Server.Listen
}

// RaftDir is the NodeHost's directory in storage.dir: the raft log
// (dragonboat's LogDB, a pebble store of its own) and node identity.
const RaftDir = "raft"

// shardDir is where a shard's state machine lives.
func (c *Cluster) shardDir(shard uint64) string { return shardDirPath(c.fs, c.dir, shard) }

// shardDirPath is the directory of shard's state machine in the node
// directory dir.
func shardDirPath(fs vfs.FS, dir string, shard uint64) string {
	return fs.PathJoin(dir, fmt.Sprintf("shard-%d", shard))
}

// joinMarker exists while (and after) this node asks to join: a restart
// that finds it knows its join request may already have been granted.
func (c *Cluster) joinMarker() string { return c.fs.PathJoin(c.dir, joinMarkerFile) }

const joinMarkerFile = "JOINING"

// startReplicas starts a replica of every shard, in the mode its data calls
// for: restart, bootstrap from the initial members, or join.
func (c *Cluster) startReplicas(ctx context.Context) error {
	cc := c.cfg.Cluster
	fresh := make(map[uint64]bool)
	for s := uint64(1); s <= uint64(c.shards); s++ {
		if !c.nh.HasNodeInfo(s, c.nodeID) {
			fresh[s] = true
		}
	}
	newIdentity, err := c.checkIdentity(fresh)
	if err != nil {
		return err
	}
	if err := c.checkShardDirs(fresh); err != nil {
		return err
	}
	join := false
	if len(fresh) > 0 {
		_, err := c.fs.Stat(c.joinMarker())
		joinedBefore := err == nil
		switch {
		case joinedBefore:
			join = true
		case len(fresh) < c.shards:
			// A bootstrap interrupted between shards: finish it.
		case len(cc.Join) > 0:
			join = true
		}
		if !join {
			self := false
			for _, m := range cc.Members {
				self = self || m.ID == c.nodeID
			}
			if !self {
				return fmt.Errorf("node %d has no raft data, is not in cluster.members and cluster.join is empty", c.nodeID)
			}
		}
		// A replica that raft has never seen must start from an empty
		// state machine; anything in its directory is left from an
		// interrupted bootstrap or join of this node (checkIdentity has
		// refused data of any other).
		for s := range fresh {
			if err := c.fs.RemoveAll(c.shardDir(s)); err != nil {
				return fmt.Errorf("clear stale state of shard %d: %w", s, err)
			}
		}
		if join {
			if err := c.requestJoin(ctx, joinedBefore, len(fresh) == c.shards); err != nil {
				return err
			}
		}
	}
	if c.nonVoting, err = c.joinedNonVoting(); err != nil {
		return err
	}
	if newIdentity {
		if err := writeIdentity(c.fs, c.dir, identity{NodeID: c.nodeID, Shards: c.shards, Deployment: c.deploymentID, Raft: cc.RaftAddress}); err != nil {
			return err
		}
	}
	members := make(map[uint64]dragonboat.Target)
	for _, m := range cc.Members {
		members[m.ID] = m.Raft
	}
	for s := uint64(1); s <= uint64(c.shards); s++ {
		var err error
		// A replica that joined non-voting starts so at every start, also
		// once promoted: see joinNonVoting.
		rc := c.shardConfig(s)
		rc.IsNonVoting = c.nonVoting
		if fresh[s] {
			// Before raft records the replica, so that a replica raft
			// knows always has a directory (checkShardDirs); after the
			// identity, which tells a later start that the directory
			// is this node's.
			if _, err := createShardDir(c.fs, c.shardDir(s)); err != nil {
				return fmt.Errorf("shard %d: %w", s, err)
			}
		}
		switch {
		case !fresh[s]:
			err = c.nh.StartOnDiskReplica(nil, false, c.newStateMachine, rc)
		case join:
			err = c.nh.StartOnDiskReplica(nil, true, c.newStateMachine, rc)
		default:
			err = c.nh.StartOnDiskReplica(members, false, c.newStateMachine, c.shardConfig(s))
		}
		if err != nil {
			return fmt.Errorf("start replica of shard %d: %w", s, err)
		}
	}
	return nil
}

// checkShardDirs refuses to start a node one of whose replicas raft knows
// (not fresh) has lost its shard directory: removed by hand, or restored
// without it. Its applied state is gone and raft cannot rebuild it from
// this node's log, which snapshots have truncated; started, dragonboat
// panicked at every start ("ss.OnDiskIndex > s.onDiskInitIndex").
func (c *Cluster) checkShardDirs(fresh map[uint64]bool) error {
	for s := uint64(1); s <= uint64(c.shards); s++ {
		if fresh[s] {
			continue
		}
		dir := c.shardDir(s)
		name, err := readCurrent(c.fs, dir)
		if err != nil {
			return fmt.Errorf("shard %d: %w", s, err)
		}
		if name != "" {
			_, err := c.fs.Stat(c.fs.PathJoin(dir, name))
			if err == nil {
				continue
			}
			if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("shard %d: %w", s, err)
			}
		}
		return fmt.Errorf("shard %d's state in %s is missing, but raft has node %d's replica of it: its applied data is gone and cannot be rebuilt from this node's raft log; restore %s from a copy taken with the node stopped, or remove node %d from the cluster (kvcli cluster remove %d), wipe %s and join with a new cluster.node_id",
			s, dir, c.nodeID, dir, c.nodeID, c.nodeID, c.dir)
	}
	return nil
}

// checkRaftAddress refuses to start with a raft address other than the one
// the data directory was created with: dragonboat would refuse too, with
// "not the owner of the data directory".
func (c *Cluster) checkRaftAddress() error {
	have, found, err := readIdentity(c.fs, c.dir)
	if err != nil || !found || have.Raft == "" || sameAddr(have.Raft, c.cfg.Cluster.RaftAddress) {
		return err
	}
	return fmt.Errorf("data directory %s belongs to the node with raft address %s, but cluster.raft_address = %s: a node's raft address cannot change (raft keeps it with its log); restore it, or start this node on an empty directory and join with a new node_id",
		c.dir, have.Raft, c.cfg.Cluster.RaftAddress)
}

// checkIdentity refuses to start on a data directory of another node, or
// with another shard count than the cluster was created with. It reports
// whether startReplicas must write the identity file: there is none yet (a
// new node, or data of a build without the file), or it lacks the raft
// address.
func (c *Cluster) checkIdentity(fresh map[uint64]bool) (write bool, err error) {
	want := identity{NodeID: c.nodeID, Shards: c.shards}
	have, found, err := readIdentity(c.fs, c.dir)
	if err != nil {
		return false, err
	}
	if found {
		if have.NodeID != want.NodeID || have.Shards != want.Shards {
			return false, fmt.Errorf("data directory %s belongs to node %d of a cluster with %d shards, but the configuration says node_id = %d, shards = %d: a node keeps its id, and shards are fixed for the life of the cluster", c.dir, have.NodeID, have.Shards, c.nodeID, c.shards)
		}
		// An earlier build's file lacks the raft address; dragonboat has
		// accepted this one as the data's owner (NewNodeHost), so it is
		// recorded now.
		return have.Raft == "", nil
	}
	dirs, err := shardDirs(c.fs, c.dir)
	if err != nil {
		return false, err
	}
	for _, s := range dirs {
		if s > uint64(c.shards) {
			return false, fmt.Errorf("data directory %s holds data of shard %d, but cluster.shards = %d: shards are fixed for the life of the cluster", c.dir, s, c.shards)
		}
	}
	if len(dirs) > 0 && len(fresh) == c.shards {
		return false, fmt.Errorf("data directory %s holds shard data but no raft state of node %d: it belongs to another node id; start node %d on an empty directory", c.dir, c.nodeID, c.nodeID)
	}
	return true, nil
}

// requestJoin asks a member to add this node to every shard. asked says
// an earlier start asked already (its join marker exists), so the node may
// be a member. noReplicas says no replica of this node has started yet.
//
// The join marker is written before the request, which may add the node
// even if its reply is lost, and says how the replicas are to start:
// non-voting once a request that may add the node as a non-voting replica
// is sent, so that a later start knows (sendJoin), and as the outcome says
// after it. Once a replica has started, the marker says how it started and
// stays.
func (c *Cluster) requestJoin(ctx context.Context, asked, noReplicas bool) error {
	cc := c.cfg.Cluster
	prior := joinOutcome{maybeAdded: asked}
	if asked {
		var err error
		if prior.nonVoting, err = c.markerNonVoting(); err != nil {
			return err
		}
	}
	mark := func(content string) error {
		if !noReplicas {
			return nil
		}
		if err := writeFileAtomic(c.fs, c.dir, joinMarkerFile, []byte(content)); err != nil {
			return fmt.Errorf("join: %w", err)
		}
		return nil
	}
	if !asked {
		if err := mark(joinVoter); err != nil {
			return err
		}
	}
	req := joinRequest{
		ID:       c.nodeID,
		Raft:     cc.RaftAddress,
		Client:   c.clientAddress(),
		Password: c.cfg.Server.RequirePass,
		Shards:   c.shards,
	}
	wait := max(6*c.timeout, 30*time.Second)
	out, err := sendJoin(ctx, cc.Join, req, prior, func() error { return mark(joinNonVoting) }, wait, c.log)
	if err != nil {
		if !out.maybeAdded {
			// Nothing was granted: a later start may try again afresh.
			c.fs.Remove(c.joinMarker())
		}
		return err
	}
	if out.nonVoting {
		err = mark(joinNonVoting)
	} else {
		err = mark(joinVoter)
	}
	if err != nil {
		return err
	}
	c.log.Info("joined the cluster", "via", cc.Join, "non-voting", out.nonVoting)
	return nil
}

// shardConfig is the raft configuration of this node's replica of shard.
func (c *Cluster) shardConfig(shard uint64) config.Config {
	cc := c.cfg.Cluster
	se := uint64(cc.SnapshotEntries)
	return config.Config{
		ShardID:             shard,
		ReplicaID:           c.nodeID,
		ElectionRTT:         electionTicks(c.cfg),
		HeartbeatRTT:        uint64(cc.HeartbeatRTT),
		CheckQuorum:         true,
		PreVote:             true,
		SnapshotEntries:     se,
		CompactionOverhead:  min(se/2, maxCompactionOverhead),
		OrderedConfigChange: true,
		MaxInMemLogSize:     uint64(max(minInMemLogBytes, 2*int64(c.cfg.Server.MaxFrameBytes))),
	}
}

// newStateMachine is the dragonboat factory of this node's state machines.
func (c *Cluster) newStateMachine(shardID, replicaID uint64) sm.IOnDiskStateMachine {
	s := newStateMachine(shardID, replicaID, c.shardDir(shardID), c.fs, c.lsmOpts, c.log)
	c.smMu.Lock()
	c.sms[shardID] = s
	c.smMu.Unlock()
	return s
}

// Close stops the request paths (queued requests fail with "node shutting
// down"), then the NodeHost, which ends every pending request.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.bgMu.Lock()
		c.bgClosed = true
		c.bgMu.Unlock()
		close(c.stop)
		c.cancel()
		c.loops.Wait()
		c.nh.Close()
		c.waiters.Wait()
		c.cache.Close()
		c.log.Info("cluster node stopped")
	})
	return nil
}

// shardLeader is this node's knowledge of one shard's leader, kept current
// by dragonboat's leader events. changed is closed (and replaced) on every
// change, so waiters can select on it.
type shardLeader struct {
	mu       sync.Mutex
	leaderID uint64
	term     uint64
	changed  chan struct{}
	// down says a request on the shard waited its whole timeout without
	// a leader, and none has appeared since: new requests then fail at
	// once (failFast) instead of each waiting out its own timeout — with
	// a quorum of nodes down, a pipeline of alternating reads and writes
	// on one connection took a request_timeout per request. Written under
	// mu, read without it on every request.
	down atomic.Bool
	// lostAt is when leaderID last became 0 (zero: it never had one).
	lostAt time.Time
}

func (l *shardLeader) set(leaderID, term uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if leaderID != 0 {
		l.down.Store(false)
	} else if l.leaderID != 0 {
		l.lostAt = time.Now()
	}
	if l.leaderID == leaderID && l.term == term {
		return
	}
	l.leaderID, l.term = leaderID, term
	close(l.changed)
	l.changed = make(chan struct{})
}

// markDown records that a request made at start timed out, if the shard
// has had no leader since then: a request that timed out for another
// reason (a backlog, an overloaded shard) while an election happened to
// run at its deadline says nothing about the leader.
func (l *shardLeader) markDown(start time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leaderID == 0 && !l.lostAt.After(start) {
		l.down.Store(true)
	}
}

// failFast reports whether a new request should fail at once: the shard
// has no leader, and a request already waited its timeout for one. The
// request has done nothing yet, so its failure is definite.
func (l *shardLeader) failFast() bool {
	if !l.down.Load() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down.Load() && l.leaderID == 0
}

// watch returns a channel closed at the next leader change.
func (l *shardLeader) watch() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

func (l *shardLeader) get() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leaderID
}

// leaderListener receives dragonboat's leader events, on one dragonboat
// goroutine; it only records them.
type leaderListener struct{ c *Cluster }

func (l leaderListener) LeaderUpdated(info raftio.LeaderInfo) {
	if info.ShardID == 0 || info.ShardID > uint64(len(l.c.leaders)) {
		return
	}
	l.c.leaders[info.ShardID-1].set(info.LeaderID, info.Term)
}

// sleepOrStop waits d, or less if the node stops or wake fires; it reports
// whether the node is stopping.
func (c *Cluster) sleepOrStop(d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-wake:
		return false
	case <-c.stop:
		return true
	}
}

// ShardMemtableBytes is the memtable size of each shard's engine: an
// equal share of storage.memtable_bytes, the process's budget, but at least
// minMemtableBytes (so many shards can take more than the budget).
func ShardMemtableBytes(cfg conf.Config) int64 {
	return max(int64(cfg.Storage.MemtableBytes)/int64(cfg.Cluster.Shards), minMemtableBytes)
}

// expertConfig is the NodeHost's engine, LogDB and transport setup. One
// step worker and one LogDB instance serve every shard: each raft round of
// the node then costs one LogDB write and one fsync for all shards
// together, which measured 10-35% less CPU per write than dragonboat's
// defaults (16 and 16) on two cores. Dragonboat records both counts in the
// raft directory and refuses to open it with others, so they can never
// change. The LogDB's memory settings may change (logDBConfig). The
// transport is ours (transport.go).
//
// One apply worker serves every shard too (dragonboat's default is 16, one
// per shard here): a round that commits entries of k shards then wakes one
// goroutine instead of k. Eight alternating pairs of 512-client put runs
// against three nodes: 39.9K against 36.2K puts/s (medians), 32.9 against
// 36 µs of node CPU per put (docs/benchmarks.md, session 19). The price:
// applies of all shards run in turn, so whatever holds up one shard's
// apply holds up the others' meanwhile: its Sync (a memtable flush, at
// each of its snapshots and every 180 s, during which dragonboat keeps its
// Update waiting) or a write stall of its lsm. Dragonboat does not record
// this count; it may change.
func expertConfig(cfg conf.Config, fs vfs.FS, logDB config.LogDBFactory, transport transportFactory) config.ExpertConfig {
	e := config.ExpertConfig{
		LogDB:            logDBConfig(cfg),
		LogDBFactory:     logDB,
		Engine:           config.GetDefaultEngineConfig(),
		FS:               fs,
		TransportFactory: transport,
	}
	e.Engine.ExecShards = 1
	e.Engine.ApplyShards = 1
	return e
}

// logDBFactory is the raft log store of the NodeHost in raftDir: ours
// (package raftwal), or dragonboat's pebble LogDB (nil) for a directory
// it wrote, as every node did before raftwal. Dragonboat records the
// store's type in the directory and refuses to open it with another.
func logDBFactory(fs vfs.FS, raftDir string, wal raftwal.Factory) (config.LogDBFactory, error) {
	_, pebble, err := raftLogStore(fs, raftDir)
	if err != nil {
		return nil, err
	}
	if pebble {
		wal.Log.Info("raft log: dragonboat's pebble LogDB (this node's raft directory was written by it)")
		return nil, nil
	}
	return wal, nil
}

// raftLogStore finds the raft log store of the NodeHost in raftDir, in
// <raftDir>/<host>/<deployment>/: raftwal's directory, or dragonboat's
// pebble LogDB (pebble set). dir is "" when there is neither yet.
func raftLogStore(fs vfs.FS, raftDir string) (dir string, pebble bool, err error) {
	hosts, err := fs.List(raftDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", false, fmt.Errorf("list %s: %w", raftDir, err)
	}
	for _, h := range hosts {
		deployments, _ := fs.List(fs.PathJoin(raftDir, h))
		for _, d := range deployments {
			if p := fs.PathJoin(raftDir, h, d, "logdb-0"); exists(fs, p) {
				return p, true, nil
			}
			if p := fs.PathJoin(raftDir, h, d, raftwal.Dir); exists(fs, p) {
				return p, false, nil
			}
		}
	}
	return "", false, nil
}

func exists(fs vfs.FS, path string) bool {
	_, err := fs.Stat(path)
	return err == nil
}

// RaftLog finds the raft log store of the node whose storage.dir is
// dataDir (see raftLogStore).
func RaftLog(dataDir string) (dir string, pebble bool, err error) {
	return raftLogStore(vfs.Default, vfs.Default.PathJoin(dataDir, RaftDir))
}
