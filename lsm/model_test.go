package lsm

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/lni/vfs"
)

// heldIterator is an iterator opened earlier together with the model as it
// was then; whatever happens meanwhile, it must show exactly that.
type heldIterator struct {
	it           *Iterator
	lower, upper []byte
	want         map[string]string
}

// TestModel runs long random sequences of writes, reads, scans, flushes and
// reopens against a map, with memtables and levels so small that flushes,
// compactions into deep levels, tombstone dropping and memtable rotation
// all happen many times. Iterators held across many operations check that
// compaction keeps the versions they pin.
func TestModel(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			runModel(t, seed, 10000)
		})
	}
}

func runModel(t *testing.T, seed uint64, ops int) {
	rng := rand.New(rand.NewPCG(seed, seed*7+1))
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	opts.LevelBaseBytes = 4 << 10
	opts.TargetFileBytes = 2 << 10
	opts.Sync = SyncNone
	if seed%3 == 1 {
		opts.Compression = CompressionZstd
	}
	opts.maxManifestBytes = 8 << 10
	if seed%2 == 0 {
		opts.MaxOpenTables = 3 // files closed and reopened all the time
	}
	d := mustOpen(t, "/db", opts)
	defer func() { d.Close() }()

	model := make(map[string]string)
	var held []heldIterator
	const keySpace = 1500
	randKey := func() string { return fmt.Sprintf("key%05d", rng.IntN(keySpace)) }
	randBound := func() []byte {
		if rng.IntN(4) == 0 {
			return nil
		}
		return []byte(randKey())
	}
	var compactions, flushes int64
	for op := range ops {
		switch r := rng.IntN(1000); {
		case r < 400:
			k := randKey()
			v := fmt.Sprintf("v%d-%s", op, randLetters(rng, rng.IntN(120)))
			mustPut(t, d, k, v)
			model[k] = v
		case r < 550:
			k := randKey()
			if err := d.Delete([]byte(k)); err != nil {
				t.Fatal(err)
			}
			delete(model, k)
		case r < 650:
			b := NewBatch()
			staged := make(map[string]*string)
			for range 1 + rng.IntN(20) {
				k := randKey()
				if rng.IntN(3) == 0 {
					b.Delete([]byte(k))
					staged[k] = nil
				} else {
					v := fmt.Sprintf("b%d", op)
					b.Put([]byte(k), []byte(v))
					staged[k] = &v
				}
			}
			if err := d.Write(b); err != nil {
				t.Fatal(err)
			}
			for k, v := range staged {
				if v == nil {
					delete(model, k)
				} else {
					model[k] = *v
				}
			}
		case r < 850:
			k := randKey()
			want, ok := model[k]
			checkGet(t, d, k, want, ok)
		case r < 880:
			lower, upper := randBound(), randBound()
			if got, want := scan(t, d, lower, upper), modelScan(model, lower, upper); diffScan(got, want) != "" {
				t.Fatalf("op %d: scan [%q, %q): %s", op, lower, upper, diffScan(got, want))
			}
		case r < 895:
			// SeekGE from a random key within random bounds.
			lower, upper := randBound(), randBound()
			it := d.NewIterator(lower, upper)
			from := []byte(randKey())
			var got [][2]string
			for ok := it.SeekGE(from); ok && len(got) < 20; ok = it.Next() {
				got = append(got, [2]string{string(it.Key()), string(it.Value())})
			}
			if err := it.Close(); err != nil {
				t.Fatal(err)
			}
			lo := from
			if lower != nil && string(lower) > string(from) {
				lo = lower
			}
			want := modelScan(model, lo, upper)
			want = want[:min(len(want), 20)]
			if diff := diffScan(got, want); diff != "" {
				t.Fatalf("op %d: seek %q in [%q, %q): %s", op, from, lower, upper, diff)
			}
		case r < 905:
			if len(held) < 4 {
				lower, upper := randBound(), randBound()
				held = append(held, heldIterator{
					it: d.NewIterator(lower, upper), lower: lower, upper: upper, want: maps.Clone(model),
				})
			}
		case r < 915:
			if len(held) > 0 {
				i := rng.IntN(len(held))
				h := held[i]
				var got [][2]string
				for ok := h.it.First(); ok; ok = h.it.Next() {
					got = append(got, [2]string{string(h.it.Key()), string(h.it.Value())})
				}
				if err := h.it.Close(); err != nil {
					t.Fatal(err)
				}
				if diff := diffScan(got, modelScan(h.want, h.lower, h.upper)); diff != "" {
					t.Fatalf("op %d: held iterator [%q, %q): %s", op, h.lower, h.upper, diff)
				}
				held = append(held[:i], held[i+1:]...)
			}
		case r < 925:
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
		case r < 928:
			for _, h := range held {
				h.it.Close()
			}
			held = nil
			m := d.Metrics()
			compactions += m.Compactions
			flushes += m.Flushes
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d = mustOpen(t, "/db", opts)
		}
	}
	for _, h := range held {
		h.it.Close()
	}
	if got, want := scan(t, d, nil, nil), modelScan(model, nil, nil); diffScan(got, want) != "" {
		t.Fatalf("final scan: %s", diffScan(got, want))
	}
	m := d.Metrics()
	compactions += m.Compactions
	flushes += m.Flushes
	deep := 0
	for level := 2; level < numLevels; level++ {
		deep += m.Levels[level].Files
	}
	t.Logf("flushes %d, compactions %d, levels %v", flushes, compactions, m.Levels)
	if flushes < 20 || compactions < 10 || deep == 0 {
		t.Fatalf("workload too light: %d flushes, %d compactions, %d tables below L1", flushes, compactions, deep)
	}
}

func randLetters(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(rng.IntN(26))
	}
	return b
}
