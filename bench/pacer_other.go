//go:build !linux

package bench

import "time"

// preciseSleep falls back to the runtime's timers, as coarse as the
// clients' own deadlines: the pacer then adds little, but does no harm.
func preciseSleep(d time.Duration) { time.Sleep(d) }
