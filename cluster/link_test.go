package cluster

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Dragonboat's connections to one peer share one TCP connection; each
// keeps its order, and the peer's messages all arrive.
func TestLinkSharedByConnectionsToOnePeer(t *testing.T) {
	batches := make(chan pb.MessageBatch, 1000)
	peer, addr := startTransport(t, batches, make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	sender, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })

	const conns, each = 4, 200
	var wg sync.WaitGroup
	for c := range conns {
		conn, err := sender.GetConnection(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				mb := pb.MessageBatch{Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: uint64(c + 1), Commit: uint64(i)}}}
				if err := conn.SendMessageBatch(mb); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	next := make([]uint64, conns)
	frames := 0
	for received := 0; received < conns*each; frames++ {
		for _, m := range recv(t, batches).Requests {
			c := m.ShardID - 1
			if m.Commit != next[c] {
				t.Fatalf("connection %d: message %d arrived when %d was due", c, m.Commit, next[c])
			}
			next[c]++
			received++
		}
	}
	tp := peer.(*tcpTransport)
	tp.mu.Lock()
	accepted := len(tp.conns)
	tp.mu.Unlock()
	if accepted != 1 {
		t.Errorf("the peer serves %d connections, want 1", accepted)
	}
	t.Logf("%d batches arrived in %d frames", conns*each, frames)
}

// The last Close of a peer's connections ends the shared TCP connection;
// the next GetConnection dials a new one.
func TestLinkClosesWithItsLastConnection(t *testing.T) {
	batches := make(chan pb.MessageBatch, 10)
	peer, addr := startTransport(t, batches, make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	sender, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	served := func() int {
		tp := peer.(*tcpTransport)
		tp.mu.Lock()
		defer tp.mu.Unlock()
		return len(tp.conns)
	}
	waitServed := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); served() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the peer serves %d connections, want %d", served(), want)
			}
		}
	}
	a, err := sender.GetConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sender.GetConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	waitServed(1)
	a.Close()
	a.Close() // a second Close of the same connection changes nothing
	if err := b.SendMessageBatch(pb.MessageBatch{Requests: []pb.Message{{ShardID: 1}}}); err != nil {
		t.Fatalf("send on the link's other connection: %v", err)
	}
	recv(t, batches)
	b.Close()
	waitServed(0)
	dialAndSend(t, sender, addr, 2)
	if mb := recv(t, batches); mb.Requests[0].ShardID != 2 {
		t.Fatalf("got %+v", mb.Requests)
	}
}

// A link whose peer went away for good fails: sends return an error (so
// dragonboat counts the peer unreachable) instead of queueing for ever.
func TestLinkFailsWhenPeerIsGone(t *testing.T) {
	peer, addr := startTransport(t, make(chan pb.MessageBatch, 100), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	sender, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	conn := dialAndSend(t, sender, addr, 1)
	peer.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := conn.SendMessageBatch(pb.MessageBatch{Requests: []pb.Message{{ShardID: 1}}})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sends to a peer that is gone still succeed after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := sender.GetConnection(context.Background(), addr); err == nil {
		t.Fatal("GetConnection to a peer that is gone succeeded")
	}
}

// A peer that reads nothing holds up its senders once a frame's worth is
// queued: what waits in memory stays bounded. When the connection fails,
// the blocked sender gets the error.
func TestLinkQueueBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	sender, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	conn, err := sender.GetConnection(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stuck := recv(t, accepted)
	payload := make([]byte, 256<<10)
	sent := make(chan error, 1)
	go func() {
		for {
			mb := pb.MessageBatch{Requests: []pb.Message{{ShardID: 1, Entries: []pb.Entry{{Cmd: payload}}}}}
			if err := conn.SendMessageBatch(mb); err != nil {
				sent <- err
				return
			}
		}
	}()
	l := conn.(*msgConn).l
	for range 20 {
		time.Sleep(20 * time.Millisecond)
		l.mu.Lock()
		queued := len(l.queue)
		l.mu.Unlock()
		if queued > frameHeaderLen+linkMergeBytes {
			t.Fatalf("%d bytes queued for a peer that reads nothing, over the %d-byte bound", queued, linkMergeBytes)
		}
	}
	select {
	case err := <-sent:
		t.Fatalf("send failed while the peer was merely slow: %v", err)
	default:
	}
	stuck.(*net.TCPConn).SetLinger(0)
	stuck.Close() // a reset: the link's write fails
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("a sender blocked on a full queue did not return when the connection failed")
	}
}
