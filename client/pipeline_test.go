package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestPipeline(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()

	p := c.Pipeline()
	p.Put([]byte("a"), []byte("1"))
	p.Get([]byte("a"))
	p.Get([]byte("missing"))
	p.Batch([]KV{{[]byte("b"), []byte("2")}, {[]byte("c"), []byte("3|3")}})
	p.Batch(nil)
	p.Do([]byte("GET"), []byte("c"))
	p.Delete([]byte("a"))
	p.Get([]byte("a"))
	if p.Len() != 8 {
		t.Fatalf("Len = %d", p.Len())
	}
	res, err := p.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 8 {
		t.Fatalf("%d results", len(res))
	}
	check := func(i int, value string, wantErr error) {
		t.Helper()
		if !errors.Is(res[i].Err, wantErr) || string(res[i].Value) != value {
			t.Errorf("result %d = %q, %v; want %q, %v", i, res[i].Value, res[i].Err, value, wantErr)
		}
	}
	check(0, "", nil)
	check(1, "1", nil)
	check(2, "", ErrNotFound)
	check(3, "", nil)
	check(4, "", nil)
	if f := res[5].Fields; len(f) != 2 || string(f[1]) != "3|3" {
		t.Errorf("Do result = %q", f)
	}
	check(6, "", nil)
	check(7, "", ErrNotFound)

	if p.Len() != 0 {
		t.Fatal("Exec did not empty the pipeline")
	}
	if res, err := p.Exec(ctx); res != nil || err != nil {
		t.Fatalf("empty Exec = %v, %v", res, err)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("accepted %d connections", n)
	}
}

func TestPipelineServerErrors(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	p := c.Pipeline()
	p.Put([]byte("k"), []byte("v"))
	p.Do([]byte("NOPE"))
	p.Do([]byte("ALSO_NOPE"))
	p.Get([]byte("k"))
	res, err := p.Exec(context.Background())
	se, ok := errorsAs[*ServerError](err)
	if !ok || se.Msg != "unknown command 'NOPE'" {
		t.Fatalf("Exec err = %v, want the first ServerError", err)
	}
	if res[0].Err != nil || string(res[3].Value) != "v" {
		t.Fatalf("results around the errors: %+v", res)
	}
	if _, ok := errorsAs[*ServerError](res[2].Err); !ok {
		t.Fatalf("result 2 err = %v", res[2].Err)
	}
	if n := s.accepted.Load(); n != 1 {
		t.Errorf("server errors discarded the connection (%d accepted)", n)
	}
}

// A pipeline far larger than the socket buffers in both directions: the
// fake server answers each request with its own blocking write, so unless
// the client reads replies while it is still writing requests, both sides
// block on full buffers until the timeout.
// TestPipelineEmptyDo: a Do without a command sends nothing, and the
// replies of the requests around it stay theirs.
func TestPipelineEmptyDo(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{PoolSize: 1})
	ctx := context.Background()
	if err := c.Put(ctx, []byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	p := c.Pipeline()
	p.Do([]byte(""), []byte("x"))
	p.Get([]byte("a"))
	p.Do()
	p.Get([]byte("b"))
	res, _ := p.Exec(ctx)
	if len(res) != 4 || res[0].Err == nil || res[2].Err == nil {
		t.Fatalf("empty Do results: %+v", res)
	}
	if string(res[1].Value) != "1" || res[1].Err != nil {
		t.Fatalf("GET a: %q %v", res[1].Value, res[1].Err)
	}
	if !errors.Is(res[3].Err, ErrNotFound) {
		t.Fatalf("GET b: %q %v, want not found", res[3].Value, res[3].Err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLongPipeline(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	ctx := context.Background()
	value := bytes.Repeat([]byte("v"), 64<<10)
	if err := c.Put(ctx, []byte("big"), value); err != nil {
		t.Fatal(err)
	}
	const n = 250 // 16 MiB each way
	p := c.Pipeline()
	for i := range n {
		p.Put([]byte(fmt.Sprintf("key%05d", i)), value)
		p.Get([]byte("big"))
	}
	res, err := p.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 2*n; i += 2 {
		if !bytes.Equal(res[i].Value, value) {
			t.Fatalf("result %d: %d bytes, %v", i, len(res[i].Value), res[i].Err)
		}
	}
}

func TestPipelineMalformedReply(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	p := c.Pipeline()
	p.Put([]byte("k"), []byte("v"))
	// A Get whose reply has the wrong shape: queue BADREPLY as if a GET.
	p.buf = appendRequest(p.buf, "BADREPLY")
	p.ops = append(p.ops, pipeOp{kind: opGet, cmd: "GET"})
	p.Get([]byte("k"))
	_, err := p.Exec(context.Background())
	if _, ok := errorsAs[*ReplyError](err); !ok {
		t.Fatalf("Exec err = %v, want *ReplyError", err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := s.accepted.Load(); n != 2 {
		t.Errorf("accepted %d, want 2 (the out-of-step connection discarded)", n)
	}
}

func TestPipelineHangUp(t *testing.T) {
	s := newFakeServer(t, "")
	c := dialT(t, s, Options{})
	p := c.Pipeline()
	p.Put([]byte("k"), []byte("v"))
	p.Do([]byte("HANGUP"))
	p.Get([]byte("k"))
	res, err := p.Exec(context.Background())
	if err == nil || res != nil || !strings.Contains(err.Error(), "pipeline of 3") {
		t.Fatalf("Exec = %v, %v; want a connection error and no results", res, err)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkGet(b *testing.B) {
	s := newFakeServer(b, "")
	c, err := Dial(s.addr(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	c.Put(ctx, []byte("key"), []byte("value"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(ctx, []byte("key")); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPipelinePut100(b *testing.B) {
	s := newFakeServer(b, "")
	c, err := Dial(s.addr(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	p := c.Pipeline()
	b.ReportAllocs()
	for b.Loop() {
		for range 100 {
			p.Put([]byte("key"), []byte("value"))
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
