package lsm

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/kvstore/kv/lsm/internal/base"
)

// batchHeaderLen is the size of a batch's header: the sequence number of its
// first operation (u64) and its operation count (u32), little-endian.
const batchHeaderLen = 12

// Batch is an ordered set of writes applied atomically by DB.Write: after a
// crash either every operation of a batch is present or none is.
//
// Its encoded form (Repr) is also the WAL record payload and what cluster
// mode proposes to raft: a 12-byte header (first sequence number, count)
// followed by records `kind:u8 | uvarint keylen | key | [uvarint vlen | value]`.
// The sequence number is filled in by the commit pipeline.
//
// A Batch is not safe for concurrent use. Keys and values are copied in, so
// the caller may reuse its slices after Put or Delete returns.
type Batch struct {
	data  []byte
	count uint32
}

// NewBatch returns an empty batch.
func NewBatch() *Batch { return &Batch{} }

func (b *Batch) init() {
	if len(b.data) < batchHeaderLen {
		b.data = append(b.data[:0], make([]byte, batchHeaderLen)...)
	}
}

// Put records key=value.
func (b *Batch) Put(key, value []byte) {
	b.init()
	b.data = append(b.data, byte(base.KindSet))
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.data = binary.AppendUvarint(b.data, uint64(len(value)))
	b.data = append(b.data, value...)
	b.count++
	binary.LittleEndian.PutUint32(b.data[8:12], b.count)
}

// Delete records the removal of key.
func (b *Batch) Delete(key []byte) {
	b.init()
	b.data = append(b.data, byte(base.KindDelete))
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	b.data = append(b.data, key...)
	b.count++
	binary.LittleEndian.PutUint32(b.data[8:12], b.count)
}

// Grow makes room for n more encoded bytes, so a caller that knows the
// size of what it will add allocates once.
func (b *Batch) Grow(n int) {
	b.init()
	b.data = slices.Grow(b.data, n)
}

// PutSize is an upper bound of the bytes Put(key, value) adds.
func PutSize(keyLen, valueLen int) int {
	return 1 + 2*binary.MaxVarintLen64 + keyLen + valueLen
}

// Len returns the number of operations in the batch.
func (b *Batch) Len() int { return int(b.count) }

// Size returns the encoded size in bytes.
func (b *Batch) Size() int { return len(b.data) }

// Reset empties the batch, keeping its buffer.
func (b *Batch) Reset() {
	b.data = b.data[:0]
	b.count = 0
}

// Repr returns the encoded batch. It aliases the batch's buffer.
func (b *Batch) Repr() []byte {
	b.init()
	return b.data
}

// SetRepr replaces the batch's contents with an encoded batch, after
// checking that it decodes completely. The batch keeps a reference to data.
func (b *Batch) SetRepr(data []byte) error {
	if len(data) < batchHeaderLen {
		return fmt.Errorf("decode batch: %d bytes is shorter than the header: %w", len(data), base.ErrCorruption)
	}
	nb := Batch{data: data, count: binary.LittleEndian.Uint32(data[8:12])}
	n := 0
	if err := nb.Each(func(bool, []byte, []byte) error { n++; return nil }); err != nil {
		return err
	}
	if n != int(nb.count) {
		return fmt.Errorf("decode batch: header says %d operations, found %d: %w", nb.count, n, base.ErrCorruption)
	}
	*b = nb
	return nil
}

// seq returns the sequence number assigned to the batch's first operation.
func (b *Batch) seq() uint64 { return binary.LittleEndian.Uint64(b.data[:8]) }

// setSeq assigns the sequence number of the batch's first operation; the
// i-th operation gets seq+i.
func (b *Batch) setSeq(seq uint64) {
	b.init()
	binary.LittleEndian.PutUint64(b.data[:8], seq)
}

// Each calls fn for every operation in order. del reports a deletion (value
// is then nil). The slices alias the batch and are valid until it changes.
// Each stops at the first error fn returns, or reports a malformed batch.
func (b *Batch) Each(fn func(del bool, key, value []byte) error) error {
	if len(b.data) < batchHeaderLen {
		return nil
	}
	p := b.data[batchHeaderLen:]
	for len(p) > 0 {
		kind := base.Kind(p[0])
		p = p[1:]
		key, rest, err := batchField(p)
		if err != nil {
			return err
		}
		p = rest
		var value []byte
		switch kind {
		case base.KindSet:
			value, p, err = batchField(p)
			if err != nil {
				return err
			}
		case base.KindDelete:
		default:
			return fmt.Errorf("decode batch: unknown kind %d: %w", kind, base.ErrCorruption)
		}
		if err := fn(kind == base.KindDelete, key, value); err != nil {
			return err
		}
	}
	return nil
}

func batchField(p []byte) (field, rest []byte, err error) {
	n, w := binary.Uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return nil, nil, fmt.Errorf("decode batch: bad field length: %w", base.ErrCorruption)
	}
	end := w + int(n)
	return p[w:end:end], p[end:], nil
}
