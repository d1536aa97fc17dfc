package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"time"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/internal/ratelog"
)

// Limits on a connection that has not authenticated (server.requirepass
// set, no AUTH yet). Such a client may only send AUTH, HELLO, PING and
// QUIT, none of which needs a long request or leaves a long reply unread;
// without these bounds one unauthenticated client could make the server
// hold max_frame_bytes of request (32 MiB) and max_output_bytes of PING
// echoes (64 MiB) per connection, and a few dozen of them hold more than
// the process's memory limit (Redis 7 likewise limits unauthenticated
// clients to small bulks and arrays). Once AUTH succeeds the configured
// limits apply.
const (
	preAuthMaxFrame  = 64 << 10 // bytes of one request
	preAuthMaxArgs   = 16       // HELLO 2 AUTH user pass SETNAME name is 7
	preAuthMaxOutput = 1 << 20  // unsent reply bytes
)

// preAuthLimits are the decoder limits of an unauthenticated connection:
// room for AUTH or HELLO with the password, however long it is.
func (s *Server) preAuthLimits() codec.Limits {
	frame := max(preAuthMaxFrame, 2*len(s.cfg.RequirePass)+1024)
	if int(s.cfg.MaxFrameBytes) > 0 {
		frame = min(frame, int(s.cfg.MaxFrameBytes))
	}
	return codec.Limits{MaxFrame: frame, MaxArgs: min(preAuthMaxArgs, s.limitsArgs()), MaxBulk: frame}
}

func (s *Server) limitsArgs() int {
	if s.cfg.MaxArgs > 0 {
		return s.cfg.MaxArgs
	}
	return codec.DefaultMaxArgs
}

// connLimits are the decoder limits for cs in its current state.
func (s *Server) connLimits(cs *conn) codec.Limits {
	if cs.authed {
		return s.limits
	}
	return s.preAuthLimits()
}

// outputLimit is the most unsent reply bytes cs may have (0: no limit).
func (s *Server) outputLimit(cs *conn) int {
	limit := int(s.cfg.MaxOutputBytes)
	if !cs.authed && (limit <= 0 || limit > preAuthMaxOutput) {
		limit = preAuthMaxOutput
	}
	return limit
}

// authenticate marks cs authenticated and gives it the configured limits.
// It runs from AUTH or HELLO, after the decoder has returned their frame,
// so the decoder is between frames and can be replaced.
func (s *Server) authenticate(cs *conn) {
	if cs.authed {
		return
	}
	cs.authed = true
	switch cs.proto {
	case protoRESP:
		cs.resp = codec.NewRESPDecoder(s.limits)
	case protoPipe:
		cs.pipe = codec.NewPipeDecoder(s.limits)
	}
}

// looksLikeHTTP reports whether a pipe-protocol command name is a line of
// an HTTP request: its request line ("POST / HTTP/1.1") or a Host header.
// A browser on this machine can send a POST to the client port from any
// web page (no-cors, text/plain); the pipe protocol would answer the
// request and header lines with errors and then run every line of the body
// (PUT|k|v, CLUSTER_REMOVE|2) on a server without requirepass. No pipe
// command name holds a space or a colon, so nothing legitimate matches.
// Redis closes such connections for the same reason ("Possible SECURITY
// ATTACK detected").
func looksLikeHTTP(name []byte) bool {
	if len(name) >= 5 && bytes.EqualFold(name[:5], []byte("host:")) {
		return true
	}
	return bytes.Contains(name, []byte(" HTTP/"))
}

// maxAuthFailures is the number of refused passwords after which a
// connection is closed: 200,000 pipelined guesses on one connection took
// 0.05 s. Each closed connection is logged (rate-limited), since a flood of
// them is an attack on the password.
const maxAuthFailures = 10

// authLogEvery bounds how often those closes are logged.
const authLogEvery = 10 * time.Second

// newAuthLog is the limiter of those lines.
func newAuthLog() *ratelog.Limiter { return &ratelog.Limiter{Every: authLogEvery} }

// authFailed counts a refused password on cs, closing cs (after the
// refusal) at maxAuthFailures.
func (s *Server) authFailed(cs *conn) {
	cs.authFailures++
	if cs.authFailures < maxAuthFailures {
		return
	}
	cs.closing = true
	if ok, suppressed := s.authLog.Allow(time.Now()); ok {
		s.log.Warn("closing connection after repeated wrong passwords", "conn", cs.id,
			"remote", cs.remoteAddr(), "failures", cs.authFailures, "more_not_logged", suppressed)
	}
}

// passwordOK reports whether pw is requirepass (any password is, without
// one), in time that depends neither on how much of it matches nor on its
// length: the SHA-256 digests are compared.
func (s *Server) passwordOK(pw []byte) bool {
	if s.cfg.RequirePass == "" {
		return true
	}
	got, want := sha256.Sum256(pw), sha256.Sum256([]byte(s.cfg.RequirePass))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
