package server

import (
	"errors"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"
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
// whose Enroll takes a net.Conn).

// Accept retry delays after an error (EMFILE, ENFILE, ENOBUFS, ...).
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// acceptLoop accepts connections on ln until it is closed and enrolls them
// in the event loops of cli.
func (s *Server) acceptLoop(ln net.Listener, cli *gnet.Client) {
	var delay time.Duration
	var lastLog time.Time
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
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
		// Enroll hands a duplicate of the descriptor to a loop and
		// closes c; it returns once the loop has run OnOpen.
		if _, err := cli.Enroll(c); err != nil {
			s.log.Warn("could not hand a connection to the event loops", "remote", addrString(c.RemoteAddr()), "err", err)
		}
	}
}

// refusal is the line a new connection gets instead of service, or "".
func (s *Server) refusal() string {
	if s.draining.Load() {
		return "ERROR|server is shutting down\n"
	}
	if max := int64(s.cfg.MaxConnections); max > 0 && s.conns.Load() >= max {
		s.rejected.Add(1)
		return "ERROR|max number of clients reached\n"
	}
	return ""
}
