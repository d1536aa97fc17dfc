package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

func ikey(ukey string, seq uint64) []byte {
	return base.AppendKey(nil, []byte(ukey), seq, base.KindSet)
}

func meta(num uint64, lo, hi string, size int64, seqs ...uint64) *fileMetadata {
	m := &fileMetadata{fileNum: num, size: size, smallest: ikey(lo, 1), largest: ikey(hi, 1)}
	if len(seqs) == 2 {
		m.smallestSeq, m.largestSeq = seqs[0], seqs[1]
	}
	return m
}

func TestVersionEditRoundTrip(t *testing.T) {
	e := &versionEdit{}
	e.setLogNum(7)
	e.setNextFileNum(99)
	e.setLastSeq(1 << 40)
	e.deleted = []deletedFile{{level: 1, fileNum: 3}, {level: 6, fileNum: 4}}
	m := meta(12, "a", "zz", 4096, 5, 9)
	m.entries, m.deletions = 100, 7
	e.added = []newFile{{level: 2, meta: m}}
	var got versionEdit
	if err := got.decode(e.encode(nil)); err != nil {
		t.Fatal(err)
	}
	if got.logNum != 7 || got.nextFileNum != 99 || got.lastSeq != 1<<40 || !got.hasLogNum ||
		!reflect.DeepEqual(got.deleted, e.deleted) || len(got.added) != 1 {
		t.Fatalf("decoded %+v", got)
	}
	g := got.added[0]
	if g.level != 2 || g.meta.fileNum != 12 || g.meta.size != 4096 || !bytes.Equal(g.meta.smallest, m.smallest) ||
		!bytes.Equal(g.meta.largest, m.largest) || g.meta.smallestSeq != 5 || g.meta.largestSeq != 9 ||
		g.meta.entries != 100 || g.meta.deletions != 7 {
		t.Fatalf("decoded file %+v", g.meta)
	}
	// Every truncation fails cleanly (or decodes a prefix of whole fields).
	enc := e.encode(nil)
	for cut := 1; cut < len(enc); cut++ {
		var x versionEdit
		if err := x.decode(enc[:cut]); err != nil && !errors.Is(err, ErrCorruption) {
			t.Fatalf("cut %d: %v", cut, err)
		}
	}
}

func FuzzVersionEdit(f *testing.F) {
	e := &versionEdit{}
	e.setLogNum(3)
	e.added = []newFile{{level: 0, meta: meta(5, "a", "b", 10, 1, 2)}}
	e.deleted = []deletedFile{{level: 1, fileNum: 4}}
	f.Add(e.encode(nil))
	f.Add([]byte{tagNewFile, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e versionEdit
		if err := e.decode(data); err != nil {
			if !errors.Is(err, ErrCorruption) {
				t.Fatalf("error does not wrap ErrCorruption: %v", err)
			}
			return
		}
		// What decodes re-encodes to something that decodes the same.
		var again versionEdit
		if err := again.decode(e.encode(nil)); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(again.added) != len(e.added) || len(again.deleted) != len(e.deleted) {
			t.Fatal("re-decode differs")
		}
	})
}

func TestVersionApply(t *testing.T) {
	var obsolete []uint64
	v0 := &version{obsolete: func(f *fileMetadata) { obsolete = append(obsolete, f.fileNum) }}
	v0.refs.Store(1)
	e := &versionEdit{added: []newFile{
		{0, meta(1, "a", "m", 10, 1, 10)},
		{0, meta(2, "c", "z", 10, 11, 20)},
		{1, meta(3, "n", "p", 10)},
		{1, meta(4, "a", "b", 10)},
	}}
	v1, err := v0.apply(e)
	if err != nil {
		t.Fatal(err)
	}
	if v1.levels[0][0].fileNum != 2 || v1.levels[1][0].fileNum != 4 {
		t.Fatalf("order: L0 newest first, L1 by key: %v %v", v1.levels[0][0].fileNum, v1.levels[1][0].fileNum)
	}
	v0.unref()
	// Moving table 1 down and deleting 3 leaves 3 obsolete once v1 goes.
	_, err = v1.apply(&versionEdit{
		deleted: []deletedFile{{0, 1}, {1, 3}},
		added:   []newFile{{1, v1.levels[0][1]}},
	})
	if err == nil {
		t.Fatal("overlapping L1 tables accepted")
	}
	v2, err := v1.apply(&versionEdit{
		deleted: []deletedFile{{1, 3}, {1, 4}, {0, 1}},
		added:   []newFile{{1, v1.levels[0][1]}},
	})
	if err != nil {
		t.Fatal(err)
	}
	v1.unref()
	if fmt.Sprint(obsolete) != "[3 4]" && fmt.Sprint(obsolete) != "[4 3]" {
		t.Fatalf("obsolete %v, want 3 and 4", obsolete)
	}
	if _, err := v2.apply(&versionEdit{deleted: []deletedFile{{2, 1}}}); !errors.Is(err, ErrCorruption) {
		t.Fatalf("deleting a table from the wrong level: %v", err)
	}
	if got := v2.overlaps(1, []byte("b"), []byte("c")); len(got) != 1 || got[0].fileNum != 1 {
		t.Fatalf("overlaps %v", got)
	}
	if !isBaseLevelForKey(v2, 0, []byte("zz")) || isBaseLevelForKey(v2, 0, []byte("b")) {
		t.Fatal("isBaseLevelForKey")
	}
}

func TestPickCompaction(t *testing.T) {
	o := pickerOptions{l0Trigger: 2, levelBaseBytes: 100, targetFileBytes: 10}
	build := func(files map[int][]*fileMetadata) *version {
		v := &version{}
		e := &versionEdit{}
		for level, fs := range files {
			for _, f := range fs {
				e.added = append(e.added, newFile{level, f})
			}
		}
		nv, err := v.apply(e)
		if err != nil {
			t.Fatal(err)
		}
		return nv
	}
	var cursor [numLevels][]byte

	t.Run("nothing to do", func(t *testing.T) {
		v := build(map[int][]*fileMetadata{0: {meta(1, "a", "b", 10, 1, 1)}, 1: {meta(2, "a", "z", 50)}})
		if c := pickCompaction(v, o, &cursor); c != nil {
			t.Fatalf("picked %+v", c)
		}
	})
	t.Run("L0 takes overlapping group", func(t *testing.T) {
		v := build(map[int][]*fileMetadata{
			0: {
				meta(1, "a", "c", 10, 1, 1), // oldest
				meta(2, "b", "f", 10, 2, 2), // overlaps 1
				meta(3, "e", "g", 10, 3, 3), // overlaps 2 (transitively 1)
				meta(4, "x", "y", 10, 4, 4), // disjoint
			},
			1: {meta(5, "a", "b", 10), meta(6, "f", "h", 10), meta(7, "m", "n", 10)},
		})
		c := pickCompaction(v, o, &cursor)
		if c == nil || c.level != 0 || c.trivialMove {
			t.Fatalf("picked %+v", c)
		}
		if got := fileNums(c.inputs[0]); got != "[3 2 1]" {
			t.Fatalf("L0 inputs %s", got)
		}
		if got := fileNums(c.inputs[1]); got != "[5 6]" {
			t.Fatalf("L1 inputs %s", got)
		}
	})
	t.Run("L0 trivial move", func(t *testing.T) {
		v := build(map[int][]*fileMetadata{
			0: {meta(1, "a", "c", 10, 1, 1), meta(2, "x", "y", 10, 2, 2)},
			1: {meta(5, "m", "n", 10)},
		})
		c := pickCompaction(v, o, &cursor)
		if c == nil || !c.trivialMove || fileNums(c.inputs[0]) != "[1]" {
			t.Fatalf("picked %+v", c)
		}
	})
	t.Run("level by size, round robin", func(t *testing.T) {
		v := build(map[int][]*fileMetadata{
			1: {meta(1, "a", "b", 60), meta(2, "c", "d", 60), meta(3, "e", "f", 60)},
			2: {meta(4, "c", "c", 10), meta(5, "e", "e", 10)},
			3: {meta(6, "a", "z", 10)},
		})
		cursor = [numLevels][]byte{}
		var picked []string
		for range 4 {
			c := pickCompaction(v, o, &cursor)
			if c == nil || c.level != 1 {
				t.Fatalf("picked %+v", c)
			}
			picked = append(picked, fmt.Sprintf("%s%s%v", fileNums(c.inputs[0]), fileNums(c.inputs[1]), c.trivialMove))
		}
		if got := fmt.Sprint(picked); got != "[[1][]true [2][4]false [3][5]false [1][]true]" {
			t.Fatalf("picks %s", got)
		}
	})
	t.Run("grandparent overlap blocks trivial move", func(t *testing.T) {
		v := build(map[int][]*fileMetadata{
			1: {meta(1, "a", "z", 300)},
			3: {meta(6, "a", "z", 1000)},
		})
		cursor = [numLevels][]byte{}
		c := pickCompaction(v, o, &cursor)
		if c == nil || c.trivialMove || len(c.grandparents) != 1 {
			t.Fatalf("picked %+v", c)
		}
	})
	t.Run("L0 first once writes stop", func(t *testing.T) {
		// L0 at the stop count scores 3 (6 tables, trigger 2); L1, just
		// filled by the last L0 compaction, scores 8 and L2 4. Stopped
		// writes wait on L0 alone, so it goes first.
		o := o
		o.l0Stop = 6
		var l0 []*fileMetadata
		for i := range 6 {
			l0 = append(l0, meta(uint64(10+i), "a", "z", 10, uint64(6-i), uint64(6-i)))
		}
		deeper := func(l0 []*fileMetadata) *version {
			return build(map[int][]*fileMetadata{
				0: l0,
				1: {meta(1, "a", "m", 400), meta(2, "n", "z", 400)},
				2: {meta(3, "a", "z", 4000)},
			})
		}
		cursor = [numLevels][]byte{}
		if c := pickCompaction(deeper(l0), o, &cursor); c == nil || c.level != 0 || len(c.inputs[0]) != 6 {
			t.Fatalf("picked %+v, want all of L0", c)
		}
		// One table fewer: writes go on, and the fullest level wins.
		if c := pickCompaction(deeper(l0[1:]), o, &cursor); c == nil || c.level != 1 {
			t.Fatalf("picked %+v, want L1", c)
		}
	})
	t.Run("scores", func(t *testing.T) {
		v := build(map[int][]*fileMetadata{
			0: {meta(1, "a", "c", 10, 1, 1)},
			2: {meta(2, "a", "c", 500)},
			6: {meta(3, "a", "c", 1<<40)},
		})
		s := levelScores(v, o)
		if s[0] != 0.5 || s[2] != 0.5 || s[6] != 0 {
			t.Fatalf("scores %v", s)
		}
	})
}

func fileNums(files []*fileMetadata) string {
	var nums []uint64
	for _, f := range files {
		nums = append(nums, f.fileNum)
	}
	return fmt.Sprint(nums)
}

// sliceIter is a base.Iterator over sorted internal keys, for tests.
type sliceIter struct {
	keys, values [][]byte
	i            int
}

func (s *sliceIter) SeekGE(k []byte) {
	s.i = 0
	for s.i < len(s.keys) && base.Compare(s.keys[s.i], k) < 0 {
		s.i++
	}
}
func (s *sliceIter) First()        { s.i = 0 }
func (s *sliceIter) Next()         { s.i++ }
func (s *sliceIter) Valid() bool   { return s.i < len(s.keys) }
func (s *sliceIter) Key() []byte   { return s.keys[s.i] }
func (s *sliceIter) Value() []byte { return s.values[s.i] }
func (s *sliceIter) Err() error    { return nil }
func (s *sliceIter) Close() error  { return nil }

func entries(spec ...string) *sliceIter {
	s := &sliceIter{}
	for _, e := range spec {
		var k string
		var seq uint64
		var kind string
		fmt.Sscanf(e, "%1s%d%s", &k, &seq, &kind)
		knd := base.KindSet
		if kind == "del" {
			knd = base.KindDelete
		}
		s.keys = append(s.keys, base.AppendKey(nil, []byte(k), seq, knd))
		s.values = append(s.values, []byte(e))
	}
	return s
}

func TestCompactionIter(t *testing.T) {
	// Entries: key, seq, "set"/"del"; given in internal-key order.
	input := []string{"a9set", "a7set", "a5del", "a3set", "b8del", "b2set", "c4set"}
	for _, tc := range []struct {
		name      string
		snapshots []uint64
		elide     bool
		want      string
	}{
		{"no snapshots keep newest", nil, false, "[a9set b8del c4set]"},
		{"no snapshots elide tombstones", nil, true, "[a9set c4set]"},
		{"tombstone seen by every snapshot is dropped", []uint64{6}, true, "[a9set b8del b2set c4set]"},
		{"snapshot pins older versions", []uint64{6}, false, "[a9set a5del b8del b2set c4set]"},
		{"snapshot below tombstone keeps it", []uint64{3}, true, "[a9set a3set b8del b2set c4set]"},
		{"two snapshots", []uint64{4, 8}, false, "[a9set a7set a3set b8del b2set c4set]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ci := &compactionIter{iter: entries(input...), snapshots: tc.snapshots}
			if tc.elide {
				ci.elide = func([]byte) bool { return true }
			}
			var got []string
			for ci.First(); ci.Valid(); ci.Next() {
				got = append(got, string(ci.Value()))
			}
			if fmt.Sprint(got) != tc.want {
				t.Fatalf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestMergingIter(t *testing.T) {
	m := newMergingIter([]base.Iterator{
		entries("a5set", "c5set", "e5set"),
		entries("b5set", "c6set", "d5set"),
		entries(),
		entries("a9set"),
	})
	var got []string
	for m.First(); m.Valid(); m.Next() {
		got = append(got, string(m.Value()))
	}
	if fmt.Sprint(got) != "[a9set a5set b5set c6set c5set d5set e5set]" {
		t.Fatalf("merged %v", got)
	}
	m.SeekGE(base.AppendKey(nil, []byte("c"), 5, base.KindMax))
	if !m.Valid() || string(m.Value()) != "c5set" {
		t.Fatalf("seek: %v", m.Valid())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFilenames(t *testing.T) {
	for _, tc := range []struct {
		t   fileType
		num uint64
	}{{fileTypeLog, 7}, {fileTypeTable, 1234567}, {fileTypeManifest, 3}, {fileTypeTemp, 9}, {fileTypeCurrent, 0}, {fileTypeLock, 0}} {
		name := makeFilename(tc.t, tc.num)
		typ, num, ok := parseFilename(name)
		if !ok || typ != tc.t || num != tc.num {
			t.Fatalf("%s parsed as %v %d %v", name, typ, num, ok)
		}
	}
	for _, bad := range []string{"foo", "12.txt", "MANIFEST-x", "x.log", ".sst"} {
		if _, _, ok := parseFilename(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

// TestManifestRewriteOnGrowth: a manifest is rewritten at maxManifestBytes,
// or once its edits outgrow its snapshot manifestGrowth times (past
// minManifestRewrite), so Open's replay stays proportional to the tables.
func TestManifestRewriteOnGrowth(t *testing.T) {
	for _, c := range []struct {
		size, snapshot, max int64
		want                bool
	}{
		{size: 100, snapshot: 100, max: 64 << 20, want: false},
		{size: 64 << 20, snapshot: 32 << 20, max: 64 << 20, want: true},
		{size: minManifestRewrite - 1, snapshot: 10, max: 64 << 20, want: false},
		{size: minManifestRewrite, snapshot: 10, max: 64 << 20, want: true},
		{size: 15 * (1 << 20), snapshot: 1 << 20, max: 64 << 20, want: false},
		{size: 16 * (1 << 20), snapshot: 1 << 20, max: 64 << 20, want: true},
	} {
		m := &manifestWriter{size: c.size, snapshotSize: c.snapshot}
		if got := m.full(c.max); got != c.want {
			t.Errorf("size %d, snapshot %d, max %d: full = %v, want %v", c.size, c.snapshot, c.max, got, c.want)
		}
	}
}
