package lsm

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/lni/vfs"
)

// TestSpaceWatchRealFS: the free space a job waits for is the file
// system's (statfs through vfs.Default), seen short while a file fills it
// and enough once the file is removed.
func TestSpaceWatchRealFS(t *testing.T) {
	disk := smallDisk(t, 8<<20)
	d := &DB{opts: Options{FS: vfs.Default}, dirname: disk}
	filler := filepath.Join(disk, "filler")
	fillDisk(t, filler)
	enospc := fmt.Errorf("flush: %w", &os.PathError{Op: "write", Path: filler, Err: syscall.ENOSPC})
	w := d.watchSpace(enospc, 2<<20)
	if w == nil {
		t.Fatal("ENOSPC on a tmpfs not watched")
	}
	if !w.short || w.roomAgain() {
		t.Fatal("room for 2 MiB on a full disk")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if !w.roomAgain() {
		t.Fatal("no room for 2 MiB once 8 MiB were freed")
	}
}
