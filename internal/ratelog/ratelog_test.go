package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Every: time.Second}
	t0 := time.Unix(1000, 0)
	if ok, n := l.Allow(t0); !ok || n != 0 {
		t.Fatalf("first line: %v %d", ok, n)
	}
	for i := range 3 {
		if ok, _ := l.Allow(t0.Add(time.Duration(i+1) * 100 * time.Millisecond)); ok {
			t.Fatalf("line %d within the interval let through", i)
		}
	}
	if ok, n := l.Allow(t0.Add(time.Second)); !ok || n != 3 {
		t.Fatalf("line after the interval: %v, %d held back; want true, 3", ok, n)
	}
}

func TestKeyed(t *testing.T) {
	k := Keyed{Every: time.Second}
	t0 := time.Unix(1000, 0)
	if ok, _ := k.Allow("a", t0); !ok {
		t.Fatal("first a held back")
	}
	if ok, _ := k.Allow("b", t0); !ok {
		t.Fatal("first b held back by a")
	}
	if ok, _ := k.Allow("a", t0.Add(time.Millisecond)); ok {
		t.Fatal("second a let through")
	}
	if ok, n := k.Allow("a", t0.Add(2*time.Second)); !ok || n != 1 {
		t.Fatalf("a after the interval: %v %d", ok, n)
	}
}
