package cluster

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/kvstore/kv/internal/ratelog"
)

// Raft transport: the TCP links between NodeHosts, below dragonboat's own
// send queues and batching. Each message batch or snapshot chunk is one
// frame,
//
//	kind (u8) | payload length (u32 LE) | CRC-32C of the payload (u32 LE) | payload
//
// written with one write(2) and read through a buffered reader. Dragonboat's
// built-in TCP transport writes a batch as three writes (magic number,
// header, payload), each its own segment with TCP_NODELAY, and reads it as
// three reads. The transport was over half of an idle node's CPU; framing
// it this way took 13% off that, and raised puts/s under load by 9-23%
// (docs/benchmarks.md, session 4).
//
// Invariants:
//   - A payload reaches dragonboat only after its CRC checked; a frame that
//     does not check, or has an unknown kind or an impossible length, closes
//     the connection (dragonboat reconnects and resends what raft needs).
//   - Frames on one connection are delivered in the order they were written.
//   - A snapshot connection's Close waits (bounded) until the receiver has
//     handled every chunk sent before it, as dragonboat's transport does.
//   - A message from a replica this node knows removed from its shard, in
//     a batch of this node's own raft deployment, is answered on the same
//     connection with a frameRemoved notice naming the deployment (at most
//     one a second per shard and connection); a dialed connection reads
//     those notices and passes on the ones of its own deployment
//     (removals.heard). Raft itself never tells a node removed while it
//     was down: it campaigns in vain, and the notice is how it learns, as
//     etcd's peers answer a removed member. Node and shard ids repeat from
//     cluster to cluster, so a notice of another deployment (a raft address
//     reused by another cluster) must never count. Builds without notices
//     neither send nor read them; a notice that cannot be written at once
//     closes the connection rather than hold up the raft messages behind it.
//   - A message connection whose peer closed it (the peer stopped or
//     restarted) is dialed again by its next send, which then goes out on
//     the new connection. Dragonboat keeps a connection per target and
//     group of shards (StreamConnections) and reads nothing from it, so
//     one that carried nothing while the peer restarted would otherwise be
//     found dead only by a send, maybe seconds later: that send fails, the
//     message is lost, and dragonboat's circuit breaker for the address
//     trips at its first failure, dropping every message to the peer, on
//     every connection, for 0.25-0.75 s (longer after more failures). A
//     leader whose only live follower that is (a third node down) loses
//     its quorum: in a rolling restart, the leaders the third node handed
//     its shards to lost them again this way, one shard after another.
const (
	frameHeaderLen = 9
	frameBatch     = 1 // a pb.MessageBatch
	frameChunk     = 2 // a pb.Chunk
	frameClose     = 3 // end of a snapshot stream; answered by frameClosed
	frameClosed    = 4
	frameRemoved   = 5 // deployment, shard and replica id, 8 bytes each: that replica was removed

	// removedNoticeEvery spaces the notices sent on one connection for
	// one shard: a removed node's replica campaigns every election timeout.
	removedNoticeEvery = time.Second
	// removedNoticeWrite bounds the write of a notice: the peer may not
	// read them (an earlier build), and raft messages queue behind it.
	removedNoticeWrite = 100 * time.Millisecond
	removedNoticeLen   = 24

	// maxFramePayload bounds what a reader allocates for one frame: a
	// message batch is at most 64 MiB in dragonboat (MaxMessageBatchSize),
	// a chunk 2 MiB.
	maxFramePayload = 64<<20 + 1<<20

	transportDialTimeout  = 5 * time.Second
	transportWriteTimeout = 10 * time.Second
	transportKeepAlive    = 10 * time.Second
	// engineStale is how long a node may go without sending a raft
	// message before it stops answering liveness probes (engineLive).
	engineStale     = 3 * time.Second
	readBufferBytes = 64 << 10
)

var errBadFrame = errors.New("raft transport: bad frame")

// transportFactory makes the NodeHost use tcpTransport.
type transportFactory struct {
	log      *slog.Logger
	faults   *linkFaults   // nil outside tests
	removals *removals     // nil: no notices sent or heard
	stale    time.Duration // engineLive's bound; 0: engineStale
	secret   []byte        // cluster.secret: connections must prove it (raftauth.go)
	space    *spaceGuard   // answers probes with this node's free space; nil: no guard
	leaving  *atomic.Bool  // answers probes with "stopping" once set; nil: never
	tls      *peerTLS      // nil: plain TCP
	// resendWindow is the least time between two heartbeat answers of a
	// follower that reach raft, save those confirming reads (resendfilter.go);
	// 0: all do.
	resendWindow time.Duration
}

func (f transportFactory) Create(nh config.NodeHostConfig, handler raftio.MessageHandler, chunks raftio.ChunkHandler) raftio.ITransport {
	return &tcpTransport{
		addr:         nh.GetListenAddress(),
		handler:      handler,
		chunks:       chunks,
		log:          f.log,
		faults:       f.faults,
		removals:     f.removals,
		deployment:   nh.GetDeploymentID(),
		conns:        make(map[net.Conn]struct{}),
		links:        make(map[string]*link),
		stale:        f.stale,
		secret:       f.secret,
		space:        f.space,
		leaving:      f.leaving,
		tls:          f.tls,
		handshakeLog: ratelog.Limiter{Every: 10 * time.Second},
		resends:      newResendFilter(f.resendWindow),
	}
}

// removals is what the transport knows of removed replicas: those this
// node's memberships list as removed (set by the status refresh), and what
// to do with a peer's notice that a replica was removed (Cluster.noteRemoved).
type removals struct {
	known atomic.Pointer[map[shardReplica]struct{}]
	heard func(shard, replica uint64)
}

type shardReplica struct{ shard, replica uint64 }

// isRemoved reports whether the replica is known removed from the shard.
func (r *removals) isRemoved(shard, replica uint64) bool {
	if r == nil {
		return false
	}
	m := r.known.Load()
	if m == nil || len(*m) == 0 {
		return false
	}
	_, ok := (*m)[shardReplica{shard, replica}]
	return ok
}

// linkFaults lets a test cut this node's raft links: a dial to a cut
// target is refused and a send on an open connection to it fails, as on a
// broken network, so what the node sends there is lost and dragonboat
// reconnects once the link is healed. A node cut from a peer in one
// direction only still hears from it: an asymmetric partition. A nil
// *linkFaults cuts nothing.
type linkFaults struct {
	mu  sync.Mutex
	cut map[string]bool // raft address -> link from this node is cut
	// olderKind, if set, is the newest command kind this node's probe
	// answers claim: it poses as a member of an older version.
	olderKind atomic.Uint32
}

// answerKind is the newest command kind this node's probe answers claim.
func (l *linkFaults) answerKind() byte {
	if l != nil {
		if k := l.olderKind.Load(); k != 0 {
			return byte(k)
		}
	}
	return cmdMaxKind
}

var errLinkCut = errors.New("raft transport: link cut (test fault)")

// set cuts (or heals, with cut false) the links to the given raft addresses.
func (l *linkFaults) set(cut bool, targets ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut == nil {
		l.cut = make(map[string]bool)
	}
	for _, t := range targets {
		l.cut[t] = cut
	}
}

func (l *linkFaults) isCut(target string) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cut[target]
}

// Validate accepts host:port addresses.
func (transportFactory) Validate(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	return err == nil && host != "" && port != ""
}

type tcpTransport struct {
	addr     string
	handler  raftio.MessageHandler
	chunks   raftio.ChunkHandler
	log      *slog.Logger
	faults   *linkFaults
	removals *removals
	// deployment is the NodeHost's raft deployment id: dragonboat drops
	// batches of another, and so do removal notices.
	deployment uint64
	secret     []byte
	space      *spaceGuard // nil: probes are answered without a free-space report
	leaving    *atomic.Bool
	tls        *peerTLS // nil: plain TCP
	// handshakeLog bounds how often failed TLS handshakes are logged.
	handshakeLog ratelog.Limiter
	resends      *resendFilter

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{} // accepted, open
	links  map[string]*link      // by target: dialed message connections
	closed bool
	wg     sync.WaitGroup

	// started and lastSent (unix nanos: Start, the last message batch
	// sent) tell whether the raft engine makes progress (engineLive)
	// within stale (0: engineStale; longer with long heartbeat or
	// election timeouts).
	started  atomic.Int64
	lastSent atomic.Int64
	stale    time.Duration
}

// engineLive reports whether this node's raft engine sent a message
// batch within engineStale (or started since). Every member of a live
// cluster sends all the time (leaders heartbeats, followers their
// answers), so silence means the engine is stuck (its log writer blocked
// on a full disk, say), while the transport, on goroutines of its own,
// would still answer probes: peers counted a hung node as up.
func (t *tcpTransport) engineLive() bool {
	stale := t.stale
	if stale == 0 {
		stale = engineStale
	}
	last := max(t.started.Load(), t.lastSent.Load())
	return time.Since(time.Unix(0, last)) < stale
}

func (t *tcpTransport) Name() string { return "kv-tcp" }

func (t *tcpTransport) Start() error {
	ln, err := net.Listen("tcp", t.addr)
	if err != nil {
		return fmt.Errorf("raft transport: listen %s: %w", t.addr, err)
	}
	ln = t.tls.listen(ln)
	t.mu.Lock()
	t.ln = ln
	t.mu.Unlock()
	t.started.Store(time.Now().UnixNano())
	t.wg.Add(1)
	go t.accept(ln)
	return nil
}

func (t *tcpTransport) accept(ln net.Listener) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.log.Warn("raft transport: accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			closeConn(c)
			return
		}
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serve(c)
	}
}

// serve reads frames from one connection until it fails or closes.
func (t *tcpTransport) serve(c net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		closeConn(c)
	}()
	setKeepAlive(c)
	if err := serverHandshake(c, authTimeout); err != nil {
		// A member with a certificate of another CA retries several
		// times a second.
		if ok, suppressed := t.handshakeLog.Allow(time.Now()); ok {
			t.log.Warn("raft transport: TLS handshake failed", "remote", c.RemoteAddr(), "err", err, "more_not_logged", suppressed)
		}
		return
	}
	r := bufio.NewReaderSize(c, readBufferBytes)
	var buf []byte
	var noticed map[uint64]time.Time // by shard: the last removal notice sent
	var challenge []byte             // sent, and not answered yet (raftauth.go)
	if len(t.secret) > 0 {
		var err error
		if challenge, err = sendChallenge(c); err != nil {
			return
		}
		c.SetReadDeadline(time.Now().Add(authTimeout))
	}
	for first := true; ; first = false {
		max := uint32(maxFramePayload)
		if challenge != nil {
			max = authFrameMax
		}
		kind, payload, err := readFrameMax(r, buf, max)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				t.log.Debug("raft transport: connection ends", "remote", c.RemoteAddr(), "err", err)
			}
			return
		}
		if cap(payload) <= readBufferBytes {
			buf = payload[:0] // reuse small buffers; drop big ones
		}
		if challenge != nil && kind != frameClose {
			if kind != frameAuth || !hmac.Equal(payload, authMAC(t.secret, challenge)) {
				t.log.Warn("raft transport: connection refused: it did not answer the challenge with cluster.secret", "remote", c.RemoteAddr(), "frame", kind)
				return
			}
			challenge = nil
			c.SetReadDeadline(time.Time{})
			continue
		}
		switch kind {
		case frameBatch:
			var mb pb.MessageBatch
			if err := mb.Unmarshal(payload); err != nil {
				t.log.Warn("raft transport: bad message batch", "remote", c.RemoteAddr(), "err", err)
				return
			}
			var ok bool
			if noticed, ok = t.noticeRemoved(c, mb, noticed); !ok {
				return
			}
			t.resends.received(&mb, time.Now())
			t.handler(mb)
		case frameChunk:
			var ch pb.Chunk
			if err := ch.Unmarshal(payload); err != nil {
				t.log.Warn("raft transport: bad snapshot chunk", "remote", c.RemoteAddr(), "err", err)
				return
			}
			if !t.chunks(ch) {
				return // rejected: the sender sees the connection close
			}
		case frameClose:
			if first && !t.engineLive() {
				// A liveness probe (probeMember), not the end of a
				// snapshot stream: unanswered, it reports this node down.
				t.log.Debug("raft transport: probe unanswered: the raft engine sent nothing lately", "remote", c.RemoteAddr())
				return
			}
			// A probe's answer says what peers must know of this node
			// (probe.go); a snapshot stream's end gets none.
			var answer []byte
			if first {
				answer = localProbeAnswer(t.space, t.leaving != nil && t.leaving.Load(), t.faults.answerKind()).encode()
			}
			c.SetWriteDeadline(time.Now().Add(transportWriteTimeout))
			c.Write(append(appendFrameHeader(nil, frameClosed, answer), answer...))
			return
		default:
			t.log.Warn("raft transport: unknown frame", "remote", c.RemoteAddr(), "kind", kind)
			return
		}
	}
}

// noticeRemoved answers messages from replicas known removed with a
// frameRemoved notice each (rate-limited by shard in noticed, which it
// returns); ok false says a notice could not be written whole in time, and
// the connection must close (a partial frame would garble the stream).
func (t *tcpTransport) noticeRemoved(c net.Conn, mb pb.MessageBatch, noticed map[uint64]time.Time) (_ map[uint64]time.Time, ok bool) {
	if mb.DeploymentId != t.deployment {
		return noticed, true // dragonboat drops the batch
	}
	for _, m := range mb.Requests {
		if !t.removals.isRemoved(m.ShardID, m.From) {
			continue
		}
		now := time.Now()
		last, told := noticed[m.ShardID]
		if told && now.Sub(last) < removedNoticeEvery {
			continue
		}
		if noticed == nil {
			noticed = make(map[uint64]time.Time)
		}
		noticed[m.ShardID] = now
		var p [removedNoticeLen]byte
		binary.LittleEndian.PutUint64(p[0:], t.deployment)
		binary.LittleEndian.PutUint64(p[8:], m.ShardID)
		binary.LittleEndian.PutUint64(p[16:], m.From)
		c.SetWriteDeadline(now.Add(removedNoticeWrite))
		if _, err := c.Write(append(appendFrameHeader(nil, frameRemoved, p[:]), p[:]...)); err != nil {
			t.log.Debug("raft transport: removal notice not written; closing", "remote", c.RemoteAddr(), "err", err)
			return noticed, false
		}
		if !told {
			// Once per shard and connection: a removed node campaigns on.
			t.log.Info("raft transport: told a removed replica", "shard", m.ShardID, "replica", m.From, "remote", c.RemoteAddr())
		}
	}
	return noticed, true
}

// readNotices reads what the peer sends back on a dialed message
// connection, removal notices only, until the connection closes; anything
// else closes it. It closes ended when it returns: the connection can
// carry nothing more (the peer closed it, or it failed), and the next
// write dials again (link.writeFrame).
func (t *tcpTransport) readNotices(c net.Conn, ended chan<- struct{}) {
	defer close(ended)
	r := bufio.NewReaderSize(c, 64)
	for {
		kind, payload, err := readFrame(r, nil)
		if err != nil {
			return
		}
		if kind != frameRemoved || len(payload) != removedNoticeLen {
			t.log.Warn("raft transport: unexpected frame on a dialed connection", "remote", c.RemoteAddr(), "kind", kind)
			closeConn(c)
			return
		}
		if binary.LittleEndian.Uint64(payload[0:]) != t.deployment {
			continue // another cluster's: its ids are not ours
		}
		if t.removals != nil && t.removals.heard != nil {
			t.removals.heard(binary.LittleEndian.Uint64(payload[8:]), binary.LittleEndian.Uint64(payload[16:]))
		}
	}
}

// Close stops accepting and closes every accepted connection; connections
// this node dialed are closed by their owners (dragonboat).
func (t *tcpTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	ln := t.ln
	for c := range t.conns {
		closeConn(c)
	}
	t.mu.Unlock()
	var err error
	if ln != nil {
		err = ln.Close()
	}
	t.wg.Wait()
	return err
}

func (t *tcpTransport) dial(ctx context.Context, target string) (net.Conn, error) {
	if t.faults.isCut(target) {
		return nil, fmt.Errorf("raft transport: dial %s: %w", target, errLinkCut)
	}
	d := net.Dialer{Timeout: transportDialTimeout, KeepAlive: transportKeepAlive}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("raft transport: dial %s: %w", target, err)
	}
	if t.tls != nil {
		c.SetDeadline(time.Now().Add(transportDialTimeout))
		if c, err = t.tls.secure(ctx, c, target); err != nil {
			return nil, err
		}
		c.SetDeadline(time.Time{})
	}
	if len(t.secret) > 0 {
		if err := answerChallenge(c, t.secret); err != nil {
			closeConn(c)
			return nil, err
		}
	}
	return c, nil
}

func (t *tcpTransport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	c, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &frameConn{c: c, target: target, faults: t.faults}, nil
}

// frameConn is a dialed snapshot connection: one snapshot job is its only
// user, so it needs no lock.
type frameConn struct {
	c      net.Conn
	target string
	faults *linkFaults
	buf    []byte
}

func (f *frameConn) SendChunk(ch pb.Chunk) error {
	if f.faults.isCut(f.target) {
		return errLinkCut
	}
	size := ch.Size()
	if err := checkPayload(size); err != nil {
		return err
	}
	need := frameHeaderLen + size
	if cap(f.buf) < need {
		f.buf = make([]byte, need)
	}
	buf := f.buf[:need]
	n, err := ch.MarshalTo(buf[frameHeaderLen:])
	if err != nil {
		return fmt.Errorf("raft transport: marshal: %w", err)
	}
	appendFrameHeader(buf[:0], frameChunk, buf[frameHeaderLen:frameHeaderLen+n])
	if err := f.c.SetWriteDeadline(time.Now().Add(transportWriteTimeout)); err != nil {
		return err
	}
	_, err = f.c.Write(buf[:frameHeaderLen+n])
	return err
}

// Close ends the connection once the receiver confirmed (bounded wait) it
// handled every chunk.
func (f *frameConn) Close() {
	f.c.SetDeadline(time.Now().Add(transportWriteTimeout))
	if _, err := f.c.Write(appendFrameHeader(nil, frameClose, nil)); err == nil {
		var ack [frameHeaderLen]byte
		io.ReadFull(f.c, ack[:])
	}
	closeConn(f.c)
}

// checkPayload refuses a payload too large for a frame.
func checkPayload(size int) error {
	if size > maxFramePayload {
		return fmt.Errorf("raft transport: %d-byte payload over the %d-byte limit", size, maxFramePayload)
	}
	return nil
}

// appendFrameHeader appends the header of a frame carrying payload to dst.
func appendFrameHeader(dst []byte, kind byte, payload []byte) []byte {
	dst = append(dst, kind)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
}

// readFrame reads one frame; its payload is read into buf when it fits.
func readFrame(r io.Reader, buf []byte) (kind byte, payload []byte, err error) {
	return readFrameMax(r, buf, maxFramePayload)
}

// readFrameMax is readFrame for frames of at most max payload bytes.
func readFrameMax(r io.Reader, buf []byte, max uint32) (kind byte, payload []byte, err error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(h[1:5])
	if n > max {
		return 0, nil, fmt.Errorf("%w: %d-byte payload", errBadFrame, n)
	}
	if cap(buf) >= int(n) {
		payload = buf[:n]
	} else {
		payload = make([]byte, n)
	}
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(h[5:9]) {
		return 0, nil, fmt.Errorf("%w: checksum mismatch", errBadFrame)
	}
	return h[0], payload, nil
}

func setKeepAlive(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetKeepAlive(true)
		tc.SetKeepAlivePeriod(transportKeepAlive)
	}
}
