package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/kvstore/kv/conf"
)

// testCA is a certificate authority for tests; issue writes a member
// certificate for 127.0.0.1 and its key under dir.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newTestCA(t testing.TB, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kv test CA " + filepath.Base(dir)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, "ca.pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

func (ca *testCA) issue(t testing.TB, dir, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

// configure gives node i of a test cluster a certificate for mutual TLS.
func (ca *testCA) configure(t testing.TB, dir string) func(i int, cfg *conf.Config) {
	return func(i int, cfg *conf.Config) {
		cfg.Cluster.TLSCertFile, cfg.Cluster.TLSKeyFile = ca.issue(t, dir, fmt.Sprintf("node%d", i+1), int64(i+2))
		cfg.Cluster.TLSCAFile = ca.file
	}
}

func writePEM(t testing.TB, name, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// peerTLSFor loads the TLS setup of a member whose certificate ca issued.
func peerTLSFor(t testing.TB, ca *testCA, name string) *peerTLS {
	t.Helper()
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, name, time.Now().UnixNano())
	p, err := loadPeerTLS(conf.Cluster{TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca.file}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPeerTLSCluster: three members with mutual TLS elect leaders,
// replicate writes and see each other up; the raft port answers neither a
// plain-TCP probe nor a peer whose certificate another CA signed.
func TestPeerTLSCluster(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	tc := newTestCluster(t, clusterOpts{shards: 2, configure: ca.configure(t, dir)})
	for i := range 20 {
		mustPut(t, tc.nodes[i%3], fmt.Sprintf("tls%02d", i), "v")
	}
	for _, n := range tc.nodes {
		if v, err := get(n, "tls07"); err != nil || v != "v" {
			t.Fatalf("read on node %d: %q, %v", n.nodeID, v, err)
		}
		n.refresh()
		if st := n.Status(); st.NodesUp != 3 || st.State != "healthy" {
			t.Fatalf("node %d status over TLS probes: %+v", n.nodeID, st)
		}
	}
	addr := tc.cfgs[0].Cluster.RaftAddress
	if probeMember(nil, addr) {
		t.Fatal("a plain-TCP probe was answered")
	}
	stranger := peerTLSFor(t, newTestCA(t, t.TempDir()), "stranger")
	if probeMember(stranger, addr) {
		t.Fatal("a peer with another CA's certificate was answered")
	}
	if !probeMember(peerTLSFor(t, ca, "operator"), addr) {
		t.Fatal("a probe with a certificate of the cluster's CA was not answered")
	}
}

// TestPeerTLSSnapshotCatchUp: snapshots stream over TLS too (the
// snapshot test with mutual TLS on every member).
func TestPeerTLSSnapshotCatchUp(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	testReplicaCatchesUpBySnapshot(t, clusterOpts{shards: 2, snapshotEntries: 5, configure: ca.configure(t, dir)})
}

// TestPeerTLSRefusesStrangers: a transport with TLS delivers batches from
// a peer whose certificate the CA signed, and none from a peer of another
// CA, one without a certificate, or a plain connection.
func TestPeerTLSRefusesStrangers(t *testing.T) {
	ca := newTestCA(t, t.TempDir())
	factory := func(p *peerTLS) transportFactory {
		return transportFactory{log: slog.New(slog.DiscardHandler), tls: p}
	}
	batches := make(chan pb.MessageBatch, 4)
	_, addr := startTransportWith(t, factory(peerTLSFor(t, ca, "server")), batches, make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	send := func(p *peerTLS) error { return sendFrom(t, factory(p), addr, 7) }
	if err := send(peerTLSFor(t, ca, "member")); err != nil {
		t.Fatal(err)
	}
	if mb := recv(t, batches); len(mb.Requests) != 1 || mb.Requests[0].ShardID != 7 {
		t.Fatalf("batch from a member: %+v", mb)
	}
	// A client of the right CA but with no certificate of its own.
	noCert := peerTLSFor(t, ca, "nocert")
	noCert.client.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &tls.Certificate{}, nil
	}
	for name, p := range map[string]*peerTLS{"another CA": peerTLSFor(t, newTestCA(t, t.TempDir()), "x"), "no certificate": noCert, "plain TCP": nil} {
		send(p) // fails at the handshake, or the acceptor closes the connection
		select {
		case mb := <-batches:
			t.Fatalf("batch from a peer with %s delivered: %+v", name, mb)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestKeyPairReload: a rotated certificate is used from the next
// handshake on; a pair that does not load keeps the last good one.
func TestKeyPairReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	certFile, keyFile := ca.issue(t, dir, "node", 10)
	kp := &keyPair{certFile: certFile, keyFile: keyFile, log: slog.New(slog.DiscardHandler)}
	serial := func() int64 {
		t.Helper()
		c, err := kp.get()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf.SerialNumber.Int64()
	}
	if s := serial(); s != 10 {
		t.Fatalf("serial %d, want 10", s)
	}
	// Rotation: the same file names, a new pair (mtimes moved on, in case
	// the file system's clock granularity hides the rewrite).
	ca.issue(t, dir, "node", 11)
	later := time.Now().Add(time.Second)
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if s := serial(); s != 11 {
		t.Fatalf("after rotation: serial %d, want 11", s)
	}
	// Half a rotation: a new certificate beside the old key.
	other := t.TempDir()
	newCert, _ := ca.issue(t, other, "node", 12)
	b, err := os.ReadFile(newCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	even := later.Add(time.Second)
	os.Chtimes(certFile, even, even)
	if s := serial(); s != 11 {
		t.Fatalf("with a mismatched pair on disk: serial %d, want the previous 11", s)
	}
}

// TestPeerTLSWithSecret: with both set, the secret's challenge runs inside
// the TLS connection: a member with the secret gets through, one with a
// certificate of the CA but another secret does not, and probes are
// answered.
func TestPeerTLSWithSecret(t *testing.T) {
	ca := newTestCA(t, t.TempDir())
	factory := func(secret string) transportFactory {
		return transportFactory{log: slog.New(slog.DiscardHandler), tls: peerTLSFor(t, ca, "m"), secret: []byte(secret)}
	}
	batches := make(chan pb.MessageBatch, 4)
	_, addr := startTransportWith(t, factory("s3cret"), batches, make(chan pb.Chunk), func(pb.Chunk) bool { return true })
	send := func(secret string) error { return sendFrom(t, factory(secret), addr, 9) }
	if err := send("s3cret"); err != nil {
		t.Fatal(err)
	}
	if mb := recv(t, batches); len(mb.Requests) != 1 || mb.Requests[0].ShardID != 9 {
		t.Fatalf("batch from a member with the secret: %+v", mb)
	}
	send("wrong")
	select {
	case mb := <-batches:
		t.Fatalf("batch with the wrong secret delivered: %+v", mb)
	case <-time.After(200 * time.Millisecond):
	}
	if !probeMember(peerTLSFor(t, ca, "probe"), addr) {
		t.Fatal("probe over TLS to a node with a secret not answered")
	}
}

// TestPeerTLSJoin: a new node with a certificate of the cluster's CA joins
// a TLS cluster and serves; one whose certificate another CA signed is
// refused, since its raft port does not answer the members' probe.
func TestPeerTLSJoin(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	tc := newTestCluster(t, clusterOpts{shards: 2, configure: ca.configure(t, dir)})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	mustPut(t, tc.nodes[0], "before", "v")

	joiner := func(id uint64, from *testCA) conf.Config {
		addrs := freeAddrs(t, 2)
		cfg := baseConfig(t, id, addrs[0], addrs[1], 2)
		cfg.Cluster.Members = nil
		cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
		ca.configure(t, dir)(int(id-1), &cfg)
		if from != ca {
			cfg.Cluster.TLSCertFile, cfg.Cluster.TLSKeyFile = from.issue(t, t.TempDir(), "stranger", 99)
		}
		return cfg
	}
	stranger := newTestCA(t, t.TempDir())
	if n, err := open(context.Background(), joiner(5, stranger), testLogger(t).With("node", 5), fsForTest()); err == nil {
		n.Close()
		t.Fatal("a node with another CA's certificate joined")
	} else if !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("join with another CA's certificate: %v", err)
	}

	n4, err := open(context.Background(), joiner(4, ca), testLogger(t).With("node", 4), fsForTest())
	if err != nil {
		t.Fatal(err)
	}
	defer n4.Close()
	tc.waitLeaders(n4)
	mustPut(t, n4, "from4", "x")
	if v, err := get(tc.nodes[1], "from4"); err != nil || v != "x" {
		t.Fatalf("write through the joined node: %q, %v", v, err)
	}
	if v, err := get(n4, "before"); err != nil || v != "v" {
		t.Fatalf("read on the joined node: %q, %v", v, err)
	}
}
