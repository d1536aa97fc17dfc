package server

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

// frontGatedStore answers GETs of "front" only once released, and GETs of
// anything else at once from another goroutine: replies behind the front
// complete while the front keeps them from being written.
type frontGatedStore struct {
	*slowStore
	release chan struct{}
}

func (f *frontGatedStore) Get(key []byte, done func([]byte, error)) {
	if string(key) == "front" {
		go func() { <-f.release; done([]byte("f"), nil) }()
		return
	}
	f.mu.Lock()
	v := f.data[string(key)]
	f.mu.Unlock()
	go done([]byte(v), nil)
}

// TestAsyncRepliesCountAgainstOutputLimit: replies completed by other
// goroutines but stuck behind an unanswered request count against
// max_output_bytes. A client pipelining 200 GETs of a 1 MiB value behind a
// slow one is closed at the limit instead of the server holding 200 MiB of
// replies (4096 pending reads of a 1 MiB value in cluster mode held 4 GB).
func TestAsyncRepliesCountAgainstOutputLimit(t *testing.T) {
	st := &frontGatedStore{slowStore: newSlowStore(), release: make(chan struct{})}
	defer close(st.release)
	st.data["big"] = strings.Repeat("v", 1<<20)
	addr := startTestServer(t, st, func(c *conf.Server) { c.MaxOutputBytes = 8 << 20 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := append([]byte("GET|front\n"), bytes.Repeat([]byte("GET|big\n"), 200)...)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	// The front is never answered while the client waits: only the limit
	// can end the connection.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		t.Fatalf("connection not closed with 200 MiB of replies owed behind a pending request (read %d bytes): %v", n, err)
	}
	if n != 0 {
		t.Fatalf("%d bytes of replies before the close; the front reply was never produced", n)
	}
}
