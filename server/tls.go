package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/ratelog"
)

// TLS on the client port (server.tls_listen). gnet reads and writes
// plain descriptors, and crypto/tls needs a blocking net.Conn, so a TLS
// connection is terminated on goroutines of its own and its plaintext
// bridged to the event loops over a socketpair, as stunnel would front the
// server, only inside the process and without a port a local user could
// reach around the TLS. Everything past the bridge (parsing, AUTH, the
// limits, reply order, back-pressure, idle and output closes) is the code
// that serves plain connections; the socketpair's buffers are where
// back-pressure crosses: a client that stops reading fills them and its
// output backs up in the loop, where max_output_bytes counts it.
//
// A TLS connection costs two goroutines, two more descriptors, crypto/tls's
// state and the bridge's buffer towards the server (2000 idle TLS clients:
// ~55 KiB of resident memory each, against ~2 KiB for a plain one), and two
// more copies of every byte; the server's max_connections counts TLS and
// plain connections together.

// tlsHandshakeTimeout bounds a new connection's handshake: a client that
// connects and sends nothing holds a descriptor and a goroutine no longer.
const tlsHandshakeTimeout = 10 * time.Second

// tlsWriteStall is how long the bridge waits for a client to take a
// piece of its replies before closing the connection. The server closes a
// plain client whose backlog has not shrunk in 5 s (parkForOutput), but
// the bridge's buffers hide the backlog from it until they are full.
const tlsWriteStall = 10 * time.Second

// tlsBridgeBuffer is the bridge's buffer towards the client, while it
// moves replies: a TLS record's plaintext. tlsUpBuffer is the one towards
// the server, held for the connection's life.
const (
	tlsBridgeBuffer = 16 << 10
	tlsUpBuffer     = 4 << 10
)

// tlsLogEvery bounds how often failed handshakes are logged.
const tlsLogEvery = 10 * time.Second

// tlsPeer travels with a bridged connection to OnOpen (in its handover):
// the client's address, which the socketpair does not have.
type tlsPeer struct {
	remote net.Addr
}

// TLSConfig builds the TLS configuration of server.tls_listen and of an
// HTTPS admin endpoint (admin_tls): the server's certificate, re-read when
// its files change, and with tls_ca_file the client certificates it
// requires. what names the port in the logs.
func TLSConfig(c conf.Server, what string, log *slog.Logger) (*tls.Config, error) {
	kp, err := certs.LoadKeyPair(c.TLSCertFile, c.TLSKeyFile, what, log)
	if err != nil {
		return nil, fmt.Errorf("server.tls_cert_file and server.tls_key_file: %w", err)
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.Get() },
	}
	if c.TLSCAFile != "" {
		pool, err := certs.LoadPool(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("server.tls_ca_file: %w", err)
		}
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return cfg, nil
}

// enrollTLS completes c's handshake and hands the plaintext end of a
// bridge to an event loop (within the accept loop's slots, as a plain
// connection is handed over); c is closed if either fails. Shutdown ends
// a handshake under way, so that it does not wait for a silent client.
func (s *Server) enrollTLS(c net.Conn, cfg *tls.Config, cli *gnet.Client, slots chan struct{}, failures *ratelog.Limiter, h *handover) {
	tc := tls.Server(c, cfg)
	_ = c.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
	if err := tc.HandshakeContext(s.drained); err != nil {
		c.Close()
		if s.draining.Load() {
			return
		}
		if ok, n := failures.Allow(time.Now()); ok {
			s.log.Info("TLS handshake failed", "remote", addrString(c.RemoteAddr()), "err", err, "more_not_logged", n)
		}
		return
	}
	_ = c.SetDeadline(time.Time{})
	inner, outer, err := socketPair()
	if err != nil {
		c.Close()
		s.log.Warn("TLS connection: cannot make its bridge; closing it", "remote", addrString(c.RemoteAddr()), "err", err)
		return
	}
	// A Shutdown that gave up waiting for handovers may be waiting for
	// the bridges already: too late to start one.
	s.bridgeMu.Lock()
	if s.bridgesDone {
		s.bridgeMu.Unlock()
		c.Close()
		inner.Close()
		outer.Close()
		return
	}
	s.bridges.Add(1)
	s.bridgeMu.Unlock()
	go s.bridge(tc, outer)
	slots <- struct{}{}
	defer func() { <-slots }()
	// handOver closes inner either way; the bridge then reads EOF from
	// outer and closes the client's connection after anything OnOpen
	// wrote (a max_connections refusal).
	h.peer = &tlsPeer{remote: c.RemoteAddr()}
	if err := s.handOver(inner, cli, h); err != nil {
		s.log.Warn("could not hand a connection to the event loops", "remote", addrString(c.RemoteAddr()), "err", err)
	}
}

// socketPair returns the two ends of a connected pair of Unix stream
// sockets.
func socketPair() (inner, outer *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	var ends [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "tls-bridge")
		c, err := net.FileConn(f) // a duplicate of fd
		f.Close()
		if err != nil {
			if i == 1 {
				ends[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("socketpair: %w", err)
		}
		ends[i] = c.(*net.UnixConn)
	}
	return ends[0], ends[1], nil
}

// bridge copies between the client's TLS connection and the server's end
// of the socketpair until the server closes its end (the client's
// connection is then closed after the last reply, with close_notify) or
// the client goes (the server then reads EOF, as from a plain client).
//
// An idle connection should cost little, and most are idle: the side
// towards the client waits for the server's replies without a buffer
// (waitReadable) and takes one from a pool only to move them; the side
// towards the server blocks in crypto/tls's Read, which needs a buffer of
// its own, so it gets a small one (a record larger than it is handed over
// in pieces, without more system calls on the client's side).
func (s *Server) bridge(tc *tls.Conn, outer *net.UnixConn) {
	defer s.bridges.Done()
	up := make(chan struct{})
	go func() {
		defer close(up)
		buf := make([]byte, tlsUpBuffer)
		for {
			n, err := tc.Read(buf)
			if n > 0 {
				if _, werr := outer.Write(buf[:n]); werr != nil {
					return // the server closed its end: so does the down side
				}
			}
			if err != nil {
				_ = outer.CloseWrite()
				return
			}
		}
	}()
	clean := false
	rc, err := outer.SyscallConn()
	for err == nil {
		if err = waitReadable(rc); err != nil {
			break
		}
		buf := bridgeBuffers.Get().(*[]byte)
		var n int
		n, err = outer.Read(*buf)
		if n > 0 {
			_ = tc.SetWriteDeadline(time.Now().Add(time.Duration(s.tlsStall.Load())))
			if _, werr := tc.Write((*buf)[:n]); werr != nil && err == nil {
				err = werr
			}
		}
		bridgeBuffers.Put(buf)
		clean = errors.Is(err, io.EOF)
	}
	if clean {
		// close_notify tells the client that the stream ended where the
		// server meant it to (OpenSSL reports a bare EOF as an error).
		_ = tc.Close()
	} else {
		_ = tc.NetConn().Close()
	}
	outer.Close()
	<-up
}

// bridgeBuffers holds the buffers that carry replies to TLS clients.
var bridgeBuffers = sync.Pool{New: func() any { b := make([]byte, tlsBridgeBuffer); return &b }}

// waitReadable blocks until the socket rc has bytes to read, its end or
// an error, without reading them.
func waitReadable(rc syscall.RawConn) error {
	return rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN && err != unix.EINTR
	})
}

// waitBridges waits for the TLS bridges to finish, until deadline.
func waitBridges(wg *sync.WaitGroup, deadline <-chan time.Time) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-deadline:
		return false
	}
}
