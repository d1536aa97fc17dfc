package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
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

// Accept retry delays after an error (EMFILE, ENFILE, ENOBUFS, ...).
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// maxEnrolling bounds the connections being handed to the loops at once.
// Enroll returns only once the chosen loop has run OnOpen, so one at a time
// made every accept wait for a busy loop (1000 connects under load took
// 240-717 ms, against 106-251 ms with gnet's acceptor), and a loop stuck in
// a long callback stopped all accepting.
const maxEnrolling = 64

// acceptLoop accepts connections on ln until it is closed and hands them
// to the event loops of cli; s.accepted is closed once none is being
// handed over (a handover to a loop that is stuck may never end: Serve
// does not wait for it).
func (s *Server) acceptLoop(ln net.Listener, cli *gnet.Client) {
	var wg sync.WaitGroup
	defer func() {
		go func() { wg.Wait(); close(s.accepted) }()
	}()
	slots := make(chan struct{}, maxEnrolling)
	var delay time.Duration
	var lastLog time.Time
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = nextRetry(delay)
			if time.Since(lastLog) > 10*time.Second {
				lastLog = time.Now()
				s.log.Warn("accept failed; retrying", "err", err, "retry_in", delay)
			}
			time.Sleep(delay)
			continue
		}
		delay = 0
		if msg := s.refusal(); msg != "" {
			// The client may be sending already; the line may then be
			// lost to a reset, as it is with Redis.
			_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = c.Write([]byte(msg))
			_ = c.Close()
			continue
		}
		slots <- struct{}{}
		s.enrolling.Add(1)
		wg.Add(1)
		go func() {
			defer func() { <-slots; s.enrolling.Add(-1); wg.Done() }()
			s.enroll(c, cli)
		}()
	}
}

// enroll hands c to an event loop, or closes it.
func (s *Server) enroll(c net.Conn, cli *gnet.Client) {
	if err := s.handOver(c, cli); err != nil {
		s.log.Warn("could not hand a connection to the event loops", "remote", addrString(c.RemoteAddr()), "err", err)
	}
}

// handOver hands c to an event loop; c is closed either way, and it
// returns once the loop has run OnOpen. gnet's Enroll duplicates the
// descriptor and closes c whatever happens, so a duplicate that fails with
// EMFILE would drop a client the accept already took: a probe duplicate is
// taken first, and retried while descriptors are short (the client waits,
// as it does in the listen queue).
func (s *Server) handOver(c net.Conn, cli *gnet.Client) error {
	for delay := time.Duration(0); ; {
		err := probeDup(c)
		if err == nil {
			break
		}
		if s.draining.Load() || !errors.Is(err, unix.EMFILE) && !errors.Is(err, unix.ENFILE) {
			_ = c.Close()
			return err
		}
		delay = nextRetry(delay)
		time.Sleep(delay)
	}
	el := s.pickLoop()
	if el == nil {
		if handed, err := s.discover(c, cli); handed {
			return err
		}
		el = s.pickLoop()
	}
	ch, err := el.Enroll(context.Background(), c)
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
func (s *Server) discover(c net.Conn, cli *gnet.Client) (handed bool, err error) {
	s.discoverMu.Lock()
	defer s.discoverMu.Unlock()
	if s.loopsSeen() {
		return false, nil
	}
	_, err = cli.Enroll(c)
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
		return "ERROR|server is shutting down\n"
	}
	if max := int64(s.cfg.MaxConnections); max > 0 && s.conns.Load()+s.enrolling.Load() >= max {
		s.rejected.Add(1)
		return "ERROR|max number of clients reached\n"
	}
	return ""
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
