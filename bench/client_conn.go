package bench

import (
	"context"
	"crypto/tls"
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
		if a := c.leaderAddr(); a != "" {
			// Routed, and the shard has a new leader (the old one
			// failed, most likely): go there, not back to the old one.
			c.addr, c.moveTo = a, ""
		}
		conn, err := c.connect()
		if err == nil {
			c.conn.Store(&conn)
			c.rdl, c.wdl = 0, 0
			return true
		}
		if c.r.aborted.Load() {
			return false // cut short by the abort: not the server's failure
		}
		c.r.addReconnectError(err.Error())
		if c.ph.endNs == 0 && c.now()-now >= int64(c.r.cfg.Timeout) {
			// A phase with no time limit (-n alone, or the prefill) has
			// nothing else to end it: with -max-errors tolerating the
			// failed reconnects, kvbench retried a dead server for hours,
			// and a client of a dead node kept a cluster run from ending
			// after the others had sent every request.
			c.r.abort(fmt.Errorf("%w: no new connection to %s for %v after %v, and %s (last attempt: %w)",
				ErrUnreachable, c.addr, c.r.cfg.Timeout, cause, c.noEnd(), err))
			return false
		}
		// Wake at the end of the run rather than sleep past it: the time
		// the last client stops is the end of the measured phase.
		wait := backoff
		if c.ph.endNs > 0 {
			wait = max(min(wait, time.Duration(c.ph.endNs-c.now())), 0)
		}
		select {
		case <-c.r.stopped.Done():
			return false
		case <-time.After(wait):
		}
		backoff = min(2*backoff, time.Second)
	}
	return false
}

// leaderAddr returns the address of the leader of the client's shard when
// it is one of Config.Addrs other than the one the client uses, else "".
func (c *client) leaderAddr() string {
	if c.shard == 0 {
		return ""
	}
	t := c.r.route.Load()
	if i := t.leader[c.shard-1]; i >= 0 && c.r.cfg.Addrs[i] != c.addr {
		return c.r.cfg.Addrs[i]
	}
	return ""
}

// follow moves a routed client to its shard's leader when the leader has
// moved: at once when nothing is in flight, else once the replies are in
// (fill sends nothing meanwhile). It returns false when the client must
// stop. A leader it cannot reach is retried as any lost server is
// (reconnect); requests sent to the old one were served there, forwarded.
func (c *client) follow() bool {
	if c.moveTo == "" {
		c.moveTo = c.leaderAddr()
	}
	if c.moveTo == "" || c.n > 0 {
		return true
	}
	_ = c.getConn().Close()
	c.addr, c.moveTo = c.moveTo, ""
	conn, err := c.connect()
	if err != nil {
		return c.reconnect(fmt.Errorf("connect to the leader of shard %d: %w", c.shard, err))
	}
	c.conn.Store(&conn)
	c.rdl, c.wdl = 0, 0
	return true
}

// noEnd says why nothing but the client can end its phase.
func (c *client) noEnd() string {
	if c.ph.prefill {
		return "the prefill has no time limit"
	}
	return "the run has no -duration"
}

// connect dials the client's address and checks the server answers:
// AUTH when a password is set, then PING.
func (c *client) connect() (net.Conn, error) {
	timeout := c.r.cfg.Timeout
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(c.r.stopped, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if cfg := c.r.cfg.TLS; cfg != nil {
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(c.addr)
		}
		// The handshake runs with the first request below, under the
		// same deadline.
		conn = tls.Client(conn, cfg)
	}
	// abort wakes clients through their stored connections, and this one
	// is not stored yet: wake it here, or an interrupt waits for the
	// handshake to time out.
	wake := context.AfterFunc(c.r.stopped, func() { _ = conn.SetDeadline(pastDeadline) })
	_ = conn.SetDeadline(time.Now().Add(timeout))
	err = c.handshake(conn)
	if !wake() && err == nil {
		// The abort came after the handshake and set a deadline in the
		// past: the connection is no use, and the run is over anyway.
		err = fmt.Errorf("connect to %s: %w", c.addr, context.Cause(c.r.stopped))
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// handshake sends AUTH when a password is set, then PING, on a new
// connection.
func (c *client) handshake(conn net.Conn) error {
	c.w.reset()
	c.rlo, c.rhi = 0, 0
	if pw := c.r.cfg.Password; pw != "" {
		c.wbuf = c.w.appendAuth(c.wbuf[:0], pw)
		rep, err := c.roundTrip(conn)
		if err == nil && rep.kind != replyOK {
			err = c.refused("auth", rep)
		}
		if err != nil {
			return err
		}
	}
	c.wbuf = c.w.appendPing(c.wbuf[:0])
	rep, err := c.roundTrip(conn)
	if err == nil && rep.kind != replyPong {
		err = c.refused("ping", rep)
	}
	return err
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
