package cluster

import (
	"bytes"
	stdlog "log"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLogLimiter(t *testing.T) {
	l := logLimiter{every: time.Second, seen: make(map[string]*logSeen)}
	t0 := time.Unix(0, 0)
	if ok, n := l.allow("a %d", t0); !ok || n != 0 {
		t.Fatalf("first message: %v %d", ok, n)
	}
	for i := range 5 {
		if ok, _ := l.allow("a %d", t0.Add(time.Duration(i)*100*time.Millisecond)); ok {
			t.Fatalf("repeat %d within the interval let through", i)
		}
	}
	if ok, _ := l.allow("b %d", t0); !ok {
		t.Fatal("another format was held back")
	}
	if ok, n := l.allow("a %d", t0.Add(time.Second)); !ok || n != 5 {
		t.Fatalf("after the interval: %v, suppressed %d, want true 5", ok, n)
	}
	if ok, n := l.allow("a %d", t0.Add(3*time.Second)); !ok || n != 0 {
		t.Fatalf("quiet interval: %v %d", ok, n)
	}
}

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
