package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/lni/dragonboat/v4/logger"
)

// Dragonboat's logging is process-global: one logger factory, installed
// once. It forwards to the logger of the most recently opened Cluster (a
// process normally opens one), so dragonboat's messages end up in the same
// slog output as ours, one level quieter than dragonboat rates them (its
// INFO is chatty, and it logs harmless connection resets at shutdown as
// errors).
var (
	raftLogger        atomic.Pointer[slog.Logger]
	raftLoggerInstall sync.Once
)

func setRaftLogger(l *slog.Logger) {
	raftLogger.Store(l)
	raftLoggerInstall.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			rl := &raftLog{pkg: pkg}
			rl.level.Store(int32(logger.INFO))
			return rl
		})
	})
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
