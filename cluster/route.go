package cluster

// FNV-1a 64-bit parameters, as in hash/fnv.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// shardOf maps a key to its shard id in 1..shards: FNV-1a-64 of the key
// (what hash/fnv.New64a computes), modulo shards, plus one. Changing it would
// move keys between shards, so it is part of the on-disk format.
func shardOf(key []byte, shards int) uint64 {
	if shards <= 1 {
		return 1
	}
	h := uint64(fnvOffset64)
	for _, c := range key {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return h%uint64(shards) + 1
}

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
