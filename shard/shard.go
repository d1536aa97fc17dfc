// Package shard maps keys to the raft groups (shards) of a cluster. The
// mapping is part of the on-disk format and of the wire contract: a
// cluster's nodes place every key by it, and clients that route requests
// to a shard's leader compute it the same way, so it never changes.
package shard

// FNV-1a 64-bit parameters, as in hash/fnv.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// Of returns the shard, in 1..shards, that owns key: FNV-1a-64 of the key
// (what hash/fnv.New64a computes) modulo shards, plus one. With shards < 2
// every key is in shard 1.
func Of(key []byte, shards int) uint64 {
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

// Keys returns, for each shard 1..shards in order, a short key that the
// shard owns, for asking a node about a shard with a command that takes a
// key (CLUSTER_LEADER|key). The keys are the decimal numbers 0, 1, 2, ...,
// the first one of each shard; they are the same on every call.
func Keys(shards int) [][]byte {
	if shards < 1 {
		shards = 1
	}
	keys := make([][]byte, shards)
	found := 0
	for i := 0; found < shards; i++ {
		k := appendDecimal(nil, i)
		s := Of(k, shards) - 1
		if keys[s] == nil {
			keys[s] = k
			found++
		}
	}
	return keys
}

func appendDecimal(dst []byte, i int) []byte {
	if i >= 10 {
		dst = appendDecimal(dst, i/10)
	}
	return append(dst, byte('0'+i%10))
}
