package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

func TestBatchRoundTrip(t *testing.T) {
	b := NewBatch()
	b.Put([]byte("a"), []byte("1"))
	b.Delete([]byte("b"))
	b.Put([]byte("c"), nil)
	b.setSeq(77)
	var got []string
	var c Batch
	if err := c.SetRepr(append([]byte(nil), b.Repr()...)); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 3 || c.seq() != 77 {
		t.Fatalf("len %d seq %d", c.Len(), c.seq())
	}
	err := c.Each(func(del bool, k, v []byte) error {
		got = append(got, fmt.Sprintf("%v:%s=%s", del, k, v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "[false:a=1 true:b= false:c=]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v want %v", got, want)
	}
	b.Reset()
	if b.Len() != 0 || b.Size() != 0 {
		t.Fatal("reset left data")
	}
}

func TestBatchSetReprRejectsDamage(t *testing.T) {
	b := NewBatch()
	b.Put([]byte("key"), bytes.Repeat([]byte("v"), 10))
	repr := b.Repr()
	for cut := 0; cut < len(repr); cut++ {
		var c Batch
		if err := c.SetRepr(repr[:cut]); !errors.Is(err, base.ErrCorruption) {
			t.Fatalf("cut at %d: err %v", cut, err)
		}
	}
}
