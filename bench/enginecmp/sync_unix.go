//go:build unix

package main

import "syscall"

// syncFS writes all dirty pages back (sync(2)), so one phase's write-back
// does not land in the next phase's measurement.
func syncFS() { syscall.Sync() }
