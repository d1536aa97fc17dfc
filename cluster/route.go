package cluster

import "github.com/kvstore/kv/shard"

// shardOf maps a key to its shard id in 1..shards (shard.Of: part of the
// on-disk format and of what routing clients compute).
func shardOf(key []byte, shards int) uint64 { return shard.Of(key, shards) }

// Key prefixes inside a shard's lsm: user data and metadata never share a
// key because their first bytes differ.
const (
	prefixUser = 'u'
	prefixMeta = 'm'
)

var (
	// appliedKey holds the raft index of the last entry Update applied,
	// 8 bytes big-endian.
	appliedKey = []byte("m" + "applied")
	// memberKeyPrefix + 8-byte big-endian node id holds a member record.
	memberKeyPrefix = []byte("m" + "member/")
	// seqKeyPrefix + 8-byte big-endian proposer id holds its seqState.
	seqKeyPrefix = []byte("m" + "seq/")
)

// userKey appends the stored form of a user key to dst.
func userKey(dst, key []byte) []byte {
	dst = append(dst, prefixUser)
	return append(dst, key...)
}

// userUpper is the exclusive upper bound of the stored user key space.
var userUpper = []byte{prefixUser + 1}
