package memtable

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kvstore/kv/lsm/internal/base"
)

// resident counts the whole pages of b that are in memory.
func resident(t *testing.T, b []byte) (in, pages int) {
	t.Helper()
	p := wholePages(b)
	vec := make([]byte, len(p)/unix.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		t.Fatalf("mincore: %v", errno)
	}
	for _, v := range vec {
		in += int(v & 1)
	}
	return in, len(vec)
}

// TestPrefaultBacksTheTable: after Prefault every page of the arena and the
// index is resident, and entries written while it ran are intact.
func TestPrefaultBacksTheTable(t *testing.T) {
	if err := populate(make([]byte, 2*unix.Getpagesize())); err != nil {
		t.Skipf("MADV_POPULATE_WRITE not supported here: %v", err)
	}
	tbl := New(16 << 20)
	key := func(i int) []byte { return fmt.Appendf(nil, "key%08d", i) }
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 1+i%64) }
	const n = 20000
	var wg sync.WaitGroup
	wg.Go(func() { tbl.Prefault(nil) })
	for i := range n {
		if err := tbl.Add(key(i), uint64(i+1), base.KindSet, value(i)); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	slots := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(tbl.idx.slots))), len(tbl.idx.slots)*4)
	for name, b := range map[string][]byte{"arena": tbl.arena, "index": slots} {
		if in, pages := resident(t, b); in != pages {
			t.Errorf("%s: %d of %d pages resident after Prefault", name, in, pages)
		}
	}
	for i := range n {
		v, kind, ok := tbl.Get(key(i), n)
		if !ok || kind != base.KindSet || !bytes.Equal(v, value(i)) {
			t.Fatalf("key %d: %q %v %v after Prefault", i, v, kind, ok)
		}
	}
}
