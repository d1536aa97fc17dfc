package cluster

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// Message links: every message connection dragonboat opens to one peer
// shares one TCP connection, and one writer goroutine sends what they
// queued, all of it in one frame.
//
// Dragonboat opens four connections to each peer (its StreamConnections
// soft setting, not configurable in code), each with its own sender
// goroutine, and the step worker hands each sender its shards' messages one
// at a time. A sender woke for the first message of a round and wrote it
// alone: a node wrote 4.8 frames per raft round to its peers, and each
// frame was a write(2) here and a read, an unmarshal and a step-worker
// wake-up at the peer. The same load with dragonboat's setting at one
// connection (its JSON override file, which only the working directory can
// hold) took 29 µs of node CPU per put instead of 41 and 37% more puts/s
// (docs/benchmarks.md, session 19). Sharing the connection gets that
// without the setting: while the writer is in write(2), the batches the
// senders queue pile up, and the next write carries them all.
//
// A frame of merged batches is a valid MessageBatch: protobuf decodes
// concatenated encodings as one message whose repeated field (Requests)
// holds all of theirs, and the other fields (source address, deployment,
// binary version) are the same in every batch of a node. So a receiver of
// any version reads them.
//
// Invariants:
//   - The batches a sender queues go out in its order, each whole in one
//     frame (a merged frame holds at most linkMergeBytes, or one batch).
//   - A failed dial, write or peer makes the link fail: its queued batches
//     are dropped (raft resends what it needs), every later send on it
//     returns the error, as dragonboat expects of a broken connection, and
//     the next GetConnection dials a new link.
//   - A link whose peer closed the connection (the peer restarted while the
//     link was idle) is dialed again by its writer before the next write.
//   - Queued bytes are bounded: a sender waits while a merged frame would
//     exceed linkMergeBytes, as it waited for write(2) before.
const (
	// linkMergeBytes bounds a frame of merged batches; a single larger
	// batch (up to dragonboat's 64 MiB) still goes alone.
	linkMergeBytes = 4 << 20
	// linkKeepBytes is the largest buffer a link keeps between writes.
	linkKeepBytes = 1 << 20
)

// link is the shared message connection to one peer.
type link struct {
	t      *tcpTransport
	target string
	ctx    context.Context // for dialing again; dragonboat's transport context

	mu      sync.Mutex
	room    sync.Cond // signalled when the writer took the queue, or the link failed
	queue   []byte    // a frame being built: header room, then batches
	spare   []byte
	refs    int   // msgConns open on it
	err     error // the link failed; sticky
	closing bool  // refs fell to zero

	wake chan struct{} // cap 1: something was queued
	done chan struct{} // closed when the last msgConn closed
	// owned by the writer
	c     net.Conn
	ended chan struct{} // closed by readNotices when c can carry nothing more
}

func newLink(t *tcpTransport, ctx context.Context, target string, c net.Conn) *link {
	l := &link{t: t, target: target, ctx: ctx, refs: 1, wake: make(chan struct{}, 1), done: make(chan struct{}), c: c, ended: make(chan struct{})}
	l.room.L = &l.mu
	go t.readNotices(c, l.ended)
	go l.write()
	return l
}

// acquire adds a msgConn to the link, unless it failed or is closing.
func (l *link) acquire() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || l.closing {
		return false
	}
	l.refs++
	return true
}

// send queues one batch.
func (l *link) send(mb *pb.MessageBatch) error {
	size := mb.Size()
	if err := checkPayload(size); err != nil {
		return err
	}
	l.mu.Lock()
	for l.err == nil && len(l.queue) > frameHeaderLen && len(l.queue)+size > frameHeaderLen+linkMergeBytes {
		l.room.Wait()
	}
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return err
	}
	if len(l.queue) == 0 {
		l.queue = append(l.queue, make([]byte, frameHeaderLen)...)
	}
	at := len(l.queue)
	l.queue = growLen(l.queue, size)
	n, err := mb.MarshalTo(l.queue[at:])
	if err != nil {
		l.queue = l.queue[:at]
		l.mu.Unlock()
		return fmt.Errorf("raft transport: marshal: %w", err)
	}
	l.queue = l.queue[:at+n]
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return nil
}

// growLen returns b extended by n bytes, reallocated when needed.
func growLen(b []byte, n int) []byte {
	if len(b)+n > cap(b) {
		nb := make([]byte, len(b), max(2*cap(b), len(b)+n))
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// write is the link's writer: it sends the queue, as one frame, each time
// something was queued, until the link fails or its last msgConn closes.
func (l *link) write() {
	defer func() { closeConn(l.c) }() // l.c changes when the writer dials again
	for {
		select {
		case <-l.wake:
		case <-l.done:
		}
		// The step worker hands a round's messages to dragonboat's
		// senders one after another; woken by the first, the writer
		// took it alone while the others were still being queued.
		// Letting them run first merges them into this frame: 2.18-2.23
		// loopback TCP segments per put instead of 2.35-2.37, and more
		// puts/s in 7 of 9 alternating pairs (docs/benchmarks.md,
		// session 21).
		runtime.Gosched()
		l.mu.Lock()
		buf, closing := l.queue, l.closing
		l.queue, l.spare = l.spare[:0], nil
		l.room.Broadcast()
		l.mu.Unlock()
		if len(buf) > frameHeaderLen {
			if err := l.writeFrame(buf); err != nil {
				l.fail(err)
				return
			}
		}
		if closing {
			return
		}
		if cap(buf) <= linkKeepBytes {
			l.mu.Lock()
			l.spare = buf[:0]
			l.mu.Unlock()
		}
	}
}

// writeFrame fills in the header of buf, a frame of queued batches, and
// writes it, on a new connection if the peer closed the last one.
func (l *link) writeFrame(buf []byte) error {
	appendFrameHeader(buf[:0], frameBatch, buf[frameHeaderLen:])
	select {
	case <-l.ended:
		closeConn(l.c)
		c, err := l.t.dial(l.ctx, l.target)
		if err != nil {
			return err
		}
		l.t.log.Debug("raft transport: the peer closed an idle connection; dialed it again", "target", l.target)
		l.c = c
		l.ended = make(chan struct{})
		go l.t.readNotices(c, l.ended)
	default:
	}
	if err := l.c.SetWriteDeadline(time.Now().Add(transportWriteTimeout)); err != nil {
		return err
	}
	_, err := l.c.Write(buf)
	return err
}

// fail makes the link unusable: queued batches are dropped, senders get
// err, and the transport forgets the link so that the next GetConnection
// dials afresh.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = fmt.Errorf("raft transport: link to %s: %w", l.target, err)
	}
	l.queue = nil
	l.room.Broadcast()
	l.mu.Unlock()
	l.t.forget(l)
}

// release ends one msgConn's use of the link; the last one stops the
// writer once it sent what is queued.
func (l *link) release() {
	l.t.mu.Lock()
	l.mu.Lock()
	l.refs--
	last := l.refs == 0
	if last {
		l.closing = true
		if l.err == nil {
			l.err = fmt.Errorf("raft transport: link to %s: %w", l.target, net.ErrClosed)
		}
		l.room.Broadcast()
	}
	l.mu.Unlock()
	if last && l.t.links[l.target] == l {
		delete(l.t.links, l.target)
	}
	l.t.mu.Unlock()
	if last {
		close(l.done)
	}
}

// msgConn is one of dragonboat's message connections to a peer: a share of
// the peer's link.
type msgConn struct {
	l      *link
	t      *tcpTransport
	closed bool
}

func (m *msgConn) SendMessageBatch(mb pb.MessageBatch) error {
	if m.t.faults.isCut(m.l.target) {
		return errLinkCut
	}
	if err := m.l.send(&mb); err != nil {
		return err
	}
	m.t.lastSent.Store(time.Now().UnixNano())
	m.t.resends.sent(&mb)
	return nil
}

func (m *msgConn) Close() {
	if !m.closed {
		m.closed = true
		m.l.release()
	}
}

// forget drops l from the links new connections share.
func (t *tcpTransport) forget(l *link) {
	t.mu.Lock()
	if t.links[l.target] == l {
		delete(t.links, l.target)
	}
	t.mu.Unlock()
}

func (t *tcpTransport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	t.mu.Lock()
	if l := t.links[target]; l != nil && l.acquire() {
		t.mu.Unlock()
		return &msgConn{l: l, t: t}, nil
	}
	t.mu.Unlock()
	c, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if l := t.links[target]; l != nil && l.acquire() {
		// Another sender dialed meanwhile: share its link.
		closeConn(c)
		return &msgConn{l: l, t: t}, nil
	}
	l := newLink(t, ctx, target, c)
	t.links[target] = l
	return &msgConn{l: l, t: t}, nil
}
