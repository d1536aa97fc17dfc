package sstable

import (
	"github.com/cespare/xxhash/v2"
)

// The filter block is one bloom filter over every user key of the table:
// the bit array followed by one byte holding k, the number of probes. Probe
// i of a key sets bit (h1 + i*h2) mod nbits, where h1 and h2 are the two
// halves of the key's xxhash64 (double hashing: one hash, k probes).

// maxProbes bounds k; a filter claiming more is damaged.
const maxProbes = 30

// bloomHash is the hash every probe of ukey derives from.
func bloomHash(ukey []byte) uint64 { return xxhash.Sum64(ukey) }

// bloomBuilder collects one hash per distinct user key.
type bloomBuilder struct {
	hashes []uint64
}

func (b *bloomBuilder) add(ukey []byte) { b.hashes = append(b.hashes, bloomHash(ukey)) }

// build returns the filter block for the collected keys.
func (b *bloomBuilder) build(bitsPerKey int) []byte {
	nbits := len(b.hashes) * bitsPerKey
	// Tiny filters have a high false-positive rate whatever k is.
	nbits = max(nbits, 64)
	nbytes := (nbits + 7) / 8
	nbits = nbytes * 8
	// k = bitsPerKey * ln 2 minimises the false-positive rate.
	k := min(max(int(float64(bitsPerKey)*0.69), 1), maxProbes)
	filter := make([]byte, nbytes+1)
	for _, h := range b.hashes {
		h1, h2 := uint32(h), uint32(h>>32)
		for i := range uint32(k) {
			pos := uint64(h1+i*h2) % uint64(nbits)
			filter[pos/8] |= 1 << (pos % 8)
		}
	}
	filter[nbytes] = byte(k)
	return filter
}

// validBloom reports whether filter is well formed, so that bloomMayContain
// can trust it.
func validBloom(filter []byte) bool {
	if len(filter) < 2 {
		return false
	}
	k := filter[len(filter)-1]
	return k >= 1 && k <= maxProbes
}

// bloomMayContain reports whether the key with hash h may be in the set
// filter was built from; false is certain. filter must be valid.
func bloomMayContain(filter []byte, h uint64) bool {
	k := uint32(filter[len(filter)-1])
	bits := filter[:len(filter)-1]
	nbits := uint64(len(bits)) * 8
	h1, h2 := uint32(h), uint32(h>>32)
	for i := range k {
		pos := uint64(h1+i*h2) % nbits
		if bits[pos/8]&(1<<(pos%8)) == 0 {
			return false
		}
	}
	return true
}
