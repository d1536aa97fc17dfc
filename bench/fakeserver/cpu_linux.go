package fakeserver

import (
	"runtime"
	"syscall"
	"time"
)

// rusageThread is Linux's RUSAGE_THREAD: the calling thread's usage.
const rusageThread = 1

// pinThread locks the goroutine to its OS thread and returns a function
// that reports the CPU time the thread used since. The goroutine must end
// still locked, so the runtime retires the thread instead of reusing it.
func pinThread() func() time.Duration {
	runtime.LockOSThread()
	start := threadCPU()
	return func() time.Duration { return threadCPU() - start }
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
