package record

import (
	"encoding/binary"
	"hash/crc32"
	"sync"
)

// This file answers the one question the Reader asks after meeting a damaged
// record: does an intact record start anywhere after it?
//
// Checking every offset directly costs the candidate's length each time, and
// in W bytes of garbage about W²/2³³ offsets hold a length that fits, so the
// direct scan is cubic in W (minutes for a 64 MiB remainder), and quadratic
// for ordinary structured data full of small integers. Instead the scan uses
// the linearity of CRCs: with F(j) the CRC of rest[:j],
//
//	crc(rest[s:e]) = F(e) ^ shift(F(s), e-s)
//
// where shift multiplies by x^(8(e-s)) modulo the polynomial (zlib's
// crc32_combine). F is kept at every 32nd offset, so F anywhere costs one
// short hardware CRC, and each candidate costs one to three carry-less
// multiplications: the classification is linear in W whatever the data.

// mulX8 returns v·x⁸ modulo the polynomial.
func mulX8(v uint32) uint32 {
	for range 8 {
		v = v>>1 ^ crc32.Castagnoli&-(v&1)
	}
	return v
}

// shifter multiplies CRCs by x^(8k): low[d] is x^(8d) for a 16-bit d,
// mid[d] and high[d] are x^(8·d·2¹⁶) and x^(8·d·2²⁴).
type shifter struct {
	low       [1 << 16]uint32
	mid, high [256]uint32
	// reduce[i] is i·x⁴ for the four low bits i: p·x⁴ = p>>4 ^ reduce[p&15].
	reduce [16]uint32
}

// theShifter is built on first use (the first damaged log) and read-only
// after, like crc32's own tables.
var theShifter = sync.OnceValue(newShifter)

func newShifter() *shifter {
	s := new(shifter)
	for i := range s.reduce {
		v := uint32(i)
		for range 4 {
			v = v>>1 ^ crc32.Castagnoli&-(v&1)
		}
		s.reduce[i] = v
	}
	s.low[0] = 1 << 31 // x⁰
	for d := 1; d < len(s.low); d++ {
		s.low[d] = mulX8(s.low[d-1])
	}
	s.mid[0], s.high[0] = 1<<31, 1<<31
	step := mulX8(s.low[len(s.low)-1]) // x^(8·2¹⁶)
	for d := 1; d < 256; d++ {
		s.mid[d] = s.mul(s.mid[d-1], step)
	}
	step = s.mul(s.mid[255], step) // x^(8·2²⁴)
	for d := 1; d < 256; d++ {
		s.high[d] = s.mul(s.high[d-1], step)
	}
	return s
}

// shift returns crc·x^(8k).
func (s *shifter) shift(crc, k uint32) uint32 {
	crc = s.mul(s.low[k&0xffff], crc)
	if d := byte(k >> 16); d != 0 {
		crc = s.mul(s.mid[d], crc)
	}
	if d := byte(k >> 24); d != 0 {
		crc = s.mul(s.high[d], crc)
	}
	return crc
}

// mul returns a*b modulo the Castagnoli polynomial, both in the reflected
// representation crc32 uses (bit 31 is x⁰). It takes four bits of a at a
// time (Horner's rule from the highest degree): a quarter of the steps of
// the bit-at-a-time form, and no data-dependent branches.
func (s *shifter) mul(a, b uint32) uint32 {
	// t[i] = q(x)·b where bit 3 of i is q's x⁰ coefficient ... bit 0 its x³.
	var t [16]uint32
	t[8] = b
	t[4] = b>>1 ^ crc32.Castagnoli&-(b&1)
	t[2] = t[4]>>1 ^ crc32.Castagnoli&-(t[4]&1)
	t[1] = t[2]>>1 ^ crc32.Castagnoli&-(t[2]&1)
	t[3] = t[2] ^ t[1]
	t[5], t[6], t[7] = t[4]^t[1], t[4]^t[2], t[4]^t[3]
	for i := 9; i < 16; i++ {
		t[i] = t[8] ^ t[i-8]
	}
	var p uint32
	for shift := 0; shift < 32; shift += 4 { // nibble of x²⁸..x³¹ first
		p = p>>4 ^ s.reduce[p&15] ^ t[a>>shift&15]
	}
	return p
}

// unmask inverts mask.
func unmask(m uint32) uint32 {
	c := m - crcMaskDelta
	return c<<15 | c>>17
}

// prefixCRC gives F(j), the CRC of b[:j], for any j.
type prefixCRC struct {
	b  []byte
	cp []uint32 // cp[i] = F(i·prefixStride)
}

const prefixStride = 32

func newPrefixCRC(b []byte) *prefixCRC {
	cp := make([]uint32, len(b)/prefixStride+1)
	for i := 1; i < len(cp); i++ {
		cp[i] = crc32.Update(cp[i-1], crcTable, b[(i-1)*prefixStride:i*prefixStride])
	}
	return &prefixCRC{b: b, cp: cp}
}

func (f *prefixCRC) at(j int) uint32 {
	i := j / prefixStride
	return crc32.Update(f.cp[i], crcTable, f.b[i*prefixStride:j])
}

// findIntact returns the first offset at or after from where an intact
// record starts in rest, if there is one. It is equivalent to calling intact
// at every offset, in time linear in len(rest).
func findIntact(rest []byte, from int) (int, bool) {
	var (
		sh *shifter // fetched on the first plausible header; most tails have none
		f  *prefixCRC
	)
	for p := max(from, 0); p+HeaderLen <= len(rest); p++ {
		hdr := rest[p : p+HeaderLen]
		n := binary.LittleEndian.Uint32(hdr[4:])
		if binary.LittleEndian.Uint64(hdr) == 0 || n > MaxPayload || uint64(n) > uint64(len(rest)-p-HeaderLen) {
			continue
		}
		if sh == nil {
			sh, f = theShifter(), newPrefixCRC(rest)
		}
		// crc(rest[p+4:end]) == F(end) ^ shift(F(p+4), n+4)
		end := p + HeaderLen + int(n)
		if unmask(binary.LittleEndian.Uint32(hdr)) == f.at(end)^sh.shift(f.at(p+4), n+4) {
			return p, true
		}
	}
	return 0, false
}
