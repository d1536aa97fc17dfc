//go:build !unix

package main

// syncFS is a no-op where sync(2) does not exist; results there may include
// the previous phase's write-back.
func syncFS() {}
