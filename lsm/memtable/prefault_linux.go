package memtable

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14): fault the range
// in as if written, leaving its contents as they are.
const madvPopulateWrite = 23

// populate backs the whole pages inside b with memory. Concurrent writers
// are unaffected: a page already present is left alone, and a missing one
// is filled with the zeros it would have read. It fails with EINVAL on a
// kernel before 5.14; the pages then fault in on first write, as without it.
func populate(b []byte) error {
	if p := wholePages(b); len(p) > 0 {
		return unix.Madvise(p, madvPopulateWrite)
	}
	return nil
}

// adviseHugePages asks for transparent huge pages (2 MiB) behind the whole
// huge pages inside b. Arena and index are reached at random, a TLB miss
// each with 4 KiB pages. Where the kernel has no transparent huge pages,
// or only at the madvise of others, nothing changes.
func adviseHugePages(b []byte) {
	if p := aligned(b, hugePageBytes); len(p) > 0 {
		_ = unix.Madvise(p, unix.MADV_HUGEPAGE)
	}
}

// hugePageBytes is the size of a transparent huge page on x86-64 and
// arm64 with 4 KiB pages; where it is larger, no range qualifies.
const hugePageBytes = 2 << 20

// wholePages returns the part of b made of whole pages.
func wholePages(b []byte) []byte { return aligned(b, unix.Getpagesize()) }

// aligned returns the part of b made of whole size-aligned blocks (size a
// power of two).
func aligned(b []byte, size int) []byte {
	n := uintptr(size)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (n - addr%n) % n
	end := (addr + uintptr(len(b))) &^ (n - 1)
	if end <= addr+start {
		return nil
	}
	return b[start : end-addr]
}
