package server

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// reopenedLocal writes keys, flushes, closes and reopens: tables are not
// open, so every GetNoWait of a key in them is ErrWouldBlock.
func reopenedLocal(t *testing.T, keys ...string) *store.Local {
	t.Helper()
	dir := t.TempDir()
	db, err := lsm.Open(dir, lsm.Options{Sync: lsm.SyncNone, MemtableBytes: 1 << 20, BlockCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := db.Put([]byte(k), []byte("old-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = lsm.Open(dir, lsm.Options{Sync: lsm.SyncNone, MemtableBytes: 1 << 20, BlockCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewLocal(db, "x")
	t.Cleanup(func() { st.Close() })
	return st
}

// readExactly reads len(want) bytes from c (want only gives the length).
func readExactly(t *testing.T, c net.Conn, want string) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(want))
	if n, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v (got %q)", err, got[:n])
	}
	return string(got)
}

// respReq encodes each command as a RESP array of bulk strings.
func respReq(cmds ...[]string) []byte {
	var b []byte
	for _, args := range cmds {
		b = appendRESP(b, args...)
	}
	return b
}

// TestDelThenSetInAPipelineWithDiskReads: DEL k; SET k new; GET k
// pipelined, k only in a table not open yet (DEL's read goes to a
// goroutine): the SET must not reach the store before the DEL.
func TestDelThenSetInAPipelineWithDiskReads(t *testing.T) {
	for i := 0; i < 5; i++ {
		st := reopenedLocal(t, "k")
		addr := startTestServer(t, st, nil)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(respReq([]string{"DEL", "k"}, []string{"SET", "k", "new"}, []string{"GET", "k"}))
		want := ":1\r\n+OK\r\n$3\r\nnew\r\n"
		if got := readExactly(t, c, want); got != want {
			t.Fatalf("round %d: got %q want %q", i, got, want)
		}
		c.Close()
	}
}

// TestReadsOfUnopenedTablesKeepOrder: reads that need the disk (tables not
// open yet) keep request order and read-your-writes in a pipeline.
func TestReadsOfUnopenedTablesKeepOrder(t *testing.T) {
	for i := 0; i < 5; i++ {
		st := reopenedLocal(t, "k", "j")
		addr := startTestServer(t, st, nil)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(respReq([]string{"GET", "k"}, []string{"SET", "k", "new"}, []string{"GET", "k"},
			[]string{"MGET", "j", "k"}, []string{"EXISTS", "j"}, []string{"STRLEN", "j"}, []string{"SET", "j", "x"}, []string{"GET", "j"}))
		want := "$5\r\nold-k\r\n+OK\r\n$3\r\nnew\r\n*2\r\n$5\r\nold-j\r\n$3\r\nnew\r\n:1\r\n:5\r\n+OK\r\n$1\r\nx\r\n"
		if got := readExactly(t, c, want); got != want {
			t.Fatalf("round %d: got %q want %q", i, got, want)
		}
		c.Close()
	}
}

// TestDelThenSetInAPipelineOnAnAsyncStore: the same against a store whose
// reads always complete later (as in cluster mode).
func TestDelThenSetInAPipelineOnAnAsyncStore(t *testing.T) {
	st := newSlowStore()
	st.data["k"] = "old"
	addr := startTestServer(t, st, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(respReq([]string{"DEL", "k"}, []string{"SET", "k", "new"}, []string{"GET", "k"}))
	want := ":1\r\n+OK\r\n$3\r\nnew\r\n"
	if got := readExactly(t, c, want); got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}
