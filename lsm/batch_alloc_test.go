//go:build !race

package lsm

import (
	"bytes"
	"testing"
)

// The race detector allocates on its own, so allocation counts are only
// checked without it.

func TestBatchGrowAllocatesOnce(t *testing.T) {
	k, v := []byte("key"), bytes.Repeat([]byte("v"), 100)
	allocs := testing.AllocsPerRun(100, func() {
		b := NewBatch()
		b.Grow(3 * PutSize(len(k), len(v)))
		for i := 0; i < 3; i++ {
			b.Put(k, v)
		}
		if b.Len() != 3 {
			t.Fatal("len")
		}
	})
	if allocs > 2 { // the Batch and its buffer
		t.Fatalf("%v allocations", allocs)
	}
}
