package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/kvstore/kv/certs/certstest"
	"github.com/kvstore/kv/conf"
)

// configureTLS gives node i of a test cluster a certificate for mutual TLS.
func configureTLS(ca *certstest.CA, t testing.TB, dir string) func(i int, cfg *conf.Config) {
	return func(i int, cfg *conf.Config) {
		cfg.Cluster.TLSCertFile, cfg.Cluster.TLSKeyFile = ca.Issue(t, dir, fmt.Sprintf("node%d", i+1), int64(i+2))
		cfg.Cluster.TLSCAFile = ca.File
	}
}

// peerTLSFor loads the TLS setup of a member whose certificate ca issued.
func peerTLSFor(t testing.TB, ca *certstest.CA, name string) *peerTLS {
	t.Helper()
	dir := t.TempDir()
	cert, key := ca.Issue(t, dir, name, time.Now().UnixNano())
	p, err := loadPeerTLS(conf.Cluster{TLSCertFile: cert, TLSKeyFile: key, TLSCAFile: ca.File}, slog.New(slog.DiscardHandler))
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
	ca := certstest.NewCA(t, dir)
	tc := newTestCluster(t, clusterOpts{shards: 2, configure: configureTLS(ca, t, dir)})
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
	stranger := peerTLSFor(t, certstest.NewCA(t, t.TempDir()), "stranger")
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
	ca := certstest.NewCA(t, dir)
	testReplicaCatchesUpBySnapshot(t, clusterOpts{shards: 2, snapshotEntries: 5, configure: configureTLS(ca, t, dir)})
}

// TestPeerTLSRefusesStrangers: a transport with TLS delivers batches from
// a peer whose certificate the CA signed, and none from a peer of another
// CA, one without a certificate, or a plain connection.
func TestPeerTLSRefusesStrangers(t *testing.T) {
	ca := certstest.NewCA(t, t.TempDir())
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
	for name, p := range map[string]*peerTLS{"another CA": peerTLSFor(t, certstest.NewCA(t, t.TempDir()), "x"), "no certificate": noCert, "plain TCP": nil} {
		send(p) // fails at the handshake, or the acceptor closes the connection
		select {
		case mb := <-batches:
			t.Fatalf("batch from a peer with %s delivered: %+v", name, mb)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestPeerTLSWithSecret: with both set, the secret's challenge runs inside
// the TLS connection: a member with the secret gets through, one with a
// certificate of the CA but another secret does not, and probes are
// answered.
func TestPeerTLSWithSecret(t *testing.T) {
	ca := certstest.NewCA(t, t.TempDir())
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
	ca := certstest.NewCA(t, dir)
	tc := newTestCluster(t, clusterOpts{shards: 2, configure: configureTLS(ca, t, dir)})
	serveMembership(t, tc.cfgs[0].Server.Listen, tc.nodes[0])
	mustPut(t, tc.nodes[0], "before", "v")

	joiner := func(id uint64, from *certstest.CA) conf.Config {
		addrs := freeAddrs(t, 2)
		cfg := baseConfig(t, id, addrs[0], addrs[1], 2)
		cfg.Cluster.Members = nil
		cfg.Cluster.Join = []string{tc.cfgs[0].Server.Listen}
		configureTLS(ca, t, dir)(int(id-1), &cfg)
		if from != ca {
			cfg.Cluster.TLSCertFile, cfg.Cluster.TLSKeyFile = from.Issue(t, t.TempDir(), "stranger", 99)
		}
		return cfg
	}
	stranger := certstest.NewCA(t, t.TempDir())
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
