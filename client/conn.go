package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/kvstore/kv/codec"
)

// conn is one pooled connection: the socket, its reply decoder and buffers.
// It is used by one caller at a time.
type conn struct {
	addr     string // the node it is connected to
	node     *node
	opened   time.Time
	nc       net.Conn
	dec      *codec.PipeDecoder
	rbuf     []byte // bytes read; rbuf[r:] not yet decoded
	r        int
	wbuf     []byte
	lastUsed time.Time
	// suspect is set after an ERROR reply: some (request too large, too
	// many connections) come just before the server closes the connection,
	// so it is probed before reuse however recently it was used.
	suspect  bool
	authGen  uint64 // the Client's authGen when the connection authenticated
	maxReply int    // Options.MaxReplyBytes, the decoder's bound, for errors
}

// Buffer sizes: the read buffer starts small and grows to fit a reply; a
// buffer grown past maxRetainedBuf by one huge reply is dropped once idle
// so that it does not pin memory for the life of the connection.
const (
	initialBuf     = 4 << 10
	maxRetainedBuf = 1 << 20
)

// livenessAfter is how long a connection may sit idle before it is probed
// for a close by the server (idle_timeout, restart) before reuse. Back-to-back
// reuse skips the probe's system call.
const livenessAfter = 100 * time.Millisecond

// node is one address a Client dials.
type node struct {
	addr string
	// downUntil (Unix nanoseconds): a connection to the node failed, so
	// until then it is tried only after the others.
	downUntil atomic.Int64
	// stoppedAt (Unix nanoseconds): the node refused a request because it
	// is shutting down; idle connections to it opened before then are
	// closed unused (current) instead of each drawing the same refusal.
	stoppedAt atomic.Int64
}

// stopping records that the node refused a request because it is
// shutting down: it is tried last for a while, and the connections to it
// opened before are not reused.
func (n *node) stopping() {
	now := time.Now()
	n.downUntil.Store(now.Add(nodeRetryAfter).UnixNano())
	n.stoppedAt.Store(now.UnixNano())
}

// stale reports whether cn was opened before its node said it was
// shutting down.
func (cn *conn) stale() bool {
	return cn.node != nil && cn.opened.UnixNano() < cn.node.stoppedAt.Load()
}

// nodeRetryAfter is how long a node that refused a connection is tried
// last: long enough that a dead node does not cost every new connection a
// failed attempt first, short enough that a restarted one gets its share
// of connections back soon.
const nodeRetryAfter = time.Second

// dial opens a connection to the next node in turn that accepts one and,
// when a password is set, authenticates it; each attempt within
// DialTimeout, all within the request's deadline.
func (c *Client) dial(ctx context.Context, deadline time.Time) (*conn, error) {
	c.authMu.Lock()
	password, gen := c.password, c.authGen.Load()
	c.authMu.Unlock()
	return c.dialAs(ctx, deadline, password, gen)
}

// dialAs is dial authenticating with password; the connection is marked
// with gen, the authGen that password belongs to.
func (c *Client) dialAs(ctx context.Context, deadline time.Time, password string, gen uint64) (*conn, error) {
	first := int(c.turn.Add(1) % uint64(len(c.nodes)))
	now := time.Now().UnixNano()
	order := make([]*node, 0, len(c.nodes))
	var down []*node
	for i := range c.nodes {
		if n := c.nodes[(first+i)%len(c.nodes)]; n.downUntil.Load() > now {
			down = append(down, n)
		} else {
			order = append(order, n)
		}
	}
	order = append(order, down...)
	var err error
	for _, n := range order {
		var cn *conn
		cn, err = c.dialNode(ctx, deadline, n, password, gen)
		if err == nil {
			return cn, nil
		}
		if ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline)) {
			break
		}
	}
	if len(c.nodes) > 1 {
		err = fmt.Errorf("no node reachable, last: %w", err)
	}
	return nil, &dialError{err}
}

// dialError is the failure to open a connection to any node of a Client,
// for movable: nothing was sent. Its text is the cause's.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialNode connects to n and authenticates with password when it is not
// empty; a failure to connect marks n down for nodeRetryAfter.
func (c *Client) dialNode(ctx context.Context, deadline time.Time, n *node, password string, gen uint64) (*conn, error) {
	if d := time.Now().Add(c.opts.DialTimeout); deadline.IsZero() || d.Before(deadline) {
		deadline = d
	}
	d := net.Dialer{Deadline: deadline}
	nc, err := d.DialContext(ctx, "tcp", n.addr)
	if err == nil && c.opts.TLS != nil {
		nc, err = handshake(ctx, deadline, nc, n.addr, c.opts.TLS)
	}
	if err != nil {
		n.downUntil.Store(time.Now().Add(nodeRetryAfter).UnixNano())
		return nil, err
	}
	n.downUntil.Store(0)
	cn := &conn{
		addr:   n.addr,
		node:   n,
		opened: time.Now(),
		nc:     nc,
		// Replies to RANGE and BATCH can be long lines with many fields.
		dec:      codec.NewPipeDecoder(codec.ReplyLimits(c.opts.MaxReplyBytes)),
		authGen:  gen,
		maxReply: c.opts.MaxReplyBytes,
	}
	if password != "" {
		pw := []byte(password)
		ok, err := cn.exchange(ctx, deadline, func(b []byte) []byte { return appendRequest(b, "AUTH", pw) }, 1,
			func(_ int, f [][]byte) error { return expect("AUTH", f, "OK") })
		if err == nil && !ok {
			// The context ended as the reply came in: its callback may
			// still set a past deadline on the socket, under whichever
			// request uses the connection next.
			err = ctx.Err()
		}
		if err != nil {
			cn.close()
			return nil, fmt.Errorf("auth: %w", err)
		}
	}
	return cn, nil
}

// handshake wraps nc, dialled to addr, in TLS and completes the
// handshake by deadline; nc is closed if it fails.
func handshake(ctx context.Context, deadline time.Time, nc net.Conn, addr string, cfg *tls.Config) (net.Conn, error) {
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			nc.Close()
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(nc, cfg)
	nc.SetDeadline(deadline)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

func (cn *conn) close() { cn.nc.Close() }

// usable reports whether an idle connection can carry a request: recently
// used, or probed and found neither closed nor holding unexpected bytes.
func (cn *conn) usable() bool {
	if cn.r < len(cn.rbuf) {
		return false // bytes nobody asked for: out of step
	}
	if cap(cn.rbuf) > maxRetainedBuf {
		cn.rbuf, cn.r = nil, 0
	}
	if cap(cn.wbuf) > maxRetainedBuf {
		cn.wbuf = nil
	}
	if !cn.suspect && time.Since(cn.lastUsed) < livenessAfter {
		return true
	}
	cn.suspect = false
	// The last exchange's deadline is still set, and the probe's raw read
	// fails at once when it has passed: without clearing it, every
	// connection idle for longer than its last Timeout would be taken for
	// dead and redialed. The next exchange sets its own deadline.
	if cn.nc.SetDeadline(time.Time{}) != nil {
		return false
	}
	return alive(cn.nc)
}

// pastDeadline is any time already passed; setting it as a deadline makes
// blocked reads and writes return at once.
var pastDeadline = time.Unix(1, 0)

// exchange writes the requests build appends and reads n replies, handing
// each to handle. ok reports whether the connection is still in step and
// may be reused: false after any I/O or framing error, or if the context was
// cancelled mid-exchange. err is the first error, I/O or from handle.
//
// The requests are written by a second goroutine while this one reads
// when there is more than one: a long pipeline would otherwise fill both
// directions' socket buffers, the server waiting for us to read and us
// waiting for it to read, until the server's output limit closes us.
func (cn *conn) exchange(ctx context.Context, deadline time.Time, build func([]byte) []byte, n int, handle func(i int, fields [][]byte) error) (ok bool, err error) {
	ok = true
	if err := cn.nc.SetDeadline(deadline); err != nil {
		return false, err
	}
	if ctx.Done() != nil {
		// Cancellation interrupts blocked I/O through the deadline. If the
		// callback ran at all the deadline may be set after we return, so
		// the connection is not reused.
		stop := context.AfterFunc(ctx, func() { cn.nc.SetDeadline(pastDeadline) })
		defer func() {
			if !stop() {
				ok = false
			}
		}()
	}

	cn.wbuf = build(cn.wbuf[:0])
	var werr chan error
	if n == 1 {
		if _, err := cn.nc.Write(cn.wbuf); err != nil {
			return false, cn.replyAfterWriteError(err)
		}
	} else {
		werr = make(chan error, 1)
		go func() {
			_, err := cn.nc.Write(cn.wbuf)
			werr <- err
		}()
	}

	var first error
	for i := range n {
		fields, rerr := cn.readReply()
		if rerr == nil && len(fields) > 0 && string(fields[0]) == "ERROR" {
			// Whoever handles the reply (a pipeline keeps it as a result):
			// some errors come just before the server closes.
			cn.suspect = true
			if len(fields) > 1 && string(fields[1]) == msgTooLarge {
				ok = false // PROTOCOL.md: the server closes after it
			}
		}
		if rerr != nil {
			if werr != nil {
				cn.nc.Close() // unblock the writer
				if err := <-werr; err != nil {
					rerr = err // the write failing is the cause
				}
			}
			return false, rerr
		}
		if herr := handle(i, fields); herr != nil && first == nil {
			first = herr
			if !inStep(herr) {
				// A reply we could not make sense of: the stream may be
				// out of step, so read no further.
				if werr != nil {
					cn.nc.Close()
					<-werr
				}
				return false, herr
			}
		}
	}
	if werr != nil {
		if err := <-werr; err != nil {
			return false, err
		}
	}
	return ok, first
}

// replyAfterWriteError is the error of a request whose write failed. The
// server answers a request over its max_frame_bytes with ERROR|request too
// large and closes at once, before it has read the rest: the write then
// fails (connection reset, broken pipe) while that reply already sits in
// the receive buffer. It is the answer, and says the request was not
// applied, so it is returned as the *ServerError rather than the write's
// error, which would leave the outcome unknown.
func (cn *conn) replyAfterWriteError(werr error) error {
	if errors.Is(werr, os.ErrDeadlineExceeded) {
		return werr // the caller's deadline or cancellation: no more waiting
	}
	if cn.nc.SetReadDeadline(time.Now().Add(50*time.Millisecond)) != nil {
		return werr
	}
	fields, err := cn.readReply()
	if err != nil || len(fields) < 2 || string(fields[0]) != "ERROR" {
		return werr
	}
	return replyError(fields)
}

// msgTooLarge is the ERROR after which the server closes the connection.
const msgTooLarge = "request too large"

// readReply returns the next non-empty reply line's fields, valid until
// the next call.
func (cn *conn) readReply() ([][]byte, error) {
	for {
		if cn.r < len(cn.rbuf) {
			fields, n, err := cn.dec.Decode(cn.rbuf[cn.r:])
			if err != nil {
				var pe *codec.ProtocolError
				if errors.As(err, &pe) && pe.Fatal {
					// The pipe decoder's one fatal error is a line over its
					// bound, here the client's own: its text, "request too
					// large", reads as the server's limit, and a caller with
					// large values would look for the knob on the server.
					return nil, fmt.Errorf("read reply: reply longer than the client's Options.MaxReplyBytes (%d bytes)", cn.maxReply)
				}
				return nil, fmt.Errorf("read reply: %w", err)
			}
			if n > 0 {
				cn.r += n
				if len(fields) == 0 {
					continue // empty line
				}
				return fields, nil
			}
		}
		if err := cn.fill(); err != nil {
			return nil, err
		}
	}
}

// fill reads more bytes, first making room by moving the undecoded tail
// to the front (the decoder keeps offsets, not pointers) or growing.
func (cn *conn) fill() error {
	if cn.r > 0 {
		k := copy(cn.rbuf, cn.rbuf[cn.r:])
		cn.rbuf, cn.r = cn.rbuf[:k], 0
	}
	if len(cn.rbuf) == cap(cn.rbuf) {
		grown := make([]byte, len(cn.rbuf), max(2*cap(cn.rbuf), initialBuf))
		copy(grown, cn.rbuf)
		cn.rbuf = grown
	}
	k, err := cn.nc.Read(cn.rbuf[len(cn.rbuf):cap(cn.rbuf)])
	cn.rbuf = cn.rbuf[:len(cn.rbuf)+k]
	if k > 0 {
		return nil
	}
	if err == io.EOF {
		return io.ErrUnexpectedEOF // the server closed the connection mid-exchange
	}
	if err == nil {
		return io.ErrNoProgress
	}
	return err
}

// inStep reports whether a reply that produced err still leaves the reply
// stream in step: an ERROR reply or a miss does, a malformed reply does not.
func inStep(err error) bool {
	var se *ServerError
	return errors.As(err, &se) || errors.Is(err, ErrNotFound)
}
