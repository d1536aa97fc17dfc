package cluster

import (
	"context"
	"fmt"
	stdlog "log"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/lni/dragonboat/v4/logger"

	"github.com/kvstore/kv/internal/ratelog"
)

// Dragonboat's logging is process-global: one logger factory, installed
// once. It forwards to the logger of the most recently opened Cluster (a
// process normally opens one), so dragonboat's messages end up in the same
// slog output as ours, one level quieter than dragonboat rates them (its
// INFO is chatty, and it logs harmless connection resets at shutdown as
// errors). Each message format is logged at most once per
// raftLogInterval, with a count of the ones dropped in between: without a
// quorum dragonboat repeats "dropped proposal, no leader" for every retry,
// hundreds of lines a second.
var (
	raftLogger        atomic.Pointer[slog.Logger]
	raftLoggerInstall sync.Once
	raftLogLimit      = ratelog.Keyed{Every: raftLogInterval}
)

const raftLogInterval = time.Second

func setRaftLogger(l *slog.Logger) {
	raftLogger.Store(l)
	raftLoggerInstall.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			rl := &raftLog{pkg: pkg}
			rl.level.Store(int32(logger.INFO))
			return rl
		})
		// Dragonboat's pebble LogDB does not log through the factory above:
		// its errors (a flush failing on a full disk, once per attempt, and
		// the fatal write error it panics with) go to Go's standard log,
		// which dragonboat's capnslog dependency points at standard error
		// when it is initialised. They belong in the node's log
		// (log.file), rate-limited like the rest.
		stdlog.SetFlags(0)
		stdlog.SetOutput(stdlogWriter{})
	})
}

// stdlogWriter forwards lines of Go's standard log (dragonboat's pebble
// LogDB) to the current raft logger as errors: pebble logs nothing
// routine there in dragonboat's setup, only background errors and the
// write failure it then panics with.
type stdlogWriter struct{}

func (stdlogWriter) Write(p []byte) (int, error) {
	lg := raftLogger.Load()
	if lg == nil {
		return len(p), nil
	}
	msg := strings.TrimRight(string(p), "\n")
	// Messages differ in file numbers only; one per kind per interval.
	kind := strings.Map(func(r rune) rune {
		if unicode.IsDigit(r) {
			return -1
		}
		return r
	}, msg)
	if len(kind) > 120 {
		kind = kind[:120]
	}
	ok, suppressed := raftLogLimit.Allow("stdlog: "+kind, time.Now())
	if !ok {
		return len(p), nil
	}
	if suppressed > 0 {
		lg.Error(msg, "raft_pkg", "logdb", "similar_suppressed", suppressed)
	} else {
		lg.Error(msg, "raft_pkg", "logdb")
	}
	return len(p), nil
}

// raftLog adapts dragonboat's ILogger to slog.
type raftLog struct {
	pkg   string
	level atomic.Int32 // a logger.LogLevel; messages above it are dropped
}

func (r *raftLog) SetLevel(l logger.LogLevel) { r.level.Store(int32(l)) }

func (r *raftLog) log(l logger.LogLevel, sl slog.Level, format string, args []interface{}) {
	if int32(l) > r.level.Load() {
		return
	}
	lg := raftLogger.Load()
	if lg == nil || !lg.Enabled(context.Background(), sl) {
		return
	}
	ok, suppressed := raftLogLimit.Allow(format, time.Now())
	if !ok {
		return
	}
	if suppressed > 0 {
		lg.Log(context.Background(), sl, fmt.Sprintf(format, args...), "raft_pkg", r.pkg, "similar_suppressed", suppressed)
		return
	}
	lg.Log(context.Background(), sl, fmt.Sprintf(format, args...), "raft_pkg", r.pkg)
}

func (r *raftLog) Debugf(format string, args ...interface{}) {
	r.log(logger.DEBUG, slog.LevelDebug-4, format, args)
}

func (r *raftLog) Infof(format string, args ...interface{}) {
	r.log(logger.INFO, slog.LevelDebug, format, args)
}

func (r *raftLog) Warningf(format string, args ...interface{}) {
	r.log(logger.WARNING, slog.LevelInfo, format, args)
}

func (r *raftLog) Errorf(format string, args ...interface{}) {
	r.log(logger.ERROR, slog.LevelWarn, format, args)
}

func (r *raftLog) Panicf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	if lg := raftLogger.Load(); lg != nil {
		lg.Error(msg, "raft_pkg", r.pkg)
	}
	panic(msg)
}
