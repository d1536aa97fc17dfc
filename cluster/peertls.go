package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/conf"
)

// Mutual TLS on the raft port (cluster.tls_cert_file, tls_key_file,
// tls_ca_file), as etcd's peer TLS. Every connection to or from the port,
// message and snapshot streams and liveness probes alike, is TLS 1.3 with
// a certificate on both ends that the cluster's CA signed, so replication
// traffic is encrypted and only members take part in it; cluster.secret
// authenticates connections but leaves them readable, and an attacker on
// the path could take one over after its handshake. A dialer checks the
// member's certificate against the host of the raft address it dials (an
// IP or DNS name in the certificate's SANs), and every certificate serves
// both ends, so it needs both the serverAuth and clientAuth key usages.
//
// The node's certificate and key are read again when either file changes
// (certs.KeyPair), so they can be rotated without a restart; connections
// already open keep their session. The CA is read at start.
type peerTLS struct {
	server *tls.Config
	client *tls.Config
}

// loadPeerTLS reads the cluster.tls_* files; nil, nil when they are not set.
func loadPeerTLS(cc conf.Cluster, log *slog.Logger) (*peerTLS, error) {
	if !cc.PeerTLS() {
		return nil, nil
	}
	pool, err := certs.LoadPool(cc.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls_ca_file: %w", err)
	}
	kp, err := certs.LoadKeyPair(cc.TLSCertFile, cc.TLSKeyFile, "raft transport", log)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls_cert_file and cluster.tls_key_file: %w", err)
	}
	return &peerTLS{
		server: &tls.Config{
			MinVersion:     tls.VersionTLS13,
			ClientAuth:     tls.RequireAndVerifyClientCert,
			ClientCAs:      pool,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.Get() },
		},
		client: &tls.Config{
			MinVersion:           tls.VersionTLS13,
			RootCAs:              pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.Get() },
		},
	}, nil
}

// listen wraps the raft port's listener; connections it accepts do their
// handshake in serverHandshake.
func (p *peerTLS) listen(ln net.Listener) net.Listener {
	if p == nil {
		return ln
	}
	return tls.NewListener(ln, p.server)
}

// serverHandshake completes an accepted connection's handshake within d,
// so a peer that connects and sends nothing holds nothing for long.
func serverHandshake(c net.Conn, d time.Duration) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	return tc.Handshake()
}

// secure wraps c, dialled to the raft port at addr, in TLS and completes
// the handshake by ctx's end (and c's deadline); c as it is without TLS.
func (p *peerTLS) secure(ctx context.Context, c net.Conn, addr string) (net.Conn, error) {
	if p == nil {
		return c, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raft transport: TLS to %s: %w", addr, err)
	}
	cfg := p.client.Clone()
	cfg.ServerName = host
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("raft transport: TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// closeConn closes c at once. A TLS connection's Close first sends a
// close_notify alert, which waits up to 5 s on a peer that reads nothing
// (stopped, its buffers full); the frames carry their own length and
// checksum, so a cut-off stream is told from a finished one without it.
func closeConn(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		return tc.NetConn().Close()
	}
	return c.Close()
}
