package bench

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// reconnect fails every request in flight with cause, closes the
// connection and dials again; it returns false when the client must stop.
func (c *client) reconnect(cause error) bool {
	if c.r.aborted.Load() {
		return false
	}
	now := c.now()
	msg := cause.Error()
	for c.n > 0 {
		s := c.ring[c.head]
		c.ring[c.head].sent = 0
		c.head = (c.head + 1) % len(c.ring)
		c.n--
		c.fail(&s, now, msg)
	}
	_ = c.getConn().Close()
	c.wbuf = c.wbuf[:0]
	if c.stopping {
		return false
	}
	backoff := 50 * time.Millisecond
	for !c.r.aborted.Load() {
		if c.ph.endNs > 0 && c.now() >= c.ph.endNs {
			c.abandonSchedule() // the requests due while it was down were never sent
			return false
		}
		conn, err := c.connect()
		if err == nil {
			c.conn.Store(&conn)
			c.rdl, c.wdl = 0, 0
			return true
		}
		c.r.addReconnectError(err.Error())
		// Wake at the end of the run rather than sleep past it: the time
		// the last client stops is the end of the measured phase.
		wait := backoff
		if c.ph.endNs > 0 {
			wait = max(min(wait, time.Duration(c.ph.endNs-c.now())), 0)
		}
		select {
		case <-c.r.done:
			return false
		case <-time.After(wait):
		}
		backoff = min(2*backoff, time.Second)
	}
	return false
}

// connect dials the client's address and checks the server answers:
// AUTH when a password is set, then PING.
func (c *client) connect() (net.Conn, error) {
	timeout := c.r.cfg.Timeout
	conn, err := net.DialTimeout("tcp", c.addr, timeout)
	if err != nil {
		return nil, err
	}
	c.w.reset()
	c.rlo, c.rhi = 0, 0
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if pw := c.r.cfg.Password; pw != "" {
		c.wbuf = c.w.appendAuth(c.wbuf[:0], pw)
		rep, err := c.roundTrip(conn)
		if err == nil && rep.kind != replyOK {
			err = c.refused("auth", rep)
		}
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	c.wbuf = c.w.appendPing(c.wbuf[:0])
	rep, err := c.roundTrip(conn)
	if err == nil && rep.kind != replyPong {
		err = c.refused("ping", rep)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// refused describes the reply to AUTH or PING (cmd) that was not the one
// wanted, saying what to change when the reply shows it.
func (c *client) refused(cmd string, rep reply) error {
	if c.r.cfg.Proto == ProtoPipe && rep.kind == replyOther && len(rep.val) > 0 && strings.IndexByte("+-:$*", rep.val[0]) >= 0 {
		// No pipe reply starts with a RESP type byte: the server speaks
		// RESP only, as Redis does (kvserver speaks both).
		return fmt.Errorf("%s %s: reply %q is RESP, not the pipe protocol (a Redis server? use -proto resp)", cmd, c.addr, rep.val)
	}
	if cmd == "auth" {
		return fmt.Errorf("%w on %s: the server refused the password given with -a: %s", ErrAuth, c.addr, rep.val)
	}
	if rep.kind == replyError && isNoAuth(string(rep.val)) {
		return fmt.Errorf("%w on %s: the server wants a password: give it with -a: %s", ErrAuth, c.addr, rep.val)
	}
	return fmt.Errorf("%s %s: %s", cmd, c.addr, describeReply(OpPing, rep))
}

// isNoAuth reports whether msg is, or quotes as describeReply does, a
// server's refusal of a request sent without a password: NOAUTH, from
// kvserver and Redis alike.
func isNoAuth(msg string) bool {
	return strings.HasPrefix(msg, "NOAUTH") || strings.Contains(msg, "server error: NOAUTH")
}

// roundTrip writes wbuf and reads one reply, outside the pipelined loop.
func (c *client) roundTrip(conn net.Conn) (reply, error) {
	_, err := conn.Write(c.wbuf)
	c.wbuf = c.wbuf[:0]
	if err != nil {
		return reply{}, fmt.Errorf("write to %s: %w", c.addr, err)
	}
	for {
		if c.rhi > c.rlo {
			rep, n, err := c.w.decode(c.rbuf[c.rlo:c.rhi])
			if err != nil {
				return reply{}, fmt.Errorf("bad reply from %s: %w", c.addr, err)
			}
			if n > 0 {
				c.rlo += n
				if rep.kind == replySkip {
					continue
				}
				if c.rlo == c.rhi {
					c.rlo, c.rhi = 0, 0
				}
				return rep, nil
			}
		}
		if c.rhi == len(c.rbuf) {
			c.rbuf = append(c.rbuf, make([]byte, len(c.rbuf))...)
		}
		n, err := conn.Read(c.rbuf[c.rhi:])
		c.rhi += n
		if err != nil && n == 0 {
			return reply{}, fmt.Errorf("read from %s: %w", c.addr, err)
		}
	}
}
