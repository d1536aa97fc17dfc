package sstable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/kvstore/kv/cache"
	"github.com/kvstore/kv/lsm/internal/base"
	"github.com/lni/vfs"
)

var compressions = []Compression{NoCompression, S2, Zstd}

func TestRoundTrip(t *testing.T) {
	for _, comp := range compressions {
		for _, blockSize := range []int{0, 256} {
			t.Run(fmt.Sprintf("%v/block%d", comp, blockSize), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, uint64(comp)))
				es := modelEntries(rng, 2000, 100)
				data, meta := buildTable(t, es, WriterOptions{Compression: comp, BlockSize: blockSize})
				r := mustOpen(t, data, ReaderOptions{FileNum: 7})
				m := newModel(es)

				var deletions int64
				for _, e := range es {
					if e.kind == base.KindDelete {
						deletions++
					}
				}
				want := Meta{Size: int64(len(data)), Smallest: es[0].ikey(), Largest: es[len(es)-1].ikey(),
					Entries: int64(len(es)), Deletions: deletions}
				for _, m := range []Meta{meta, r.Meta()} {
					if m.Size != want.Size || !bytes.Equal(m.Smallest, want.Smallest) || !bytes.Equal(m.Largest, want.Largest) ||
						m.Entries != want.Entries || m.Deletions != want.Deletions {
						t.Fatalf("meta = %+v, want %+v", m, want)
					}
				}

				got := collect(t, r)
				if len(got) != len(es) {
					t.Fatalf("iterated %d entries, wrote %d", len(got), len(es))
				}
				for i := range es {
					if !sameEntry(got[i], es[i]) {
						t.Fatalf("entry %d = %+v, want %+v", i, got[i], es[i])
					}
				}

				// Get at the newest snapshot and at every version's own
				// sequence number and the one just below it.
				maxSeq := es[0].seq
				for _, e := range es {
					maxSeq = max(maxSeq, e.seq)
				}
				for _, e := range es {
					for _, seq := range []uint64{e.seq, e.seq - 1, maxSeq, base.MaxSeq} {
						checkGet(t, r, m, e.ukey, seq)
					}
				}
				// Absent keys sort between, before and after the present ones.
				for _, ukey := range []string{"", "a", "key00000001", "key00000002", "key99999999", "zzz"} {
					checkGet(t, r, m, ukey, base.MaxSeq)
				}
			})
		}
	}
}

func checkGet(t *testing.T, r *Reader, m model, ukey string, seq uint64) {
	t.Helper()
	want, wantFound := m.get(ukey, seq)
	v, kind, found, err := r.Get([]byte(ukey), seq)
	if err != nil {
		t.Fatalf("Get(%q, %d): %v", ukey, seq, err)
	}
	if found != wantFound {
		t.Fatalf("Get(%q, %d) found = %v, want %v", ukey, seq, found, wantFound)
	}
	if !found {
		return
	}
	if kind != want.kind || !bytes.Equal(v, want.value) {
		t.Fatalf("Get(%q, %d) = %q kind %d, want %q kind %d", ukey, seq, v, kind, want.value, want.kind)
	}
}

// Versions of one key spread over several tiny blocks; every snapshot sees
// the right one.
func TestGetAtSnapshots(t *testing.T) {
	es := []entry{
		{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("a1")},
		{ukey: "k", seq: 10, kind: base.KindSet, value: []byte("v10")},
		{ukey: "k", seq: 20, kind: base.KindDelete},
		{ukey: "k", seq: 30, kind: base.KindSet, value: []byte("v30")},
		{ukey: "k", seq: 40, kind: base.KindSet, value: []byte{}},
		{ukey: "z", seq: 2, kind: base.KindSet, value: []byte("z2")},
	}
	sortEntries(es)
	data, _ := buildTable(t, es, WriterOptions{BlockSize: 1, Compression: S2})
	r := mustOpen(t, data, ReaderOptions{})
	if n := len(r.index); n != len(es) {
		t.Fatalf("%d blocks, want one per entry", n)
	}
	m := newModel(es)
	for seq := uint64(0); seq <= 45; seq++ {
		for _, k := range []string{"a", "k", "z", "b"} {
			checkGet(t, r, m, k, seq)
		}
	}
}

func TestSeekGE(t *testing.T) {
	for _, blockSize := range []int{1, 64, 4096} {
		t.Run(fmt.Sprint(blockSize), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, 2))
			es := modelEntries(rng, 300, 20)
			data, _ := buildTable(t, es, WriterOptions{BlockSize: blockSize, Compression: S2})
			r := mustOpen(t, data, ReaderOptions{})
			it := r.NewIter()
			defer it.Close()
			seekTo := func(target []byte, want int) {
				t.Helper()
				it.SeekGE(target)
				if want == len(es) {
					if it.Valid() {
						t.Fatalf("SeekGE(%q) = %q, want end", target, it.Key())
					}
					if it.Err() != nil {
						t.Fatal(it.Err())
					}
					return
				}
				if !it.Valid() || !bytes.Equal(it.Key(), es[want].ikey()) || !bytes.Equal(it.Value(), es[want].value) {
					t.Fatalf("SeekGE(%q) = %q valid %v, want entry %d %q", target, it.Key(), it.Valid(), want, es[want].ikey())
				}
			}
			for i, e := range es {
				// Exactly at the entry, then iterate a little from there.
				seekTo(e.ikey(), i)
				for j := i + 1; j < min(i+20, len(es)); j++ {
					it.Next()
					if !it.Valid() || !bytes.Equal(it.Key(), es[j].ikey()) {
						t.Fatalf("Next after SeekGE(%d): got %q, want %q", i, it.Key(), es[j].ikey())
					}
				}
				// Just after the entry: a newer snapshot of the same key
				// than the next older version, or the next user key.
				seekTo(base.AppendKey(nil, []byte(e.ukey), e.seq-1, base.KindMax), i+1)
				// Between user keys.
				seekTo(base.AppendKey(nil, []byte(e.ukey+"\x00"), base.MaxSeq, base.KindMax), firstAtOrAfter(es, e.ukey+"\x00"))
				// Above every version of the key.
				seekTo(base.AppendKey(nil, []byte(e.ukey), base.MaxSeq, base.KindMax), firstAtOrAfter(es, e.ukey))
			}
			seekTo(base.AppendKey(nil, nil, base.MaxSeq, base.KindMax), 0)
			seekTo(base.AppendKey(nil, []byte("zzz"), 0, base.KindDelete), len(es))
		})
	}
}

func firstAtOrAfter(es []entry, ukey string) int {
	for i, e := range es {
		if e.ukey >= ukey {
			return i
		}
	}
	return len(es)
}

func TestIteratorBadSeekKey(t *testing.T) {
	data, _ := buildTable(t, []entry{{ukey: "a", seq: 1, kind: base.KindSet}}, WriterOptions{})
	r := mustOpen(t, data, ReaderOptions{})
	it := r.NewIter()
	it.SeekGE([]byte("short"))
	if it.Valid() || it.Err() == nil {
		t.Fatal("seek with a non-internal key accepted")
	}
	if err := it.Close(); err == nil {
		t.Fatal("Close lost the error")
	}
}

func TestEmptyTable(t *testing.T) {
	for _, bits := range []int{0, -1} {
		data, meta := buildTable(t, nil, WriterOptions{BloomBitsPerKey: bits})
		if meta.Entries != 0 || meta.Smallest != nil || meta.Largest != nil || meta.Size != int64(len(data)) {
			t.Fatalf("meta = %+v", meta)
		}
		r := mustOpen(t, data, ReaderOptions{})
		if got := collect(t, r); len(got) != 0 {
			t.Fatalf("empty table yields %v", got)
		}
		if _, _, found, err := r.Get([]byte("a"), base.MaxSeq); found || err != nil {
			t.Fatalf("Get = %v, %v", found, err)
		}
		if m := r.Meta(); m.Entries != 0 || m.Smallest != nil {
			t.Fatalf("meta = %+v", m)
		}
	}
}

func TestLargeValues(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 16 MiB values")
	}
	rng := rand.New(rand.NewPCG(3, 3))
	huge := randomBytes(rng, 16<<20)
	hugeText := bytes.Repeat([]byte("sixteen mebibyte"), 1<<20)
	for _, comp := range compressions {
		t.Run(comp.String(), func(t *testing.T) {
			es := []entry{
				{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("small")},
				{ukey: "b", seq: 2, kind: base.KindSet, value: huge},
				{ukey: "c", seq: 3, kind: base.KindSet, value: []byte("small")},
				{ukey: "d", seq: 4, kind: base.KindSet, value: hugeText},
				{ukey: "e", seq: 5, kind: base.KindSet, value: nil},
			}
			data, _ := buildTable(t, es, WriterOptions{Compression: comp})
			r := mustOpen(t, data, ReaderOptions{})
			m := newModel(es)
			for _, e := range es {
				checkGet(t, r, m, e.ukey, base.MaxSeq)
			}
			got := collect(t, r)
			for i := range es {
				if !sameEntry(got[i], es[i]) {
					t.Fatalf("entry %d differs", i)
				}
			}
			if comp != NoCompression && len(data) > len(huge)+len(hugeText)/2 {
				t.Fatalf("table of %d bytes: the repetitive value was not compressed", len(data))
			}
		})
	}
}

// Entries that together exceed the block limit go to separate blocks even
// when BlockSize would let them share one.
func TestBlockLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 66 MiB")
	}
	big := make([]byte, maxBlockSize/2+1)
	es := []entry{
		{ukey: "a", seq: 1, kind: base.KindSet, value: big},
		{ukey: "b", seq: 1, kind: base.KindSet, value: big},
	}
	data, _ := buildTable(t, es, WriterOptions{BlockSize: 1 << 30, Compression: NoCompression})
	r := mustOpen(t, data, ReaderOptions{})
	if len(r.index) != 2 {
		t.Fatalf("%d blocks, want 2", len(r.index))
	}
	checkAll(t, r, es)
}

func TestEntryTooLarge(t *testing.T) {
	w := NewWriter(vfs.NewMemFile(nil), WriterOptions{})
	defer w.Abort()
	err := w.Add(base.AppendKey(nil, []byte("k"), 1, base.KindSet), make([]byte, maxBlockSize))
	if err == nil {
		t.Fatal("entry larger than a block accepted")
	}
}

// dataBlockTypes returns the compression type byte of every data block.
func dataBlockTypes(t *testing.T, data []byte) []Compression {
	t.Helper()
	r := mustOpen(t, data, ReaderOptions{})
	var types []Compression
	for _, e := range r.index {
		types = append(types, Compression(data[e.h.offset+e.h.length]))
	}
	return types
}

func TestCompressionChoice(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	var compressible, incompressible []entry
	for i := range 500 {
		k := fmt.Sprintf("k%06d", i)
		compressible = append(compressible, entry{ukey: k, seq: 1, kind: base.KindSet, value: compressibleValue(rng, 200)})
		incompressible = append(incompressible, entry{ukey: k, seq: 1, kind: base.KindSet, value: randomBytes(rng, 200)})
	}
	plain, _ := buildTable(t, compressible, WriterOptions{Compression: NoCompression})
	for _, comp := range []Compression{S2, Zstd} {
		t.Run(comp.String(), func(t *testing.T) {
			data, _ := buildTable(t, compressible, WriterOptions{Compression: comp})
			if len(data) >= len(plain)*7/8 {
				t.Errorf("compressed table %d bytes, raw %d", len(data), len(plain))
			}
			for i, typ := range dataBlockTypes(t, data) {
				if typ != comp {
					t.Fatalf("compressible block %d stored as %v", i, typ)
				}
			}
			data, _ = buildTable(t, incompressible, WriterOptions{Compression: comp})
			for i, typ := range dataBlockTypes(t, data) {
				if typ != NoCompression {
					t.Fatalf("incompressible block %d stored as %v", i, typ)
				}
			}
			checkAll(t, mustOpen(t, data, ReaderOptions{}), incompressible)
		})
	}
}

func checkAll(t *testing.T, r *Reader, es []entry) {
	t.Helper()
	got := collect(t, r)
	if len(got) != len(es) {
		t.Fatalf("%d entries, want %d", len(got), len(es))
	}
	m := newModel(es)
	for i := range es {
		if !sameEntry(got[i], es[i]) {
			t.Fatalf("entry %d = %+v, want %+v", i, got[i], es[i])
		}
		checkGet(t, r, m, es[i].ukey, base.MaxSeq)
	}
}

func TestBloomFalsePositiveRate(t *testing.T) {
	const n = 20000
	var es []entry
	for i := range n {
		es = append(es, entry{ukey: fmt.Sprintf("present%08d", i), seq: 1, kind: base.KindSet})
	}
	sortEntries(es)
	data, _ := buildTable(t, es, WriterOptions{})
	r := mustOpen(t, data, ReaderOptions{})
	for _, e := range es {
		if !r.MayContain([]byte(e.ukey)) {
			t.Fatalf("false negative for %q", e.ukey)
		}
	}
	fp := 0
	for i := range n {
		if r.MayContain(fmt.Appendf(nil, "absent%08d", i)) {
			fp++
		}
	}
	rate := float64(fp) / n
	t.Logf("false-positive rate %.3f%% at 10 bits/key", 100*rate)
	if rate > 0.02 || rate < 0.002 {
		t.Fatalf("false-positive rate %.3f%%, want about 1%%", 100*rate)
	}
	// Filter size follows bits per key.
	if got, want := len(r.filter)-1, n*10/8; got != want {
		t.Fatalf("filter of %d bytes, want %d", got, want)
	}
}

func TestNoFilter(t *testing.T) {
	es := []entry{{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("1")}}
	data, _ := buildTable(t, es, WriterOptions{BloomBitsPerKey: -1})
	r := mustOpen(t, data, ReaderOptions{})
	if r.filter != nil || !r.MayContain([]byte("anything")) {
		t.Fatal("table without filter rules keys out")
	}
	checkGet(t, r, newModel(es), "a", 5)
	checkGet(t, r, newModel(es), "b", 5)
}

func TestWriterRejects(t *testing.T) {
	w := NewWriter(vfs.NewMemFile(nil), WriterOptions{})
	defer w.Abort()
	ik := func(k string, seq uint64, kind base.Kind) []byte { return base.AppendKey(nil, []byte(k), seq, kind) }
	if err := w.Add(ik("b", 5, base.KindSet), nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  []byte
	}{
		{"same key", ik("b", 5, base.KindSet)},
		{"older user key", ik("a", 9, base.KindSet)},
		{"newer version after older", ik("b", 6, base.KindSet)},
		{"short key", []byte("short")},
		{"unknown kind", ik("c", 1, base.Kind(7))},
	} {
		if err := w.Add(tc.key, nil); err == nil {
			t.Errorf("%s: Add accepted %q", tc.name, tc.key)
		}
	}
	// The writer stays usable after a rejected key.
	if err := w.Add(ik("b", 4, base.KindDelete), nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(ik("c", 1, base.KindSet), []byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestWriterBadCompression(t *testing.T) {
	w := NewWriter(vfs.NewMemFile(nil), WriterOptions{Compression: 9})
	if err := w.Add(base.AppendKey(nil, []byte("a"), 1, base.KindSet), nil); err == nil {
		t.Fatal("unknown compression accepted")
	}
	if _, err := w.Finish(); err == nil {
		t.Fatal("Finish succeeded with unknown compression")
	}
}

func TestWriterClosed(t *testing.T) {
	fs := vfs.NewMem()
	f, err := fs.Create("t.sst")
	if err != nil {
		t.Fatal(err)
	}
	w := NewWriter(f, WriterOptions{})
	w.Abort()
	w.Abort()
	if err := w.Add(base.AppendKey(nil, []byte("a"), 1, base.KindSet), nil); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Add after Abort: %v", err)
	}
	if _, err := w.Finish(); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("Finish after Abort: %v", err)
	}

	f, err = fs.Create("u.sst")
	if err != nil {
		t.Fatal(err)
	}
	w = NewWriter(f, WriterOptions{})
	if _, err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	w.Abort() // no-op, and no double close of f
	if _, err := w.Finish(); !errors.Is(err, ErrWriterClosed) {
		t.Fatalf("second Finish: %v", err)
	}
}

// Finish makes the table durable: it survives a simulated power loss.
func TestFinishSyncs(t *testing.T) {
	fs := vfs.NewStrictMem()
	f, err := fs.Create("t.sst")
	if err != nil {
		t.Fatal(err)
	}
	// Make the directory entry durable, as the engine does.
	d, err := fs.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	es := []entry{{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("durable")}}
	w := NewWriter(f, WriterOptions{})
	if err := w.Add(es[0].ikey(), es[0].value); err != nil {
		t.Fatal(err)
	}
	meta, err := w.Finish()
	if err != nil {
		t.Fatal(err)
	}
	fs.SetIgnoreSyncs(true)
	fs.ResetToSyncedState()
	rf, err := fs.Open("t.sst")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(rf, meta.Size, ReaderOptions{})
	if err != nil {
		rf.Close()
		t.Fatal(err)
	}
	defer r.Close()
	checkGet(t, r, newModel(es), "a", 1)
}

func TestEstimatedSizeGrows(t *testing.T) {
	w := NewWriter(vfs.NewMemFile(nil), WriterOptions{Compression: NoCompression})
	defer w.Abort()
	last := w.EstimatedSize()
	for i := range 1000 {
		if err := w.Add(base.AppendKey(nil, fmt.Appendf(nil, "k%05d", i), 1, base.KindSet), make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
		if s := w.EstimatedSize(); s < last {
			t.Fatalf("EstimatedSize shrank from %d to %d", last, s)
		} else {
			last = s
		}
	}
	if last < 100*1000 {
		t.Fatalf("EstimatedSize %d after 100 KB of values", last)
	}
}

func TestCacheUse(t *testing.T) {
	c, err := cache.New(8 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Two DBs whose tables share a file number must not see each other's
	// blocks.
	one := []entry{{ukey: "k", seq: 1, kind: base.KindSet, value: []byte("from one")}}
	two := []entry{{ukey: "k", seq: 1, kind: base.KindSet, value: []byte("from two")}}
	d1, _ := buildTable(t, one, WriterOptions{})
	d2, _ := buildTable(t, two, WriterOptions{})
	// The reader's file is d1 itself, so the test can damage it later.
	r1, err := Open(vfs.NewMemFile(d1), int64(len(d1)), ReaderOptions{Cache: c, CacheID: c.NewID(), FileNum: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2 := mustOpen(t, d2, ReaderOptions{Cache: c, CacheID: c.NewID(), FileNum: 1})
	for range 2 {
		checkGet(t, r1, newModel(one), "k", 1)
		checkGet(t, r2, newModel(two), "k", 1)
		c.Wait()
	}
	if s := c.Stats(); s.Misses != 2 || s.Hits != 2 {
		t.Fatalf("cache stats %+v; want 2 misses then 2 hits", s)
	}
	// Checksums are verified on reads from disk only: once the block is
	// cached, damage to the file goes unseen by this reader, while a
	// reader without the cache sees it.
	d1[0] ^= 0xff
	checkGet(t, r1, newModel(one), "k", 1)
	if _, _, _, err := mustOpen(t, d1, ReaderOptions{}).Get([]byte("k"), 1); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("uncached Get of damaged block: %v", err)
	}
}

func TestConcurrentReads(t *testing.T) {
	c, err := cache.New(256 << 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(5, 5))
	es := modelEntries(rng, 1000, 100)
	data, _ := buildTable(t, es, WriterOptions{Compression: S2})
	r := mustOpen(t, data, ReaderOptions{Cache: c, CacheID: c.NewID(), FileNum: 3})
	m := newModel(es)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			if g%2 == 0 {
				got := collect(t, r)
				if len(got) != len(es) {
					t.Errorf("iterated %d entries, want %d", len(got), len(es))
				}
				return
			}
			for i := g; i < len(es); i += 3 {
				if !getMatches(t, r, m, es[i].ukey) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// getMatches reports whether Get of ukey returns the model's newest
// version, failing the test (t.Errorf: safe off the test's goroutine) if not.
func getMatches(t *testing.T, r *Reader, m model, ukey string) bool {
	want, _ := m.get(ukey, base.MaxSeq)
	v, kind, found, err := r.Get([]byte(ukey), base.MaxSeq)
	if err != nil || !found || kind != want.kind || !bytes.Equal(v, want.value) {
		t.Errorf("Get(%q) = %q %v %v %v", ukey, v, kind, found, err)
		return false
	}
	return true
}

// Get and iteration never return the bytes of a damaged block: every byte
// of the file is covered by a checksum, so flipping any byte either fails
// Open (metadata) or makes every read of the damaged data block fail, with
// an error that wraps base.ErrCorruption and names the file.
func TestCorruptionEveryByte(t *testing.T) {
	for _, comp := range compressions {
		t.Run(comp.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(6, uint64(comp)))
			es := modelEntries(rng, 30, 30)
			data, _ := buildTable(t, es, WriterOptions{Compression: comp, BlockSize: 256})
			clean := mustOpen(t, data, ReaderOptions{})
			dataEnd := clean.index[len(clean.index)-1].h.offset + clean.index[len(clean.index)-1].h.length + blockTrailerLen
			opts := ReaderOptions{FileNum: 123}
			for off := range len(data) {
				bad := bytes.Clone(data)
				bad[off] ^= 1 << (off % 8)
				r, err := openBytes(bad, opts)
				if uint64(off) >= dataEnd {
					if err == nil {
						r.Close()
						t.Fatalf("flip at %d in metadata: Open succeeded", off)
					}
					checkCorruption(t, err, off)
					continue
				}
				if err != nil {
					t.Fatalf("flip at %d in data: Open: %v", off, err)
				}
				checkDamagedReads(t, r, es, off)
				r.Close()
			}
		})
	}
}

func checkCorruption(t *testing.T, err error, off int) {
	t.Helper()
	if !errors.Is(err, base.ErrCorruption) || !strings.Contains(err.Error(), "sstable 000123.sst: ") ||
		!strings.Contains(err.Error(), "at offset ") {
		t.Fatalf("flip at %d: error %q does not wrap ErrCorruption with file and offset", off, err)
	}
	// The DB finds the damaged table and offset with errors.As, not by
	// parsing the message.
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.FileNum != 123 || ce.Offset >= 1<<32 || !strings.Contains(err.Error(), fmt.Sprintf("at offset %d: ", ce.Offset)) {
		t.Fatalf("flip at %d: error %q is not a *CorruptionError of table 123 with its offset", off, err)
	}
}

func checkDamagedReads(t *testing.T, r *Reader, es []entry, off int) {
	t.Helper()
	it := r.NewIter()
	i := 0
	for it.First(); it.Valid(); it.Next() {
		if !bytes.Equal(it.Key(), es[i].ikey()) || !bytes.Equal(it.Value(), es[i].value) {
			t.Fatalf("flip at %d: iteration returned wrong entry %d", off, i)
		}
		i++
	}
	err := it.Close()
	if err == nil {
		t.Fatalf("flip at %d: iteration over damaged block ended cleanly after %d of %d", off, i, len(es))
	}
	checkCorruption(t, err, off)
	failed := 0
	for _, e := range es {
		v, kind, found, err := r.Get([]byte(e.ukey), e.seq)
		if err != nil {
			checkCorruption(t, err, off)
			failed++
			continue
		}
		if !found || kind != e.kind || !bytes.Equal(v, e.value) {
			t.Fatalf("flip at %d: Get(%q, %d) = %q %v %v, want %q", off, e.ukey, e.seq, v, kind, found, e.value)
		}
	}
	if failed == 0 {
		t.Fatalf("flip at %d: no Get saw the damage", off)
	}
}

func TestTruncatedFile(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	data, _ := buildTable(t, modelEntries(rng, 200, 50), WriterOptions{Compression: S2})
	for _, n := range []int{0, 1, footerLen - 1, footerLen, len(data) / 2, len(data) - footerLen, len(data) - 1} {
		_, err := openBytes(data[:n], ReaderOptions{FileNum: 123})
		if err == nil {
			t.Fatalf("Open of %d of %d bytes succeeded", n, len(data))
		}
		checkCorruption(t, err, n)
	}
	// A size larger than the file: the footer read comes up short.
	f := vfs.NewMemFile(bytes.Clone(data))
	defer f.Close()
	if _, err := Open(f, int64(len(data)+10), ReaderOptions{FileNum: 123}); err == nil {
		t.Fatal("Open with a size beyond the file succeeded")
	} else {
		checkCorruption(t, err, len(data)+10)
	}
}

func TestReadAfterClose(t *testing.T) {
	es := []entry{{ukey: "a", seq: 1, kind: base.KindSet, value: []byte("1")}}
	data, _ := buildTable(t, es, WriterOptions{})
	r, err := openBytes(data, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, _, err := r.Get([]byte("a"), 1); err == nil {
		t.Fatal("Get after Close succeeded")
	}
}

func TestFooter(t *testing.T) {
	ft := footer{filter: handle{1, 2}, props: handle{3, 4}, index: handle{5, 6}, version: formatVersion}
	b := ft.encode()
	got, err := decodeFooter(b)
	if err != nil || got != ft {
		t.Fatalf("decode = %+v, %v; want %+v", got, err, ft)
	}
	badVersion := footer{version: 2}.encode()
	if _, err := decodeFooter(badVersion); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("version 2 accepted: %v", err)
	}
	badMagic := bytes.Clone(b)
	binary.LittleEndian.PutUint64(badMagic[56:], 1)
	if _, err := decodeFooter(badMagic); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("bad magic accepted: %v", err)
	}
}

func TestSeparator(t *testing.T) {
	ik := func(k string, seq uint64) []byte { return base.AppendKey(nil, []byte(k), seq, base.KindSet) }
	for _, tc := range []struct {
		a, b    []byte
		wantLen int // user key length of the separator
	}{
		{ik("abc", 5), ik("abe", 5), 3},
		{ik("abc1234", 5), ik("abz", 5), 3},
		{ik("abc", 5), ik("abd", 5), 3},      // abd - 1 byte apart: keep a
		{ik("ab", 5), ik("abc", 5), 2},       // prefix: keep a
		{ik("k", 9), ik("k", 3), 1},          // same user key
		{ik("a\xff\xff", 1), ik("b", 1), 3},  // 0xff cannot grow
		{ik("apple", 1), ik("banana", 1), 5}, // 'a'+1 is b's first byte: keep a
		{ik("apple", 1), ik("cherry", 1), 1}, // "b"
		{ik("", 1), ik("x", 1), 0},           // empty a
	} {
		sep := appendSeparator(nil, tc.a, tc.b)
		if base.Compare(tc.a, sep) > 0 || base.Compare(sep, tc.b) >= 0 {
			t.Errorf("separator(%q, %q) = %q is not in [a, b)", tc.a, tc.b, sep)
		}
		if got := len(sep) - base.TrailerLen; got != tc.wantLen {
			t.Errorf("separator(%q, %q) = %q: user key length %d, want %d", tc.a, tc.b, sep, got, tc.wantLen)
		}
	}
}
