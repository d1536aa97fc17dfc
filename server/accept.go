package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/kvstore/kv/internal/ratelog"
)

// Accepting connections. gnet's own acceptor (v2.9.7) treats every accept
// error but EAGAIN, EINTR, ECONNRESET and ECONNABORTED as fatal and stops
// the whole engine: one EMFILE in a connect flood, or with the open-file
// limit reached for any other reason, made kvserver exit. It also accepts
// until the listen queue is empty before any loop gets to refuse a
// connection over max_connections, so refused connections held
// descriptors by the hundred during a flood. The server therefore accepts
// on its own listener, in one goroutine: a connection over
// max_connections is refused there, before it costs a loop anything; an
// accept error waits and retries (the connection stays queued), as
// net/http's server does; and only accepted connections are handed to the
// event loops, which gnet runs as a listener-less engine (gnet.Client,
// whose Enroll takes a net.Conn), several at a time (maxEnrolling).
//
// Out of descriptors (EMFILE, ENFILE), waiting alone left new clients
// hanging: the kernel completes their handshake, so they connect, and then
// never hear anything, which a client cannot tell from a dead server. The
// accept loop keeps one descriptor in reserve (on /dev/null), as libuv and
// nginx do: when accepting fails for want of one, it closes the reserve,
// accepts a queued connection with it, writes the max_connections refusal
// line, closes the connection and takes the reserve back.

// Accept retry delays after an error (EMFILE, ENFILE, ENOBUFS, ...).
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// acceptLogEvery bounds how often a failing accept is logged.
const acceptLogEvery = 10 * time.Second

// The lines that refuse a connection, in the pipe protocol's form; a
// client that speaks RESP gets respRefusal's form instead.
const (
	refusedFull     = "ERROR|max number of clients reached\n"
	refusedDraining = "ERROR|server is shutting down\n"
)

// A refused connection's protocol is known only from its first byte.
// Clients send their first command as soon as they connect, so the accept
// loop hands up to MaxRefusing refused connections at a time to a
// goroutine that waits up to refusalWait for it and answers in the
// client's protocol (a Redis client cannot read the pipe line: redis-cli
// printed "Protocol error, got "E" as reply type byte"). Beyond that many,
// or for a client that sends nothing, the pipe line goes at once or after
// the wait.
const (
	// MaxRefusing is the most refused connections held at once while
	// their protocol is found (cmd/kvserver counts their descriptors).
	MaxRefusing = 16
	refusalWait = 100 * time.Millisecond
	// refusalLinger bounds the wait for the client's close once the
	// refusal is sent and the write side shut: closing with its command
	// unread would send a reset, which can discard the refusal before the
	// client reads it.
	refusalLinger = 200 * time.Millisecond
)

// respRefusal is the RESP form of a refusal line.
func respRefusal(line string) string {
	return "-ERR " + strings.TrimSuffix(strings.TrimPrefix(line, "ERROR|"), "\n") + "\r\n"
}

// maxEnrolling bounds the connections being handed to the loops at once.
// Enroll returns only once the chosen loop has run OnOpen, so one at a time
// made every accept wait for a busy loop (1000 connects under load took
// 240-717 ms, against 106-251 ms with gnet's acceptor), and a loop stuck in
// a long callback stopped all accepting.
const maxEnrolling = 64

// acceptLoop accepts connections on ln until it is closed and hands them
// to the event loops of cli.
//
// With tlsCfg set, ln is the TLS port: each connection does its handshake
// on a goroutine of its own (enrollTLS), counted as being handed over
// until it is, so that max_connections bounds handshakes too. wg counts
// the handovers; the caller waits for it.
func (s *Server) acceptLoop(ln net.Listener, tlsCfg *tls.Config, cli *gnet.Client, wg *sync.WaitGroup) {
	slots := make(chan struct{}, maxEnrolling)
	refusing := make(chan struct{}, MaxRefusing)
	failures := &ratelog.Limiter{Every: tlsLogEvery}
	rs := newReserve(ln, &s.fdMu, s.log)
	defer rs.close()
	var delay time.Duration
	var lastLog time.Time
	var refused int64 // for want of descriptors, since the last log
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			short := outOfDescriptors(err)
			if short && rs.refuseOne(s.refusalLine(), &s.rejected) {
				// The next Accept tells whether descriptors are still
				// short and another connection is queued: refuse until
				// either is no longer true, with no wait meanwhile.
				refused++
				delay = 0
				if time.Since(lastLog) > acceptLogEvery {
					lastLog = time.Now()
					s.log.Warn("out of file descriptors; refusing new connections", "err", err, "limit", openFileLimit(), "refused", refused)
					refused = 0
				}
				continue
			}
			delay = nextRetry(delay)
			if time.Since(lastLog) > acceptLogEvery {
				lastLog = time.Now()
				if short {
					s.log.Warn("out of file descriptors; retrying", "err", err, "limit", openFileLimit(), "refused", refused, "retry_in", delay)
					refused = 0
				} else {
					s.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
				}
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		if refused > 0 {
			s.log.Info("file descriptors available again; accepting", "refused", refused)
			refused = 0
		}
		if msg := s.refusal(); msg != "" {
			if tlsCfg != nil {
				c = tls.Server(c, tlsCfg)
			}
			select {
			case refusing <- struct{}{}:
				wg.Add(1)
				go func() {
					defer func() { <-refusing; wg.Done() }()
					refuse(c, msg, refusalWait)
				}()
			default:
				// Too many being refused: the pipe line now. The client
				// may be sending already; the line may then be lost to a
				// reset, as it is with Redis. A TLS client gets no line:
				// its handshake would hold up the accept loop.
				if tlsCfg != nil {
					c.Close()
				} else {
					refuse(c, msg, 0)
				}
			}
			continue
		}
		h := &handover{}
		s.enrolling.Add(1)
		if tlsCfg != nil {
			wg.Add(1)
			go func() {
				defer func() { s.leaveEnrolling(h); wg.Done() }()
				s.enrollTLS(c, tlsCfg, cli, slots, failures, h)
			}()
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; s.leaveEnrolling(h); wg.Done() }()
			s.enroll(c, cli, h)
		}()
	}
}

// refuse answers c with line, in RESP's form if the first byte c sends
// within wait is '*', and closes it. c may be a TLS connection: its
// handshake runs within the same deadlines.
func refuse(c net.Conn, line string, wait time.Duration) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(wait + 100*time.Millisecond))
	if wait > 0 {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		var b [1]byte
		if n, _ := c.Read(b[:]); n == 1 && b[0] == '*' {
			line = respRefusal(line)
		}
	}
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Write([]byte(line)); err != nil || wait == 0 {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		_ = c.SetReadDeadline(time.Now().Add(refusalLinger))
		_, _ = io.CopyN(io.Discard, c, 1<<20)
	}
}

// enroll hands c to an event loop, or closes it.
func (s *Server) enroll(c net.Conn, cli *gnet.Client, h *handover) {
	if err := s.handOver(c, cli, h); err != nil {
		s.log.Warn("could not hand a connection to the event loops", "remote", addrString(c.RemoteAddr()), "err", err)
	}
}

// handover travels with a connection being handed to a loop (gnet's
// Enroll context) to OnOpen.
type handover struct {
	peer *tlsPeer // the client behind a TLS bridge, or nil
	// left: the connection no longer counts in s.enrolling. OnOpen sets
	// it as the connection counts in s.conns instead, so the two are never
	// counted together (a client dialing right after another was refused
	// at exactly max_connections); the enrolling goroutine sets it if
	// OnOpen never ran.
	left atomic.Bool
}

// leaveEnrolling takes h's connection out of s.enrolling, once.
func (s *Server) leaveEnrolling(h *handover) {
	if h.left.CompareAndSwap(false, true) {
		s.enrolling.Add(-1)
	}
}

// handOver hands c to an event loop; c is closed either way, and it
// returns once the loop has run OnOpen. gnet's Enroll duplicates the
// descriptor and closes c whatever happens, so a duplicate that fails with
// EMFILE would drop a client the accept already took: a probe duplicate is
// taken first, and retried while descriptors are short (the client waits,
// as it does in the listen queue).
//
// From the probe until gnet's duplicate is made, the handover holds
// s.fdMu for reading: the reserve's refusals (refuseOne) free a
// descriptor for a moment, and a probe that succeeded then only to see
// gnet's duplicate fail once the reserve was back dropped the client with
// no reply.
func (s *Server) handOver(c net.Conn, cli *gnet.Client, h *handover) error {
	for delay := time.Duration(0); ; {
		s.fdMu.RLock()
		err := probeDup(c)
		if err == nil {
			break
		}
		s.fdMu.RUnlock()
		if s.draining.Load() || !outOfDescriptors(err) {
			_ = c.Close()
			return err
		}
		delay = nextRetry(delay)
		time.Sleep(delay)
	}
	// gnet duplicates c on a goroutine of its own: the result is the
	// first sign that it has. It comes once the loop has run OnOpen.
	defer s.fdMu.RUnlock()
	el := s.pickLoop()
	if el == nil {
		if handed, err := s.discover(c, cli, h); handed {
			return err
		}
		el = s.pickLoop()
	}
	ch, err := el.Enroll(gnet.NewContext(context.Background(), h), c)
	if err != nil {
		return err
	}
	return (<-ch).Err
}

// discover hands c to the loop gnet picks, the one with the fewest opened
// connections, while some loop has had none (pickLoop): one at a time, so
// that each counts before the next is placed (50 connections arriving at
// once all went to the first loop). It reports false, having done
// nothing, once every loop has been seen.
func (s *Server) discover(c net.Conn, cli *gnet.Client, h *handover) (handed bool, err error) {
	s.discoverMu.Lock()
	defer s.discoverMu.Unlock()
	if s.loopsSeen() {
		return false, nil
	}
	_, err = cli.EnrollContext(c, h)
	return true, err
}

// nextRetry is the wait after one more failed attempt, from the last.
func nextRetry(last time.Duration) time.Duration {
	return min(max(2*last, acceptRetryMin), acceptRetryMax)
}

// probeDup checks that c's descriptor can be duplicated now.
func probeDup(c net.Conn) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var derr error
	if err := rc.Control(func(fd uintptr) {
		var d int
		if d, derr = unix.Dup(int(fd)); derr == nil {
			unix.Close(d)
		}
	}); err != nil {
		return err
	}
	return derr
}

// refusal is the line a new connection gets instead of service, or "".
// OnOpen checks max_connections again, exactly: connections being
// handed over are counted here, but not yet in conns.
func (s *Server) refusal() string {
	if s.draining.Load() {
		return refusedDraining
	}
	if max := int64(s.cfg.MaxConnections); max > 0 && s.conns.Load()+s.enrolling.Load() >= max {
		s.rejected.Add(1)
		return refusedFull
	}
	return ""
}

// refusalLine is the line for a connection refused for want of
// descriptors: a full server's, unless it is shutting down.
func (s *Server) refusalLine() string {
	if s.draining.Load() {
		return refusedDraining
	}
	return refusedFull
}

// outOfDescriptors reports whether err is the process's (EMFILE) or the
// system's (ENFILE) open-file limit.
func outOfDescriptors(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
}

// openFileLimit is the process's soft RLIMIT_NOFILE, or 0 if unknown.
func openFileLimit() uint64 {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}

// reserve is a descriptor kept open so that a connection can still be
// accepted, to be refused, when the process has no other descriptor left.
// Only the accept loop uses it.
type reserve struct {
	ln syscall.RawConn // the listener's descriptor; nil: no reserve
	fd int             // the reserve, or -1 while it could not be opened
	// mu is held for writing while the reserve is closed, so that no
	// handover sees the descriptor freed meanwhile (Server.handOver).
	mu *sync.RWMutex
}

func newReserve(ln net.Listener, mu *sync.RWMutex, log *slog.Logger) *reserve {
	r := &reserve{fd: -1, mu: mu}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return r // not a socket listener (tests): nothing to accept with
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return r
	}
	r.ln = rc
	if r.fd = openReserve(); r.fd < 0 {
		log.Warn("cannot keep a descriptor in reserve; out of descriptors, new connections will wait unanswered until some are free", "path", os.DevNull)
	}
	return r
}

// openReserve opens the reserve descriptor, or returns -1.
func openReserve() int {
	fd, err := unix.Open(os.DevNull, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
}

// refuseOne frees the reserve, accepts one queued connection with it,
// counts it in rejected, writes line to it and closes it, then takes the
// reserve back. It reports whether it refused a connection: false when
// none was queued, the reserve is missing (it is then reopened, if a
// descriptor is free, for the next time), or a handover is between its
// probe and gnet's duplicate (the caller waits and tries again).
func (r *reserve) refuseOne(line string, rejected *atomic.Int64) bool {
	if r.ln == nil {
		return false
	}
	if r.fd < 0 {
		r.fd = openReserve()
		return false
	}
	if !r.mu.TryLock() {
		return false
	}
	defer r.mu.Unlock()
	unix.Close(r.fd)
	// Another goroutine may take the freed descriptor first: the accept
	// then fails with EMFILE again and nothing is refused this time.
	var nfd int
	var aerr error
	err := r.ln.Control(func(fd uintptr) {
		for {
			// The listener is non-blocking: an empty queue is EAGAIN.
			nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC)
			if !errors.Is(aerr, unix.EINTR) && !errors.Is(aerr, unix.ECONNABORTED) {
				return
			}
		}
	})
	if err == nil && aerr == nil {
		// Counted first: the client may read the line and ask INFO at
		// once.
		rejected.Add(1)
		// A new socket's send buffer is empty: the short line fits, so
		// the write does not block. As with max_connections, a client
		// already sending may lose the line to a reset.
		_, _ = unix.Write(nfd, []byte(line))
		unix.Close(nfd)
	}
	r.fd = openReserve()
	return err == nil && aerr == nil
}

func (r *reserve) close() {
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// listenNetwork is the network to listen on for addr: "tcp4" for an IPv4
// address and "tcp6" for an IPv6 one, so that 0.0.0.0 does not also
// accept IPv6 connections (and [::] IPv4 ones), as a dual-stack "tcp"
// socket would; gnet listened that way, and a firewall may rely on it.
func listenNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return "tcp" // a name: Go listens on its first address
	case ip.To4() != nil:
		return "tcp4"
	default:
		return "tcp6"
	}
}
