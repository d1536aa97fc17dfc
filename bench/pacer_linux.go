package bench

import (
	"syscall"
	"time"
)

// preciseSleep sleeps in the kernel rather than on a runtime timer, which
// an idle Go process fires with millisecond granularity. The thread's timer
// slack (50µs by default, the kernel's licence to wake it late) is cut to
// 1µs first; the goroutine may be on any thread, so it is set every time,
// and a runtime thread left with a small slack only wakes more punctually.
func preciseSleep(d time.Duration) {
	const prSetTimerSlack = 29
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0)
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}
