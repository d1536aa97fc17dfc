package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/certs/certstest"
	"github.com/kvstore/kv/client"
)

// TestTLSClients: the real kvserver with server.tls_listen and admin_tls,
// driven over TLS by go-redis, the Go client, kvcli, kvbench and (when
// installed) redis-cli; a renewed certificate is served from the next
// connection on.
func TestTLSClients(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	cert, key := ca.Issue(t, dir, "server", 2)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n := startNode(t, fmt.Sprintf("tls_listen = %q\ntls_cert_file = %q\ntls_key_file = %q\nadmin_tls = true\n", tlsAddr, cert, key), "")
	pool, err := certs.LoadPool(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)

	// admin_tls: the admin endpoint answers HTTPS with the same certificate.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + n.admin + "/healthz")
	if err != nil {
		t.Fatalf("admin over HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin over HTTPS: %s", resp.Status)
	}

	rc := newRedis(t, tlsAddr, func(o *redis.Options) { o.TLSConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"} })
	if err := rc.Set(ctx, "tls:r", "from redis", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rc.Pipeline()
	for i := range 100 {
		pipe.Set(ctx, fmt.Sprintf("tls:p%d", i), i, 0)
	}
	get := pipe.Get(ctx, "tls:p99")
	if _, err := pipe.Exec(ctx); err != nil || get.Val() != "99" {
		t.Fatalf("pipeline over TLS: %v, %q", err, get.Val())
	}

	gc, err := client.Dial(tlsAddr, client.Options{TLS: &tls.Config{RootCAs: pool}})
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	if v, err := gc.Get(ctx, []byte("tls:r")); err != nil || string(v) != "from redis" {
		t.Fatalf("Go client over TLS: %q, %v", v, err)
	}
	// The plain port serves the same data.
	if v := dialPipe(t, n.addr).do("GET|tls:p5"); v != "VALUE|5" {
		t.Fatalf("plain port: %q", v)
	}

	kvcli := toolBin(t, "kvcli")
	run := func(name string, args ...string) (string, int) {
		out, err := exec.Command(name, args...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)), 0
	}
	if out, code := run(kvcli, "-addr", tlsAddr, "-cacert", ca.File, "put", "tls:cli", "hello"); code != 0 || out != "OK" {
		t.Fatalf("kvcli -cacert put: %d %q", code, out)
	}
	if out, code := run(kvcli, "-addr", tlsAddr, "-tls", "-cacert", ca.File, "get", "tls:cli"); code != 0 || out != "hello" {
		t.Fatalf("kvcli -tls get: %d %q", code, out)
	}
	if out, code := run(kvcli, "-addr", tlsAddr, "-timeout", "2s", "ping"); code != 2 {
		t.Fatalf("kvcli without -tls on the TLS port: %d %q", code, out)
	}
	if out, code := run(kvcli, "-addr", tlsAddr, "-tls", "ping"); code != 2 || !strings.Contains(out, "certificate") {
		t.Fatalf("kvcli -tls without the CA: %d %q", code, out)
	}

	kvbench := toolBin(t, "kvbench")
	for _, proto := range []string{"pipe", "resp"} {
		out, err := exec.Command(kvbench, "-addr", tlsAddr, "-cacert", ca.File, "-proto", proto, "-clients", "8", "-pipeline", "4",
			"-keys", "500", "-verify", "-duration", "1s", "-warmup", "100ms").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "p99") {
			t.Fatalf("kvbench -cacert -proto %s: %v\n%s", proto, err, out)
		}
	}

	if path, err := exec.LookPath("redis-cli"); err == nil {
		_, port, _ := strings.Cut(tlsAddr, ":")
		if out, code := run(path, "--tls", "--cacert", ca.File, "-h", "127.0.0.1", "-p", port, "GET", "tls:cli"); code != 0 || out != "hello" {
			t.Fatalf("redis-cli --tls: %d %q", code, out)
		}
	} else {
		t.Log("redis-cli not installed: not run over TLS")
	}

	// Renewal: the files rewritten with a new certificate; the next
	// connection gets it, the open ones carry on.
	ca.Issue(t, dir, "server", 3)
	later := time.Now().Add(2 * time.Second)
	for _, f := range []string{cert, key} {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
	c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 3 {
		t.Fatalf("certificate after renewal: serial %d, want 3", s)
	}
	if v, err := gc.Get(context.Background(), []byte("tls:cli")); err != nil || string(v) != "hello" {
		t.Fatalf("pooled connection after renewal: %q, %v", v, err)
	}
}
