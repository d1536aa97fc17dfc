package cluster

import (
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
