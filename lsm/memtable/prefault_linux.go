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

// wholePages returns the part of b made of whole pages.
func wholePages(b []byte) []byte {
	page := uintptr(unix.Getpagesize())
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (page - addr%page) % page
	end := (addr + uintptr(len(b))) &^ (page - 1)
	if end <= addr+start {
		return nil
	}
	return b[start : end-addr]
}
