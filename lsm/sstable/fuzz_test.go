package sstable

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/lni/vfs"
)

// readerSeeds are small valid tables: every compression, with and without a
// filter, tiny and default blocks, and an empty table.
func readerSeeds(t testing.TB) [][]byte {
	es := []entry{
		{ukey: "apple", seq: 3, kind: base.KindSet, value: []byte("red red red red red red")},
		{ukey: "apple", seq: 2, kind: base.KindDelete},
		{ukey: "apple", seq: 1, kind: base.KindSet, value: []byte("green")},
		{ukey: "banana", seq: 4, kind: base.KindSet, value: []byte{}},
		{ukey: "cherry", seq: 5, kind: base.KindSet, value: bytes.Repeat([]byte("cherry "), 20)},
	}
	var seeds [][]byte
	for _, opts := range []WriterOptions{
		{Compression: NoCompression},
		{Compression: S2, BlockSize: 32},
		{Compression: Zstd},
		{Compression: S2, BloomBitsPerKey: -1},
	} {
		data, _ := buildTable(t, es, opts)
		seeds = append(seeds, data)
	}
	empty, _ := buildTable(t, nil, WriterOptions{})
	return append(seeds, empty)
}

// exerciseReader drives every read path of r with keys found in the table
// and a few fixed ones; it only requires that nothing panics and that
// errors are reported as corruption.
func exerciseReader(t *testing.T, r *Reader) {
	probe := [][]byte{[]byte(""), []byte("apple"), []byte("b"), []byte("cherry"), []byte("zzz")}
	it := r.NewIter()
	for it.First(); it.Valid() && len(probe) < 64; it.Next() {
		if ukey, _, ok := base.Split(it.Key()); ok {
			probe = append(probe, bytes.Clone(ukey))
		}
		_ = it.Value()
	}
	checkFuzzErr(t, it.Close())
	for _, ukey := range probe {
		r.MayContain(ukey)
		for _, seq := range []uint64{0, 1, 3, base.MaxSeq} {
			_, _, _, err := r.Get(ukey, seq)
			checkFuzzErr(t, err)
			it := r.NewIter()
			it.SeekGE(base.AppendKey(nil, ukey, seq, base.KindMax))
			for n := 0; it.Valid() && n < 4; n++ {
				it.Next()
			}
			checkFuzzErr(t, it.Close())
		}
	}
	_ = r.Meta()
}

func checkFuzzErr(t *testing.T, err error) {
	if err != nil && !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("error does not wrap ErrCorruption: %v", err)
	}
}

// FuzzReader opens arbitrary bytes as a table, once with checksums verified
// (as Open does) and once without, so that mutations reach the block,
// index, filter and properties decoders behind the checksums.
func FuzzReader(f *testing.F) {
	for _, s := range readerSeeds(f) {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, footerLen))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, verify := range []bool{true, false} {
			r, err := open(vfs.NewMemFile(data), int64(len(data)), ReaderOptions{FileNum: 1}, verify)
			if err != nil {
				checkFuzzErr(t, err)
				continue
			}
			exerciseReader(t, r)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzBlock feeds arbitrary bytes to the block decoder, with a seek key.
func FuzzBlock(f *testing.F) {
	keys := blockKeys(20)
	f.Add(buildBlock(keys, 16), keys[7])
	f.Add(buildBlock(keys, 1), keys[19])
	f.Add(buildBlock(nil, 16), keys[0])
	f.Add([]byte{0, 0, 0, 0}, []byte("12345678"))
	f.Fuzz(func(t *testing.T, block, key []byte) {
		var it blockIter
		if it.init(block) != nil {
			return
		}
		for it.first(); it.valid; it.nextEntry() {
			if len(it.key) < base.TrailerLen {
				t.Fatalf("entry with a %d-byte key", len(it.key))
			}
		}
		if len(key) >= base.TrailerLen {
			it.init(block)
			it.seekGE(key)
			if it.valid && base.Compare(it.key, key) < 0 {
				t.Fatalf("seekGE(%q) landed on smaller key %q", key, it.key)
			}
		}
	})
}
