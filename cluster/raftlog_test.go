package cluster

import (
	"bytes"
	stdlog "log"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// Dragonboat's pebble LogDB reports its errors (a flush failing on a full
// disk, the write error it panics with) through Go's standard log; they
// must reach the node's log, once per kind per interval, not standard
// error at every retry.
func TestStandardLogReachesNodeLog(t *testing.T) {
	var buf syncBuffer
	prev := raftLogger.Load()
	t.Cleanup(func() { raftLogger.Store(prev) })
	setRaftLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	for i := range 50 {
		stdlog.Printf("background error: write /data/raft/logdb-0/%06d.sst: no space left on device", 1000+i)
	}
	stdlog.Printf("write /data/raft/logdb-0/000293.log: no space left on device")
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (one per kind):\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "no space left on device") {
			t.Fatalf("line %q: want an ERROR with the message", l)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
