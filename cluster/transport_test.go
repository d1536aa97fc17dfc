package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// startTransport starts a transport on a free loopback port that hands
// what it receives to the channels.
func startTransport(t *testing.T, batches chan<- pb.MessageBatch, chunks chan<- pb.Chunk, accept func(pb.Chunk) bool) (raftio.ITransport, string) {
	t.Helper()
	return startTransportWith(t, transportFactory{log: slog.New(slog.DiscardHandler)}, batches, chunks, accept)
}

// startTransportWith is startTransport with the factory f.
func startTransportWith(t *testing.T, f transportFactory, batches chan<- pb.MessageBatch, chunks chan<- pb.Chunk, accept func(pb.Chunk) bool) (raftio.ITransport, string) {
	t.Helper()
	addr := freeAddrs(t, 1)[0]
	if !f.Validate(addr) {
		t.Fatalf("Validate(%q) = false", addr)
	}
	tr := f.Create(config.NodeHostConfig{RaftAddress: addr},
		func(mb pb.MessageBatch) { batches <- mb },
		func(c pb.Chunk) bool { chunks <- c; return accept(c) })
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, addr
}

// sendFrom sends one batch for shard to addr from a transport f makes,
// over a connection of its own.
func sendFrom(t *testing.T, f transportFactory, addr string, shard uint64) error {
	t.Helper()
	tr, _ := startTransportWith(t, f, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	conn, err := tr.GetConnection(context.Background(), addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.SendMessageBatch(pb.MessageBatch{Requests: []pb.Message{{ShardID: shard}}})
}

// dialAndSend opens a message connection from tr to addr and sends one
// batch for shard on it; the test closes the connection when it ends.
func dialAndSend(t *testing.T, tr raftio.ITransport, addr string, shard uint64) raftio.IConnection {
	t.Helper()
	conn, err := tr.GetConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if err := conn.SendMessageBatch(pb.MessageBatch{Requests: []pb.Message{{ShardID: shard}}}); err != nil {
		t.Fatal(err)
	}
	return conn
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received in 5 s")
		panic("unreachable")
	}
}

func TestTransportDeliversBatchesAndChunksInOrder(t *testing.T) {
	batches, chunks := make(chan pb.MessageBatch, 100), make(chan pb.Chunk, 100)
	_, addr := startTransport(t, batches, chunks, func(pb.Chunk) bool { return true })
	sender, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })

	conn, err := sender.GetConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := bytes.Repeat([]byte("x"), 300<<10) // over the reader's buffer
	for i := range 50 {
		mb := pb.MessageBatch{SourceAddress: "n1", DeploymentId: 7, Requests: []pb.Message{{
			Type: pb.Replicate, ShardID: uint64(i%8 + 1), From: 1, To: 2, Term: 3, LogIndex: uint64(i),
			Entries: []pb.Entry{{Index: uint64(i + 1), Term: 3, Cmd: []byte{byte(i)}}},
		}}}
		if i == 25 {
			mb.Requests[0].Entries[0].Cmd = big
		}
		if err := conn.SendMessageBatch(mb); err != nil {
			t.Fatal(err)
		}
	}
	// Batches queued while the link writes leave merged in one frame: the
	// receiver gets their messages in order, in fewer batches.
	var got []pb.Message
	for len(got) < 50 {
		mb := recv(t, batches)
		if mb.SourceAddress != "n1" || mb.DeploymentId != 7 || len(mb.Requests) == 0 {
			t.Fatalf("batch after %d messages: source %q, deployment %d, %d messages", len(got), mb.SourceAddress, mb.DeploymentId, len(mb.Requests))
		}
		got = append(got, mb.Requests...)
	}
	for i, m := range got {
		want := []byte{byte(i)}
		if i == 25 {
			want = big
		}
		if m.LogIndex != uint64(i) || len(m.Entries) != 1 || !bytes.Equal(m.Entries[0].Cmd, want) {
			t.Fatalf("message %d: log index %d, %d entries (want index %d, one entry of %d bytes)", i, m.LogIndex, len(m.Entries), i, len(want))
		}
	}
	if len(got) != 50 {
		t.Fatalf("%d messages received, want 50", len(got))
	}

	sc, err := sender.GetSnapshotConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := sc.SendChunk(pb.Chunk{ShardID: 1, ReplicaID: 2, ChunkId: uint64(i), ChunkCount: 3, Data: bytes.Repeat([]byte{byte(i)}, 1<<20)}); err != nil {
			t.Fatal(err)
		}
	}
	// Close returns once the receiver has handled every chunk.
	sc.Close()
	if len(chunks) != 3 {
		t.Fatalf("%d chunks handled when the snapshot connection closed, want 3", len(chunks))
	}
	for i := range 3 {
		c := <-chunks
		if c.ChunkId != uint64(i) || len(c.Data) != 1<<20 || c.Data[0] != byte(i) {
			t.Fatalf("chunk %d: id %d, %d bytes", i, c.ChunkId, len(c.Data))
		}
	}
}

// A frame that does not check closes the connection; the transport keeps
// serving others.
func TestTransportClosesConnectionOnBadFrame(t *testing.T) {
	batches := make(chan pb.MessageBatch, 10)
	_, addr := startTransport(t, batches, make(chan pb.Chunk, 10), func(pb.Chunk) bool { return true })
	for _, frame := range [][]byte{
		append(appendFrameHeader(nil, frameBatch, []byte("abc")), 'x', 'y', 'z'),         // checksum of other bytes
		appendFrameHeader(nil, 99, nil),                                                  // unknown kind
		{frameBatch, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0},                                 // impossible length
		append(appendFrameHeader(nil, frameBatch, []byte{0xff}), 0xff),                   // not a message batch
		append(appendFrameHeader(nil, frameChunk, []byte{0x0a, 0x05, 1}), 0x0a, 0x05, 1), // truncated chunk
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("frame %x: read after it: %v, want EOF (closed)", frame, err)
		}
		c.Close()
	}
	if len(batches) != 0 {
		t.Fatalf("%d batches delivered from bad frames", len(batches))
	}
	good, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	conn, err := good.GetConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SendMessageBatch(pb.MessageBatch{SourceAddress: "ok"}); err != nil {
		t.Fatal(err)
	}
	if mb := recv(t, batches); mb.SourceAddress != "ok" {
		t.Fatalf("after bad frames: %+v", mb)
	}
}

// A rejected chunk ends the stream: the sender's later chunks fail.
func TestTransportRejectedChunkClosesStream(t *testing.T) {
	chunks := make(chan pb.Chunk, 100)
	_, addr := startTransport(t, make(chan pb.MessageBatch), chunks, func(pb.Chunk) bool { return false })
	sender, _ := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	sc, err := sender.GetSnapshotConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.SendChunk(pb.Chunk{ShardID: 1, Data: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	recv(t, chunks)
	deadline := time.Now().Add(5 * time.Second)
	for sc.SendChunk(pb.Chunk{ShardID: 1, Data: bytes.Repeat([]byte("y"), 64<<10)}) == nil {
		if time.Now().After(deadline) {
			t.Fatal("chunks still accepted 5 s after a rejection")
		}
		time.Sleep(time.Millisecond)
	}
}

// Close stops the listener and every served connection.
func TestTransportCloseEndsConnections(t *testing.T) {
	tr, addr := startTransport(t, make(chan pb.MessageBatch, 1), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- tr.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("served connection after Close: %v, want EOF", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting after Close")
	}
}

// readFrame never panics and never returns a payload whose checksum does
// not match.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrameHeader(nil, frameBatch, nil))
	f.Add(append(appendFrameHeader(nil, frameChunk, []byte("data")), "data"...))
	f.Add([]byte{frameBatch, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	f.Add([]byte{frameClose})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		var buf []byte
		for {
			kind, payload, err := readFrame(r, buf)
			if err != nil {
				return
			}
			if want := appendFrameHeader(nil, kind, payload); !bytes.Contains(in, want) {
				t.Fatalf("frame %d with %d-byte payload: its header %x is not in the input", kind, len(payload), want)
			}
			buf = payload[:0]
		}
	})
}

// TestProbeMember: a member is up when its transport answers the probe,
// down when nothing listens or when its port accepts but nobody answers
// (a stopped or hung process: the kernel completes the handshake).
func TestProbeMember(t *testing.T) {
	_, addr := startTransport(t, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	if !probeMember(nil, addr) {
		t.Fatal("a serving transport is reported down")
	}
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // accepts in the kernel, never answers
	if probeMember(nil, silent.Addr().String()) {
		t.Fatal("a port that accepts but never answers is reported up")
	}
	closed := silent.Addr().String()
	silent.Close()
	if probeMember(nil, closed) {
		t.Fatal("a closed port is reported up")
	}
}

// TestProbeUnansweredWhenEngineSilent: a node whose raft engine has sent
// nothing for engineStale (stuck: its log writer blocked on a full disk,
// say) stops answering liveness probes, so its peers count it down; it
// answers again once it sends. A snapshot stream's close is answered
// regardless.
func TestProbeUnansweredWhenEngineSilent(t *testing.T) {
	chunks := make(chan pb.Chunk, 1)
	tr, addr := startTransport(t, make(chan pb.MessageBatch), chunks, func(pb.Chunk) bool { return true })
	tt := tr.(*tcpTransport)
	tt.stale = 100 * time.Millisecond
	if !probeMember(nil, addr) {
		t.Fatal("a transport that just started is reported down")
	}
	time.Sleep(150 * time.Millisecond)
	if probeMember(nil, addr) {
		t.Fatal("a node whose engine sent nothing for longer than the staleness bound is reported up")
	}
	// A snapshot stream still completes: its close is not a probe.
	ch := pb.Chunk{ShardID: 1, ReplicaID: 2}
	payload, err := ch.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(5 * time.Second))
	stream := append(appendFrameHeader(nil, frameChunk, payload), payload...)
	if _, err := sc.Write(appendFrameHeader(stream, frameClose, nil)); err != nil {
		t.Fatal(err)
	}
	recv(t, chunks)
	var ack [frameHeaderLen]byte
	if _, err := io.ReadFull(sc, ack[:]); err != nil || ack[0] != frameClosed {
		t.Fatalf("snapshot stream's close: %v %v, want frameClosed", ack[0], err)
	}
	// Sending a batch anywhere is progress.
	_, peerAddr := startTransport(t, make(chan pb.MessageBatch, 1), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	dialAndSend(t, tr, peerAddr, 1)
	if !probeMember(nil, addr) {
		t.Fatal("a node that just sent a batch is reported down")
	}
}

// TestSecretAuthenticatesConnections: with cluster.secret set, a node reads
// raft traffic only from connections that answered its challenge with the
// secret: a peer with the same secret gets its batches through, one with
// another secret, one with none and a raw connection do not (their
// connections are closed), a liveness probe is still answered, and a frame
// claiming a huge payload before the answer closes the connection.
func TestSecretAuthenticatesConnections(t *testing.T) {
	factory := func(secret string) transportFactory {
		return transportFactory{log: slog.New(slog.DiscardHandler), secret: []byte(secret)}
	}
	batches := make(chan pb.MessageBatch, 4)
	_, addr := startTransportWith(t, factory("s3cret"), batches, make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	send := func(secret string) error { return sendFrom(t, factory(secret), addr, 7) }
	if err := send("s3cret"); err != nil {
		t.Fatal(err)
	}
	if mb := recv(t, batches); len(mb.Requests) != 1 || mb.Requests[0].ShardID != 7 {
		t.Fatalf("batch from a peer with the secret: %+v", mb)
	}
	for _, secret := range []string{"wrong", ""} {
		send(secret) // may fail or not: the acceptor closes the connection
		select {
		case mb := <-batches:
			t.Fatalf("batch from a peer with secret %q delivered: %+v", secret, mb)
		case <-time.After(200 * time.Millisecond):
		}
	}
	// A raw connection that sends a batch, and one that claims a huge
	// frame, instead of answering: closed, nothing delivered.
	payload, err := (&pb.MessageBatch{Requests: []pb.Message{{ShardID: 8}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	huge := appendFrameHeader(nil, frameAuth, nil)
	binary.LittleEndian.PutUint32(huge[1:5], 60<<20)
	for _, frame := range [][]byte{append(appendFrameHeader(nil, frameBatch, payload), payload...), huge} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(frame)
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("unauthenticated connection not closed: %v", err)
		}
		c.Close()
	}
	select {
	case mb := <-batches:
		t.Fatalf("batch from an unauthenticated connection delivered: %+v", mb)
	case <-time.After(100 * time.Millisecond):
	}
	if !probeMember(nil, addr) {
		t.Fatal("a node with a secret does not answer liveness probes")
	}
}

// TestTransportRedialsPeerThatRestarted: a message connection whose peer
// stopped and started again on the same address (a node restarted while
// the connection carried nothing) delivers the next batches to the new
// peer, authenticated with the secret, instead of failing (broken pipe)
// after losing the first: dragonboat keeps such idle connections, and a
// failed send trips its circuit breaker for the whole peer.
func TestTransportRedialsPeerThatRestarted(t *testing.T) {
	f := transportFactory{log: slog.New(slog.DiscardHandler), secret: []byte("s3cret")}
	before := make(chan pb.MessageBatch, 1)
	peer, addr := startTransportWith(t, f, before, make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	sender, _ := startTransportWith(t, f, make(chan pb.MessageBatch), make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	conn, err := sender.GetConnection(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	batch := func(i int) pb.MessageBatch {
		return pb.MessageBatch{Requests: []pb.Message{{Type: pb.Heartbeat, ShardID: 1, From: 1, To: 2, Commit: uint64(i)}}}
	}
	if err := conn.SendMessageBatch(batch(0)); err != nil {
		t.Fatal(err)
	}
	recv(t, before)

	// The peer stops (its accepted connections close) and starts again.
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
	after := make(chan pb.MessageBatch, 100)
	restarted := f.Create(config.NodeHostConfig{RaftAddress: addr},
		func(mb pb.MessageBatch) { after <- mb }, func(pb.Chunk) bool { return true })
	if err := restarted.Start(); err != nil {
		t.Fatal(err)
	}
	defer restarted.Close()

	// Every send succeeds, and the restarted peer gets the batches (the
	// first may be written before the sender saw the old connection end,
	// and be lost with it, as a message sent while a peer restarts is).
	for i := 1; ; i++ {
		if err := conn.SendMessageBatch(batch(i)); err != nil {
			t.Fatalf("send %d after the peer restarted: %v", i, err)
		}
		select {
		case mb := <-after:
			if len(mb.Requests) == 0 || mb.Requests[0].Commit == 0 {
				t.Fatalf("restarted peer got %+v", mb.Requests)
			}
			return
		case <-time.After(10 * time.Millisecond):
		}
		if i == 500 {
			t.Fatal("the restarted peer got none of 500 batches")
		}
	}
}
