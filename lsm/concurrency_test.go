package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/internal/logtest"
)

// TestGroupCommit checks that concurrent SyncAlways writers share fsyncs.
func TestGroupCommit(t *testing.T) {
	// The OS filesystem, so that an fsync takes real time and writers pile
	// up behind it as they do in production.
	d := mustOpen(t, t.TempDir(), Options{BlockCacheBytes: testCacheBytes})
	defer d.Close()
	const writers, perWriter = 32, 40
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if err := d.Put(fmt.Appendf(nil, "g%02d-%03d", g, i), []byte("v")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	m := d.Metrics()
	const writes = writers * perWriter
	t.Logf("%d writes, %d WAL syncs", writes, m.WALSyncs)
	if m.WALSyncs == 0 || m.WALSyncs > writes/4 {
		t.Fatalf("%d writes took %d WAL syncs; group commit should need far fewer", writes, m.WALSyncs)
	}
	for g := range writers {
		checkGet(t, d, fmt.Sprintf("g%02d-%03d", g, perWriter-1), "v", true)
	}
}

// TestConcurrentReadersAndWriters runs writers, point readers and scanners
// together (under -race this also checks the lock-free read path). Each
// writer owns its keys and writes increasing counters, so a reader can
// check it never sees a value go backwards, and every scan sees each
// writer's keys at one consistent point: within a snapshot, key i+1 of a
// writer never holds a newer round than key i (the writer updates them in
// order, one batch per round).
func TestConcurrentReadersAndWriters(t *testing.T) {
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	opts.Sync = SyncNone
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	const writers, keysPerWriter = 3, 20
	rounds := 150
	if testing.Short() {
		rounds = 50
	}
	key := func(w, k int) []byte { return fmt.Appendf(nil, "w%d/k%02d", w, k) }
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := NewBatch()
			for r := 1; r <= rounds; r++ {
				b.Reset()
				for k := range keysPerWriter {
					// Padding makes memtables rotate and tables compact.
					b.Put(key(w, k), fmt.Appendf(nil, "%06d|%s", r, bytes.Repeat([]byte{'x'}, 100)))
				}
				if err := d.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	round := func(v []byte) int {
		n, err := strconv.Atoi(string(v[:6]))
		if err != nil {
			t.Errorf("bad value %q", v)
		}
		return n
	}
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			last := make(map[string]int)
			for i := 0; !stop.Load(); i++ {
				k := key(i%writers, i%keysPerWriter)
				v, err := d.Get(k)
				if errors.Is(err, ErrNotFound) {
					if last[string(k)] > 0 {
						t.Errorf("%s vanished", k)
					}
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				r := round(v)
				if r < last[string(k)] {
					t.Errorf("%s went back from round %d to %d", k, last[string(k)], r)
				}
				last[string(k)] = r
			}
		}()
	}
	readers.Add(1)
	go func() {
		defer readers.Done()
		for !stop.Load() {
			it := d.NewIterator([]byte("w"), nil)
			prev := map[int]int{}
			for ok := it.First(); ok; ok = it.Next() {
				var w, k int
				if _, err := fmt.Sscanf(string(it.Key()), "w%d/k%d", &w, &k); err != nil {
					t.Errorf("bad key %q", it.Key())
					break
				}
				r := round(it.Value())
				if p, seen := prev[w]; seen && r > p {
					t.Errorf("scan saw w%d/k%02d at round %d after an earlier key at round %d: not a snapshot", w, k, r, p)
				}
				prev[w] = r
			}
			if err := it.Close(); err != nil {
				t.Error(err)
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	readers.Wait()
	for w := range writers {
		for k := range keysPerWriter {
			v, err := d.Get(key(w, k))
			if err != nil || round(v) != rounds {
				t.Fatalf("final %s: %q %v", key(w, k), v, err)
			}
		}
	}
	if m := d.Metrics(); m.Flushes == 0 {
		t.Fatalf("no flush happened: %+v", m)
	}
}

// TestIteratorSnapshot checks that an iterator sees neither writes nor
// deletes made after it was created, even after they are flushed and
// compacted, and that it keeps the tables it reads alive.
func TestIteratorSnapshot(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", smallOptions(fs))
	defer d.Close()
	for i := range 500 {
		mustPut(t, d, fmt.Sprintf("k%04d", i), "old")
	}
	it := d.NewIterator(nil, nil)
	defer it.Close()
	for i := range 500 {
		if i%2 == 0 {
			if err := d.Delete(fmt.Appendf(nil, "k%04d", i)); err != nil {
				t.Fatal(err)
			}
		} else {
			mustPut(t, d, fmt.Sprintf("k%04d", i), "new")
		}
		mustPut(t, d, fmt.Sprintf("k%04d-added", i), "new")
	}
	// Enough churn to flush and compact everything the iterator reads.
	for r := range 5 {
		for i := range 500 {
			mustPut(t, d, fmt.Sprintf("k%04d", i), fmt.Sprintf("churn%d%s", r, bytes.Repeat([]byte{'x'}, 100)))
		}
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for d.Metrics().Compactions == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if want := fmt.Sprintf("k%04d", n); string(it.Key()) != want || string(it.Value()) != "old" {
			t.Fatalf("entry %d: %q=%q, want %q=old", n, it.Key(), it.Value(), want)
		}
		n++
	}
	if err := it.Err(); err != nil || n != 500 {
		t.Fatalf("iterated %d keys, err %v", n, err)
	}
	if !it.SeekGE([]byte("k0250")) || string(it.Key()) != "k0250" || string(it.Value()) != "old" {
		t.Fatalf("SeekGE: %q=%q", it.Key(), it.Value())
	}
}

func TestIteratorBounds(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		mustPut(t, d, k, k)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "bb", "bb")
	for _, tc := range []struct {
		lower, upper, seek string
		want               string
	}{
		{"", "", "", "a b bb c d e"},
		{"b", "d", "", "b bb c"},
		{"b", "d", "a", "b bb c"},
		{"b", "d", "bc", "c"},
		{"b", "d", "d", ""},
		{"x", "", "", ""},
		{"", "a", "", ""},
	} {
		var lower, upper []byte
		if tc.lower != "" {
			lower = []byte(tc.lower)
		}
		if tc.upper != "" {
			upper = []byte(tc.upper)
		}
		it := d.NewIterator(lower, upper)
		var got []string
		var ok bool
		if tc.seek == "" {
			ok = it.First()
		} else {
			ok = it.SeekGE([]byte(tc.seek))
		}
		for ; ok; ok = it.Next() {
			if !it.Valid() || string(it.Value()) != string(it.Key()) {
				t.Fatalf("bad entry %q=%q", it.Key(), it.Value())
			}
			got = append(got, string(it.Key()))
		}
		if it.Valid() || it.Key() != nil {
			t.Fatal("exhausted iterator still valid")
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if err := it.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		if g := fmt.Sprint(got); g != fmt.Sprint(splitOrNil(tc.want)) {
			t.Errorf("[%q,%q) seek %q: got %v, want %v", tc.lower, tc.upper, tc.seek, got, tc.want)
		}
	}
}

func splitOrNil(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, f := range bytes.Fields([]byte(s)) {
		out = append(out, string(f))
	}
	return out
}

// TestWriteStalls drives sustained writes while compaction cannot keep up
// and checks that L0 and the memtables stay bounded.
func TestWriteStalls(t *testing.T) {
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	opts.Sync = SyncNone
	opts.L0CompactionTrigger = 2
	opts.L0SlowdownWrites = 3
	opts.L0StopWrites = 4
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	var wg sync.WaitGroup
	var maxL0, maxImm atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			m := d.Metrics()
			if n := int64(m.Levels[0].Files); n > maxL0.Load() {
				maxL0.Store(n)
			}
			if n := int64(m.ImmutableMemtables); n > maxImm.Load() {
				maxImm.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	value := bytes.Repeat([]byte("v"), 512)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := NewBatch()
			for i := range 300 {
				b.Reset()
				for j := range 10 {
					b.Put(fmt.Appendf(nil, "g%d-%05d", g, (i*10+j)*7919%3000), value)
				}
				if err := d.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	m := d.Metrics()
	t.Logf("stalls %d (%v), slowdowns %d, max L0 %d, max immutable %d", m.StallCount, m.StallDuration, m.SlowdownCount, maxL0.Load(), maxImm.Load())
	// A flush may land while the committer waits, so L0 can exceed the
	// stop threshold by the memtables already queued.
	if maxL0.Load() > int64(opts.L0StopWrites+maxImmutableMemtables+1) {
		t.Fatalf("L0 reached %d tables with L0StopWrites %d", maxL0.Load(), opts.L0StopWrites)
	}
	if maxImm.Load() > maxImmutableMemtables {
		t.Fatalf("%d immutable memtables queued, limit %d", maxImm.Load(), maxImmutableMemtables)
	}
}

// TestCloseWhileStalled checks Close does not hang when the committer waits
// for compaction.
func TestCloseWhileStalled(t *testing.T) {
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	d := mustOpen(t, "/db", opts)
	// Hold the manifest lock so that no flush can finish: memtables pile
	// up and the committer stalls on the immutable-memtable limit.
	d.manifestMu.Lock()
	errs := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if err := d.Put(fmt.Appendf(nil, "k%06d", i), bytes.Repeat([]byte("v"), 200)); err != nil {
				errs <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for d.Metrics().StallCount == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if d.Metrics().StallCount == 0 {
		t.Fatal("writes never stalled")
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	time.Sleep(20 * time.Millisecond)
	d.manifestMu.Unlock() // let the in-flight flush finish, as Close waits for it
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung while writes were stalled")
	}
	if err := <-errs; !errors.Is(err, ErrClosed) {
		t.Fatalf("stalled write: %v", err)
	}
}

// TestSyncBatchUnderLoad checks that SyncBatch fsyncs on schedule even when
// the committer never runs out of work (it used to check its timer only
// when idle). WAL writes are slowed down so that writers always refill the
// queue while a group is being written.
func TestSyncBatchUnderLoad(t *testing.T) {
	opts := testOptions(slowWriteFS{vfs.NewMem()})
	opts.Sync = SyncBatch
	opts.SyncInterval = time.Millisecond
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i := 0; i < 5000 && d.metrics.timedSyncs.Load() < 3; i++ {
		sem <- struct{}{}
		wg.Add(1)
		b := NewBatch()
		b.Put(fmt.Appendf(nil, "k%06d", i), []byte("v"))
		d.WriteAsync(b, func(err error) {
			if err != nil {
				t.Error(err)
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	if n := d.metrics.timedSyncs.Load(); n < 3 {
		t.Fatalf("%d timed syncs under sustained SyncBatch load", n)
	}
}

// slowWriteFS makes every write to a WAL take 2ms.
type slowWriteFS struct{ vfs.FS }

type slowWriteFile struct{ vfs.File }

func (f slowWriteFile) Write(p []byte) (int, error) {
	time.Sleep(2 * time.Millisecond)
	return f.File.Write(p)
}

func (fs slowWriteFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return slowWriteFile{f}, nil
}

// UnorderedBytes is the memtable backlog a new iterator orders first: it
// grows with writes and drops to zero once an iterator has been made.
func TestUnorderedBytes(t *testing.T) {
	d := mustOpen(t, "/db", testOptions(vfs.NewMem()))
	defer d.Close()
	if got := d.UnorderedBytes(); got != 0 {
		t.Fatalf("empty DB: %d", got)
	}
	for _, k := range []string{"c", "a", "b"} {
		mustPut(t, d, k, k)
	}
	before := d.UnorderedBytes()
	if before == 0 {
		t.Fatal("no backlog after three puts")
	}
	it := d.NewIterator(nil, nil)
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if got := d.UnorderedBytes(); got != 0 {
		t.Fatalf("after NewIterator: %d (before: %d)", got, before)
	}
	mustPut(t, d, "d", "d")
	if got := d.UnorderedBytes(); got == 0 || got >= before {
		t.Fatalf("after one more put: %d (three puts: %d)", got, before)
	}
}

// TestStallVisibleWhileItLasts: a stall in progress counts in
// StallDuration before it ends, and a long one is logged when it ends.
func TestStallVisibleWhileItLasts(t *testing.T) {
	logger, rec := logtest.New()
	opts := smallOptions(vfs.NewMem())
	opts.Logger = logger
	d := mustOpen(t, "/db", opts)
	defer d.Close()
	d.manifestMu.Lock() // no flush can finish: the committer stalls
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if err := d.Put(fmt.Appendf(nil, "k%06d", i), bytes.Repeat([]byte("v"), 200)); err != nil || d.Metrics().StallCount > 0 {
				done <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for d.Metrics().StallCount == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if d.Metrics().StallCount == 0 {
		d.manifestMu.Unlock()
		t.Fatal("writes never stalled")
	}
	time.Sleep(50 * time.Millisecond)
	first := d.Metrics().StallDuration
	time.Sleep(longStall)
	second := d.Metrics().StallDuration
	d.manifestMu.Unlock()
	if first < 40*time.Millisecond || second-first < longStall-100*time.Millisecond {
		t.Fatalf("stall in progress: StallDuration %v, then %v a second later", first, second)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "after", "v") // the stall has ended
	if got := logtest.Matching(rec.Records(), "lsm: writes stalled"); len(got) != 1 || !strings.Contains(got[0], "memtables full") {
		t.Fatalf("long stall logged as %q", got)
	}
}
