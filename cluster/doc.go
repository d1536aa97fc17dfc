// Package cluster replicates the key space over dragonboat raft groups and
// serves it through the store.Store interface, so any node of the cluster
// answers any request.
//
// # Layout
//
// One dragonboat NodeHost per process (NodeHostDir <storage.dir>/raft) hosts
// cluster.shards raft groups, shard ids 1..N, each with a replica on every
// member; the replica id of a node is its cluster.node_id in every shard.
// Each replica's state machine is an lsm.DB in <storage.dir>/shard-<id>,
// opened without the engine's WAL: the raft log is the log. NodeHosts talk
// over this package's TCP transport (transport.go), below dragonboat's send
// queues: one CRC-checked frame per message batch or snapshot chunk.
//
// # Key to shard
//
// A key belongs to shard FNV-1a-64(key) mod shards + 1 (hash/fnv's New64a,
// over the raw key bytes). The mapping is fixed for the life of a cluster,
// which is why cluster.shards can never change.
//
// # Invariants
//
//   - The state machine stores every user key under the prefix 'u' and its
//     own metadata under 'm' (the last applied raft index, the proposers'
//     sequence states, the client addresses of joined members), so no user
//     key can collide with metadata. Reads strip the prefix.
//   - Update writes the effects of its entries and the index of the last of
//     them in one lsm batch, so after a crash the state machine is exactly the
//     state after some applied index, and Open reports that index; dragonboat
//     replays the rest from the raft log. Sync flushes the memtable, which is
//     what makes applied entries durable; only then may dragonboat compact the
//     log below them.
//   - Update is deterministic: it reads nothing but the entries and the state.
//     A malformed command is skipped (with a rejected result) on every replica
//     alike rather than returned as an error, because an error from Update
//     stops the process.
//   - A write is acknowledged only after raft committed it and this node
//     applied it. Dragonboat's on-disk state machines only take the no-op
//     session, so exactly-once is ours: every proposal carries (proposer
//     id, seq, floor) and the state machine applies a proposer's seqs once
//     each and in order (seqState in command.go). That makes re-sending
//     safe, and the proposer re-sends whatever is in flight after a dropped
//     or timed-out attempt or a leader change (a proposal forwarded to a
//     leader that died is never answered). A proposal still unconfirmed at
//     the request timeout fails with "timeout: outcome unknown"; one that
//     provably never entered the log fails with "cluster unavailable: ...".
//   - Writes to one shard from one node are applied in the order Write was
//     called: one proposer goroutine per shard packs every write queued
//     meanwhile into one proposal (raft-level group commit) and the seq
//     order holds across re-sends.
//   - Reads are linearizable unless cluster.read_consistency is "stale": a
//     read waits for a ReadIndex issued after the read arrived, then reads the
//     local replica. One ReadIndex serves every read queued before it.
//   - Recovering from a snapshot builds a new lsm directory next to the live
//     one and switches a fsynced CURRENT file to it, so a crash leaves either
//     the old state or the complete new one.
//
// # Membership
//
// Initial members come from [[cluster.members]] and bootstrap every shard. A
// new node (empty data directory, cluster.join set) sends
// CLUSTER_JOIN|id|raft|client over the client port of a member, which adds it
// to every shard as a non-voting replica (Join) and records its client
// address in shard 1; the new node then starts its replicas in join mode,
// catches up from the log or a snapshot, and promotes itself to a voter of
// each shard once its replica there has caught up (promoteLoop), while the
// shard keeps a live quorum counting it. A non-voting replica counts toward
// no quorum, so a joiner that dies first changes nothing. Replica ids are
// never reused: dragonboat refuses them, and Join refuses them first with a
// clear error. Join also checks, before it changes anything, the addresses
// (host:port) and that the new node's raft port answers.
package cluster
