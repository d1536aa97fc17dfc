package memtable

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
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
	slots := tbl.idx.bytes()
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

// vmFlags returns the VmFlags of the mapping that holds addr, from
// /proc/self/smaps.
func vmFlags(t *testing.T, addr uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	in := false
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(fields[0], "-"); ok {
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				in = uint64(addr) >= l && uint64(addr) < h
				continue
			}
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok && in {
			return strings.Fields(rest)
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return nil
}

// TestPrefaultAdvisesHugePages: Prefault marks the arena's and the index's
// whole 2 MiB blocks for transparent huge pages (VmFlags "hg"), where the
// kernel has them.
func TestPrefaultAdvisesHugePages(t *testing.T) {
	mode, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || bytes.Contains(mode, []byte("[never]")) {
		t.Skipf("no transparent huge pages here: %q %v", mode, err)
	}
	tbl := New(64 << 20)
	tbl.Prefault(nil)
	slots := tbl.idx.bytes()
	for name, b := range map[string][]byte{"arena": tbl.arena, "index": slots} {
		p := aligned(b, hugePageBytes)
		if len(p) == 0 {
			t.Fatalf("%s of %d bytes holds no whole huge page", name, len(b))
		}
		for _, addr := range []uintptr{uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(&p[len(p)-1]))} {
			if flags := vmFlags(t, addr); !slices.Contains(flags, "hg") {
				t.Errorf("%s at %#x: VmFlags %v, want hg", name, addr, flags)
			}
		}
	}
}
