//go:build unix

package bench

import (
	"syscall"
	"time"
)

// cpuSample is the CPU time this process has used, and when it was read.
type cpuSample struct {
	at        time.Time
	user, sys time.Duration
	ok        bool
}

func sampleCPU() cpuSample {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{at: time.Now()}
	}
	return cpuSample{
		at:   time.Now(),
		user: time.Duration(ru.Utime.Nano()),
		sys:  time.Duration(ru.Stime.Nano()),
		ok:   true,
	}
}
