package certs

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/certs/certstest"
	"github.com/kvstore/kv/internal/logtest"
)

// TestExpiryWarning: a certificate that expires within ExpiryWarning is
// logged once a day from the handshakes (Get), an expired one as an error,
// a renewed one not at all.
func TestExpiryWarning(t *testing.T) {
	dir := t.TempDir()
	ca := certstest.NewCA(t, dir)
	certFile, keyFile := ca.IssueUntil(t, dir, "node", 2, time.Now().Add(3*24*time.Hour))
	logger, rec := logtest.New()
	kp, err := LoadKeyPair(certFile, keyFile, "test", logger)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	kp.now = func() time.Time { return now }
	for range 10 {
		kp.Get()
	}
	if got := logtest.Matching(rec.Records(), "test: TLS certificate expires soon"); len(got) != 1 {
		t.Fatalf("warnings %q, want one", rec.Records())
	}
	now = now.Add(25 * time.Hour)
	kp.Get()
	if got := logtest.Matching(rec.Records(), "test: TLS certificate expires soon"); len(got) != 2 {
		t.Fatalf("a day later: warnings %q, want two", rec.Records())
	}
	now = now.Add(3 * 24 * time.Hour)
	kp.Get()
	if got := logtest.Matching(rec.Records(), "test: TLS certificate has expired"); len(got) != 1 {
		t.Fatalf("after expiry: %q", rec.Records())
	}
	// Renewed: nothing more.
	ca.Issue(t, dir, "node", 3)
	later := time.Now().Add(time.Second)
	for _, f := range []string{certFile, keyFile} {
		os.Chtimes(f, later, later)
	}
	now = now.Add(48 * time.Hour)
	n := len(rec.Records())
	kp.Get()
	if got := rec.Records()[n:]; len(got) != 1 || !strings.Contains(got[0], "reloaded") {
		t.Fatalf("after renewal: %q, want the reload only", got)
	}
}
