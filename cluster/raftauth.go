package cluster

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"time"
)

// Raft connection authentication (cluster.secret). Raft messages are
// trusted as they arrive: one forged batch could crash a node (dragonboat
// panics on a message whose source address contradicts what it knows),
// depose a leader with a higher term, or very likely write into a replica's
// log. With a secret set, every connection accepted on the raft port first
// proves the dialer knows it:
//
//	acceptor -> dialer: frameChallenge, 32 random bytes
//	dialer -> acceptor: frameAuth, HMAC-SHA256(secret, authContext | challenge)
//
// and nothing else is read from a connection before a valid answer, except
// a liveness probe (a frameClose first), which tells no more than that the
// node is up. Frames read before the answer are at most authFrameMax bytes,
// so an unauthenticated connection cannot make the node allocate a large
// frame. This is authentication, not encryption: someone who can read and
// alter the traffic on the wire can still take over an authenticated
// connection, so the raft network must be private (or tunnelled) as well.
const (
	frameChallenge = 6
	frameAuth      = 7

	authChallengeLen = 32
	authFrameMax     = 64
	// authTimeout bounds the exchange on both sides.
	authTimeout = 5 * time.Second
)

var authContext = []byte("kv raft transport v1\x00")

// authMAC is the answer to challenge under secret.
func authMAC(secret, challenge []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(authContext)
	m.Write(challenge)
	return m.Sum(nil)
}

// sendChallenge writes a fresh challenge to c and returns it.
func sendChallenge(c net.Conn) ([]byte, error) {
	challenge := make([]byte, authChallengeLen)
	if _, err := rand.Read(challenge); err != nil {
		return nil, fmt.Errorf("raft transport: challenge: %w", err)
	}
	c.SetWriteDeadline(time.Now().Add(authTimeout))
	_, err := c.Write(append(appendFrameHeader(nil, frameChallenge, challenge), challenge...))
	c.SetWriteDeadline(time.Time{})
	return challenge, err
}

// answerChallenge reads the acceptor's challenge on a dialed connection and
// answers it. It reads exactly the challenge frame: the notices that may
// follow are read by readNotices.
func answerChallenge(c net.Conn, secret []byte) error {
	c.SetDeadline(time.Now().Add(authTimeout))
	defer c.SetDeadline(time.Time{})
	kind, challenge, err := readFrameMax(c, nil, authFrameMax)
	if err != nil {
		return fmt.Errorf("raft transport: %s sent no challenge (is cluster.secret set alike on every member?): %w", c.RemoteAddr(), err)
	}
	if kind != frameChallenge || len(challenge) != authChallengeLen {
		return fmt.Errorf("raft transport: %s sent frame %d instead of a challenge (is cluster.secret set alike on every member?)", c.RemoteAddr(), kind)
	}
	mac := authMAC(secret, challenge)
	_, err = c.Write(append(appendFrameHeader(nil, frameAuth, mac), mac...))
	return err
}

// firstFrameAfterChallenge reads past a challenge at the start of r, if
// any, and returns the first other frame: what a liveness probe does,
// which needs no secret.
func firstFrameAfterChallenge(r io.Reader) (byte, []byte, error) {
	for {
		kind, payload, err := readFrameMax(r, nil, authFrameMax)
		if err != nil || kind != frameChallenge {
			return kind, payload, err
		}
	}
}
