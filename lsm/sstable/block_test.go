package sstable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

func blockKeys(n int) [][]byte {
	var keys [][]byte
	for i := range n {
		keys = append(keys, base.AppendKey(nil, fmt.Appendf(nil, "user%05d", i*2), uint64(i+1), base.KindSet))
	}
	return keys
}

func buildBlock(keys [][]byte, interval int) []byte {
	w := blockWriter{restartInterval: interval}
	for i, k := range keys {
		w.add(k, fmt.Appendf(nil, "v%d", i))
	}
	return bytes.Clone(w.finish())
}

func TestBlockRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 15, 16, 17, 100} {
		for _, interval := range []int{1, 16} {
			t.Run(fmt.Sprintf("n%d/interval%d", n, interval), func(t *testing.T) {
				keys := blockKeys(n)
				block := buildBlock(keys, interval)
				if want := (n + interval - 1) / interval; int(binary.LittleEndian.Uint32(block[len(block)-4:])) != want {
					t.Fatalf("restart count %d, want %d", binary.LittleEndian.Uint32(block[len(block)-4:]), want)
				}
				var it blockIter
				if err := it.init(block); err != nil {
					t.Fatal(err)
				}
				i := 0
				for it.first(); it.valid; it.nextEntry() {
					if !bytes.Equal(it.key, keys[i]) || string(it.val) != fmt.Sprintf("v%d", i) {
						t.Fatalf("entry %d = %q %q", i, it.key, it.val)
					}
					i++
				}
				if it.err != nil || i != n {
					t.Fatalf("read %d of %d entries, err %v", i, n, it.err)
				}
				for i, k := range keys {
					it.seekGE(k)
					if !it.valid || !bytes.Equal(it.key, k) {
						t.Fatalf("seekGE(key %d) = %q", i, it.key)
					}
					// Between this key and the next.
					between := base.AppendKey(nil, append(bytes.Clone(base.UserKey(k)), 0), base.MaxSeq, base.KindMax)
					it.seekGE(between)
					if i+1 < n {
						if !it.valid || !bytes.Equal(it.key, keys[i+1]) {
							t.Fatalf("seekGE(after key %d) = %q", i, it.key)
						}
					} else if it.valid {
						t.Fatalf("seekGE past the last key = %q", it.key)
					}
				}
				it.seekGE(base.AppendKey(nil, nil, 0, base.KindSet))
				if n > 0 && (!it.valid || !bytes.Equal(it.key, keys[0])) {
					t.Fatalf("seekGE(start) = %q", it.key)
				}
			})
		}
	}
}

func TestBlockPrefixCompression(t *testing.T) {
	keys := blockKeys(32)
	compressed := buildBlock(keys, 16)
	whole := buildBlock(keys, 1)
	if len(compressed) >= len(whole) {
		t.Fatalf("prefix-compressed block %d bytes, uncompressed %d", len(compressed), len(whole))
	}
}

func TestBlockMalformed(t *testing.T) {
	valid := buildBlock(blockKeys(20), 16)
	for _, tc := range []struct {
		name  string
		block []byte
	}{
		{"empty", nil},
		{"short", []byte{1, 0}},
		{"restart count too large", binary.LittleEndian.AppendUint32(nil, 1<<30)},
		{"entries without restarts", append([]byte{0, 9, 0}, binary.LittleEndian.AppendUint32(nil, 0)...)},
		{"restart beyond entries", append(bytes.Clone(valid[:len(valid)-12]), append(binary.LittleEndian.AppendUint32(nil, 1<<20), 1, 0, 0, 0)...)},
		{"key overruns", append([]byte{0, 200, 0, 'k'}, append(binary.LittleEndian.AppendUint32(nil, 0), 1, 0, 0, 0)...)},
		{"short key", append([]byte{0, 2, 0, 'k', 'k'}, append(binary.LittleEndian.AppendUint32(nil, 0), 1, 0, 0, 0)...)},
		{"bad varint", append(bytes.Repeat([]byte{0xff}, 11), append(binary.LittleEndian.AppendUint32(nil, 0), 1, 0, 0, 0)...)},
		{"shared at restart", append(append([]byte{3, 8, 0}, make([]byte, 8)...), append(binary.LittleEndian.AppendUint32(nil, 0), 1, 0, 0, 0)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var it blockIter
			if err := it.init(tc.block); err != nil {
				return
			}
			for it.first(); it.valid; it.nextEntry() {
			}
			if it.err == nil {
				it.seekGE(base.AppendKey(nil, []byte("zzz"), 0, base.KindSet))
			}
			if it.err == nil {
				t.Fatal("malformed block read without error")
			}
		})
	}
}

func TestDecodeHandle(t *testing.T) {
	h := handle{offset: 1 << 40, length: 4096}
	got, err := decodeHandle(appendHandle(nil, h))
	if err != nil || got != h {
		t.Fatalf("decode = %v, %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0x80}, {1}, {1, 2, 3}} {
		if _, err := decodeHandle(bad); err == nil {
			t.Errorf("decodeHandle(%v) succeeded", bad)
		}
	}
}

func TestPropertiesRoundTrip(t *testing.T) {
	p := properties{entries: 10, deletions: 3, dataBlocks: 2, compression: Zstd,
		smallest: base.AppendKey(nil, []byte("a"), 9, base.KindSet), largest: base.AppendKey(nil, []byte("z"), 1, base.KindDelete)}
	got, err := decodeProperties(p.encode())
	if err != nil || got.entries != 10 || got.deletions != 3 || got.dataBlocks != 2 || got.compression != Zstd ||
		!bytes.Equal(got.smallest, p.smallest) || !bytes.Equal(got.largest, p.largest) {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	enc := p.encode()
	for n := range len(enc) {
		if _, err := decodeProperties(enc[:n]); err == nil {
			t.Fatalf("truncated properties (%d of %d bytes) accepted", n, len(enc))
		}
	}
	bad := p
	bad.deletions = 11
	if _, err := decodeProperties(bad.encode()); err == nil {
		t.Fatal("more deletions than entries accepted")
	}
	bad = p
	bad.smallest, bad.largest = p.largest, p.smallest
	if _, err := decodeProperties(bad.encode()); err == nil {
		t.Fatal("smallest > largest accepted")
	}
}

func TestDecompressRejectsBadInput(t *testing.T) {
	c, err := newCompressor(S2)
	if err != nil {
		t.Fatal(err)
	}
	raw := bytes.Repeat([]byte("abcdefgh"), 512)
	stored, typ := c.compress(raw)
	if typ != S2 {
		t.Fatalf("compressible block stored as %v", typ)
	}
	if out, err := decompress(S2, stored); err != nil || !bytes.Equal(out, raw) {
		t.Fatalf("decompress: %v", err)
	}
	for _, tc := range []struct {
		name   string
		typ    Compression
		stored []byte
	}{
		{"no length", S2, nil},
		{"huge length", S2, binary.AppendUvarint(nil, maxBlockSize+1)},
		{"length mismatch", S2, append(binary.AppendUvarint(nil, 10), stored[2:]...)},
		{"garbage zstd", Zstd, append(binary.AppendUvarint(nil, 100), "not zstd"...)},
		{"unknown type", Compression(7), append(binary.AppendUvarint(nil, 1), 0)},
	} {
		if _, err := decompress(tc.typ, tc.stored); err == nil {
			t.Errorf("%s: decompress succeeded", tc.name)
		}
	}
}
