//go:build !linux

package fakeserver

import "time"

// pinThread cannot measure a thread's CPU time here: it reports zero.
func pinThread() func() time.Duration { return func() time.Duration { return 0 } }
