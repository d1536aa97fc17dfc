package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/internal/lsmtest"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// damagedLocal writes n keys (k000...) to one table, flips a bit of a
// value in it (a data block) and reopens: reads of the keys in that block
// fail.
func damagedLocal(t *testing.T, n int) *store.Local {
	t.Helper()
	dir := t.TempDir()
	db, table := lsmtest.OneTable(t, dir, n)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	lsmtest.FlipValue(t, table, fmt.Sprintf("value-%03d", n/2))
	db, err := lsm.Open(dir, lsm.Options{Compression: lsm.CompressionNone, BlockCacheBytes: 1 << 20,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewLocal(db, "x")
	t.Cleanup(func() { st.Close() })
	return st
}

// TestDamagedTableVisible: GETs that meet a damaged table fail as before,
// and are now visible to operators: /healthz answers 503 naming the table,
// INFO persistence and /metrics count the failed reads, and writes go on.
func TestDamagedTableVisible(t *testing.T) {
	const n = 1000
	st := damagedLocal(t, n)
	addr := startTestServer(t, st, nil)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req strings.Builder
	for i := range n {
		fmt.Fprintf(&req, "GET|k%03d\n", i)
	}
	req.WriteString("PUT|after|1\nGET|after\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	failed := 0
	for i := range n + 2 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case i == n && line != "OK", i == n+1 && line != "VALUE|1":
			t.Fatalf("write after the damage: reply %q", line)
		case strings.HasPrefix(line, "ERROR|"):
			if !strings.Contains(line, "corruption") {
				t.Fatalf("reply %d: %q", i, line)
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("no GET met the damaged block")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewEngineCollector(st.EngineMetrics))
	a, err := StartAdmin("127.0.0.1:0", "", nil, st, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	resp, err := http.Get("http://" + a.ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(string(body), "unhealthy ") ||
		!strings.Contains(string(body), "damaged table") || !strings.Contains(string(body), ".sst") {
		t.Fatalf("healthz: %d %q, want 503 naming the damaged table", resp.StatusCode, body)
	}
	t.Logf("healthz: %s", body)
	if got := gatherValues(t, reg)["kv_engine_corrupt_reads_total"]; got != float64(failed) {
		t.Fatalf("kv_engine_corrupt_reads_total = %v, want %d", got, failed)
	}
	info := lastServer.infoText("persistence")
	if !strings.Contains(info, fmt.Sprintf("\r\ncorrupt_reads:%d\r\n", failed)) || !strings.Contains(info, "storage_status:err\r\n") {
		t.Fatalf("INFO persistence does not show %d corrupt reads and the damage:\n%s", failed, info)
	}
}
