//go:build !unix

package bench

import "time"

// cpuSample is the CPU time this process has used, and when it was read.
type cpuSample struct {
	at        time.Time
	user, sys time.Duration
	ok        bool
}

// sampleCPU cannot read the CPU time here: the report says it is unknown.
func sampleCPU() cpuSample { return cpuSample{at: time.Now()} }
