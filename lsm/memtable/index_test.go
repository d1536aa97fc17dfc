package memtable

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

// untag makes an empty table's index store bare offsets, so every probe
// past another key compares keys, as a tag collision does.
func untag(tbl *Table) {
	if !tbl.Empty() {
		panic("untag: table not empty")
	}
	tbl.idx.offBits, tbl.idx.offMask = 32, math.MaxUint32
}

// checkGet checks Get(ukey, snap) against the model, and that the index
// answered whenever it can: present and newest version visible, or absent
// while the index has not overflowed. It returns how get answered.
func checkGet(t *testing.T, tbl *Table, m model, ukey []byte, snap uint64) getPath {
	t.Helper()
	want, wantOK := m.get(ukey, snap)
	v, kind, ok := tbl.Get(ukey, snap)
	if ok != wantOK || (ok && (kind != want.kind || !bytes.Equal(v, want.value))) {
		t.Fatalf("Get(%x, %d) = %x %d %v, want %x %d %v", ukey, snap, v, kind, ok, want.value, want.kind, wantOK)
	}
	_, path := tbl.get(ukey, snap)
	newest, exists := m.get(ukey, base.MaxSeq)
	wantPath := pathSkiplist
	switch indexed, _ := tbl.indexFind(ukey); {
	case !exists && !tbl.idx.overflow.Load():
		wantPath = pathAbsent
	case exists && indexed != 0 && newest.seq <= snap:
		wantPath = pathIndex
	}
	if path != wantPath {
		t.Fatalf("Get(%x, %d) answered by path %d, want %d (overflow %v)", ukey, snap, path, wantPath, tbl.idx.overflow.Load())
	}
	return path
}

// checkIndex checks the index against the model: each user key maps to its
// version with the largest trailer, or, only once the index overflowed, is
// missing; and the count of claimed slots adds up.
func checkIndex(t *testing.T, tbl *Table, m model) {
	t.Helper()
	x := &tbl.idx
	overflow := x.overflow.Load()
	indexed := 0
	for i, e := range m {
		if i > 0 && bytes.Equal(m[i-1].ukey, e.ukey) {
			continue // not the newest version of its key
		}
		nd, known := tbl.indexFind(e.ukey)
		if nd == 0 {
			if known || !overflow {
				t.Fatalf("key %x missing from the index (overflow %v)", e.ukey, overflow)
			}
			continue
		}
		if got := tbl.key(nd); !bytes.Equal(got, e.ikey()) {
			t.Fatalf("index holds %x for key %x, want the newest version %x", got, e.ukey, e.ikey())
		}
		indexed++
	}
	used := 0
	for i := range x.slots {
		if x.slots[i].Load() != 0 {
			used++
		}
	}
	if used != indexed || x.claimed != indexed || x.claimed > x.limit || x.limit >= len(x.slots) {
		t.Fatalf("%d keys indexed, %d slots used, %d claimed, limit %d of %d", indexed, used, x.claimed, x.limit, len(x.slots))
	}
	if overflow && x.claimed != x.limit {
		t.Fatalf("overflow with %d of %d slots claimed", x.claimed, x.limit)
	}
}

func TestIndexOverflowKeepsGetsCorrect(t *testing.T) {
	const keys = 100
	tbl := newTable(headLen+1<<20, 16)
	limit := tbl.idx.limit
	key := func(k int) []byte { return fmt.Appendf(nil, "key%03d", k) }
	seq := func(round, k int) uint64 { return uint64(round*keys + k + 1) }
	// Three rounds of versions; the index fills during the first.
	for round := range 3 {
		for k := range keys {
			if err := tbl.Add(key(k), seq(round, k), base.KindSet, fmt.Appendf(nil, "r%d", round)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !tbl.idx.overflow.Load() || tbl.idx.claimed != limit {
		t.Fatalf("overflow %v with %d of %d slots claimed", tbl.idx.overflow.Load(), tbl.idx.claimed, limit)
	}
	fromIndex := 0
	for k := range keys {
		// The newest version, from the index for the keys it kept (kept up
		// to date after the overflow), else from the skiplist.
		v, kind, ok := tbl.Get(key(k), base.MaxSeq)
		if !ok || kind != base.KindSet || string(v) != "r2" {
			t.Fatalf("Get(%s) = %q %d %v, want r2", key(k), v, kind, ok)
		}
		if _, path := tbl.get(key(k), base.MaxSeq); path == pathIndex {
			fromIndex++
		}
		// An older snapshot, always from the skiplist.
		v, _, ok = tbl.Get(key(k), seq(1, k))
		if _, path := tbl.get(key(k), seq(1, k)); !ok || string(v) != "r1" || path != pathSkiplist {
			t.Fatalf("Get(%s, %d) = %q %v by path %d, want r1 from the skiplist", key(k), seq(1, k), v, ok, path)
		}
		if _, _, ok := tbl.Get(key(k), seq(0, k)-1); ok {
			t.Fatalf("Get(%s) found a version before the first", key(k))
		}
	}
	if fromIndex != limit {
		t.Fatalf("%d keys answered from the index, want the %d it holds", fromIndex, limit)
	}
	// An absent key can no longer be proved absent by the index.
	if nd, path := tbl.get([]byte("absent"), base.MaxSeq); nd != 0 || path != pathSkiplist {
		t.Fatalf("absent key: node %d, path %d, want not found by the skiplist", nd, path)
	}
}

// TestGetAnswersFromIndexAlone detaches the skiplist after filling the
// table, so the index alone must answer: newest versions are found, and
// absent keys are reported absent without a walk.
func TestGetAnswersFromIndexAlone(t *testing.T) {
	tbl := New(1 << 16)
	key := func(k int) []byte { return fmt.Appendf(nil, "k%03d", k) }
	seq := uint64(0)
	for k := range 200 {
		seq++
		if err := tbl.Add(key(k), seq, base.KindSet, []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	for k := 0; k < 200; k += 2 {
		seq++
		if err := tbl.Add(key(k), seq, base.KindDelete, nil); err != nil {
			t.Fatal(err)
		}
	}
	if tbl.idx.overflow.Load() {
		t.Fatal("index overflowed")
	}
	for i := range maxHeight {
		tbl.link(0, uint32(i)).Store(0)
	}
	it := tbl.NewIter()
	if it.First(); it.Valid() {
		t.Fatal("skiplist still reachable")
	}
	for k := range 200 {
		wantKind, wantValue := base.KindSet, "old"
		if k%2 == 0 {
			wantKind, wantValue = base.KindDelete, ""
		}
		if v, kind, ok := tbl.Get(key(k), base.MaxSeq); !ok || kind != wantKind || string(v) != wantValue {
			t.Fatalf("Get(%s) = %q %d %v, want %q %d", key(k), v, kind, ok, wantValue, wantKind)
		}
	}
	for k := 200; k < 400; k++ {
		if nd, path := tbl.get(key(k), base.MaxSeq); nd != 0 || path != pathAbsent {
			t.Fatalf("absent %s: node %d, path %d, want absent by the index", key(k), nd, path)
		}
	}
	// An older snapshot needs the skiplist, which is gone: proof that the
	// answers above came from the index.
	if _, _, ok := tbl.Get(key(0), 1); ok {
		t.Fatal("Get at an older snapshot found the detached skiplist")
	}
}

// TestConcurrentSnapshotGets runs readers at the published sequence number
// and at older snapshots while one writer adds versions and publishes each
// after its Add returns, as the engine does (run it with -race). In one
// variant the index overflows while the readers run.
func TestConcurrentSnapshotGets(t *testing.T) {
	const (
		n    = 6000
		keys = 300
	)
	// Version seq (1..n) writes key keyOf[seq-1]; keys come into use
	// gradually, so the small index overflows about 70% of the way in.
	rng := rand.New(rand.NewPCG(8, 9))
	keyOf := make([]int, n)
	versions := make([][]uint64, keys) // per key, its sequence numbers in order
	for j := range keyOf {
		k := rng.IntN(1 + keys*j/n)
		keyOf[j] = k
		versions[k] = append(versions[k], uint64(j+1))
	}
	key := func(k int) []byte { return fmt.Appendf(nil, "key%04d", k) }
	kindOf := func(seq uint64) base.Kind {
		if seq%5 == 0 {
			return base.KindDelete
		}
		return base.KindSet
	}
	value := func(seq uint64) []byte {
		if kindOf(seq) == base.KindDelete {
			return nil
		}
		return binary.LittleEndian.AppendUint64(nil, seq)
	}
	arena := n * EntrySize(7, 8)

	for _, c := range []struct {
		name     string
		tbl      *Table
		overflow bool
	}{
		{"index", New(arena), false},
		{"index overflows", newTable(headLen+arena, keys), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			errc := make(chan error, 3)
			tbl := c.tbl
			var visible atomic.Uint64
			// The writer waits for reader rounds now and then, so reads
			// interleave with writes however the goroutines are scheduled.
			var rounds atomic.Int64
			var failed atomic.Bool
			fail := func(err error) {
				failed.Store(true)
				errc <- err
			}
			var wg sync.WaitGroup
			for r := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(10, uint64(r)))
					for done := false; !done && !failed.Load(); {
						done = visible.Load() == n
						s := visible.Load()
						for range 100 {
							snap := s
							if rng.IntN(2) == 0 {
								snap -= uint64(rng.IntN(int(min(s, 200)) + 1))
							}
							k := rng.IntN(keys + keys/10)
							if k >= keys {
								if v, _, ok := tbl.Get(fmt.Appendf(nil, "absent%d", k), snap); ok {
									fail(fmt.Errorf("absent key %d found: %q", k, v))
									return
								}
								continue
							}
							vs := versions[k]
							i, _ := slices.BinarySearch(vs, snap+1)
							v, kind, ok := tbl.Get(key(k), snap)
							if i == 0 {
								if ok {
									fail(fmt.Errorf("Get(%s, %d) = %q %d before its first version", key(k), snap, v, kind))
									return
								}
								continue
							}
							want := vs[i-1]
							if !ok || kind != kindOf(want) || !bytes.Equal(v, value(want)) {
								fail(fmt.Errorf("Get(%s, %d) = %x %d %v, want version %d", key(k), snap, v, kind, ok, want))
								return
							}
						}
						rounds.Add(1)
					}
				}()
			}
			for j, k := range keyOf {
				seq := uint64(j + 1)
				if err := tbl.Add(key(k), seq, kindOf(seq), value(seq)); err != nil {
					fail(err) // stops the readers too
					break
				}
				visible.Store(seq)
				if seq%100 == 0 && seq < n {
					for want := rounds.Load() + 2; rounds.Load() < want && !failed.Load(); {
						runtime.Gosched()
					}
				}
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Error(err)
			}
			if tbl.idx.overflow.Load() != c.overflow {
				t.Fatalf("overflow %v, want %v", tbl.idx.overflow.Load(), c.overflow)
			}
		})
	}
}

func TestIndexSlotPacking(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, arena := range []int{headLen, headLen + 1000, 1 << 20, 64 << 20, maxArena} {
		var x index
		x.init(arena, 1)
		if tagBits := 32 - int(x.offBits); arena <= 64<<20 && tagBits < 8 {
			t.Errorf("arena %d: %d tag bits, want >= 8", arena, tagBits)
		}
		for _, nd := range []uint32{headLen, uint32(arena-1) &^ 3} {
			for range 100 {
				h := rng.Uint64()
				s := x.slot(h, nd)
				if s == 0 || x.node(s) != nd || s&^x.offMask != x.tag(h) {
					t.Fatalf("arena %d: slot(%x, %d) = %x: node %d, tag %x", arena, h, nd, s, x.node(s), x.tag(h))
				}
			}
		}
	}
}

func TestIndexSize(t *testing.T) {
	for _, n := range []int{-5, 0, 1000, 1 << 20, 16 << 20} {
		tbl := New(n)
		arena := len(tbl.arena)
		if got := len(tbl.idx.slots) * 4; got > max(arena/16, 4) {
			t.Errorf("New(%d): %d index bytes for a %d-byte arena, want at most 1/16", n, got, arena)
		}
	}
}
