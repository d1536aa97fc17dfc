package certs_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/certs/certstest"
)

// TestKeyPairReload: a rotated certificate is used from the next Get on,
// and a half-done rotation (a new certificate beside the old key) keeps
// the last good pair.
func TestKeyPairReload(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	certFile, keyFile := ca.Issue(t, dir, "node", 10)
	kp, err := certs.LoadKeyPair(certFile, keyFile, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		c, err := kp.Get()
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
	ca.Issue(t, dir, "node", 11)
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
	newCert, _ := ca.Issue(t, t.TempDir(), "node", 12)
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
	// Both files gone: still the last good pair.
	os.Remove(certFile)
	if s := serial(); s != 11 {
		t.Fatalf("with the files removed: serial %d, want the previous 11", s)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.LoadKeyPair(filepath.Join(dir, "none.pem"), filepath.Join(dir, "none-key.pem"), "test", nil); err == nil {
		t.Fatal("LoadKeyPair of missing files succeeded")
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not PEM"), 0o600)
	if _, err := certs.LoadPool(junk); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("LoadPool of junk: %v", err)
	}
	ca := certstest.NewCA(t, dir)
	if _, err := certs.LoadPool(ca.File); err != nil {
		t.Fatal(err)
	}
}
