package main

import (
	"encoding/binary"
	"math/rand/v2"
)

// keySize is db_bench's key: a 16-digit zero-padded decimal number.
const keySize = 16

// formatKey writes key i into dst[:keySize] as 16 zero-padded decimal digits
// and returns that slice.
func formatKey(dst []byte, i uint64) []byte {
	k := dst[:keySize]
	for p := keySize - 1; p >= 0; p-- {
		k[p] = byte('0' + i%10)
		i /= 10
	}
	return k
}

// formatMissingKey writes key i followed by '.', db_bench's readmissing key:
// it sorts between key i and key i+1, so no table's bounds exclude it and a
// lookup has to consult the bloom filters.
func formatMissingKey(dst []byte, i uint64) []byte {
	k := formatKey(dst, i)
	return append(k, '.')
}

// valueStampSize is the prefix of each value that holds its key's index, so
// reads can check they got the right key's value.
const valueStampSize = 8

// valueGen hands out values like db_bench's RandomGenerator: slices of a
// 1 MiB buffer made of pieces whose first half is random printable bytes
// and whose second half repeats the first, so values compress to about
// half. Two generators with the same seed produce the same values.
type valueGen struct {
	data []byte
	pos  int
	buf  []byte
}

func newValueGen(seed uint64, size int) *valueGen {
	const dataSize = 1 << 20
	const piece = 100
	rng := rand.New(rand.NewPCG(seed, 0x76616c7565))
	data := make([]byte, 0, dataSize+piece)
	raw := make([]byte, piece/2)
	for len(data) < dataSize {
		for i := range raw {
			raw[i] = ' ' + byte(rng.IntN(95))
		}
		for n := 0; n < piece; n += len(raw) {
			data = append(data, raw[:min(len(raw), piece-n)]...)
		}
	}
	for len(data) < size {
		data = append(data, data...)
	}
	return &valueGen{data: data, buf: make([]byte, size)}
}

// fork returns a generator over the same data that starts at byte pos, for
// concurrent writers.
func (g *valueGen) fork(pos int) *valueGen {
	return &valueGen{data: g.data, pos: pos % len(g.data), buf: make([]byte, len(g.buf))}
}

// next returns the value for key index i. It is valid until the next call.
func (g *valueGen) next(i uint64) []byte {
	n := len(g.buf)
	if g.pos+n > len(g.data) {
		g.pos = 0
	}
	copy(g.buf, g.data[g.pos:g.pos+n])
	g.pos += n
	if n >= valueStampSize {
		binary.LittleEndian.PutUint64(g.buf, i)
	}
	return g.buf
}

// valueMatches reports whether v is a value written for key index i.
func valueMatches(v []byte, i uint64, size int) bool {
	if len(v) != size {
		return false
	}
	return size < valueStampSize || binary.LittleEndian.Uint64(v) == i
}

// permutation returns 0..n-1 in an order fixed by seed.
func permutation(n int, seed uint64) []uint32 {
	p := make([]uint32, n)
	for i := range p {
		p[i] = uint32(i)
	}
	rng := rand.New(rand.NewPCG(seed, 0x7065726d))
	rng.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}
