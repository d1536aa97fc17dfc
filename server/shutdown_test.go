package server

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// gatedStore holds its first Get on the caller's goroutine (an event loop)
// until released, then answers it asynchronously a little later: the loop
// has read the request, but it is not counted in flight yet.
type gatedStore struct {
	*slowStore
	once             sync.Once
	entered, release chan struct{}
}

func (g *gatedStore) Get(key []byte, done func([]byte, error)) {
	first := false
	g.once.Do(func() { first = true })
	if !first {
		g.slowStore.Get(key, done)
		return
	}
	close(g.entered)
	<-g.release
	time.AfterFunc(50*time.Millisecond, func() { done([]byte("v"), nil) })
}

// TestShutdownWaitsForRequestsReadBeforeDraining: a GET the loop read
// before Shutdown began, whose store call had not returned when Shutdown
// looked, is answered before the loops stop (it used to be cut off: the
// client got EOF).
func TestShutdownWaitsForRequestsReadBeforeDraining(t *testing.T) {
	st := &gatedStore{slowStore: newSlowStore(), entered: make(chan struct{}), release: make(chan struct{})}
	s, addr, served := serveTestServer(t, st, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET|k\n")); err != nil {
		t.Fatal(err)
	}
	<-st.entered // the loop has read the GET and is in store.Get
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(ctx) }()
	for !s.draining.Load() {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // Shutdown has looked at least once
	close(st.release)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	<-served
	if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if line != "VALUE|v\n" {
		t.Fatalf("GET read before Shutdown got %q, %v; want its value", line, err)
	}
}
