package e2e

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestBadConfigStopsStartup: an unknown key or a bad value stops start-up
// with a message naming the key and the file.
func TestBadConfigStopsStartup(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"[server]\nlisen = \"127.0.0.1:1\"\n", "lisen"},
		{"[storage]\nsync = \"sometimes\"\n", "storage.sync"},
	} {
		f := filepath.Join(t.TempDir(), "bad.toml")
		os.WriteFile(f, []byte(tc.body), 0o644)
		out, err := exec.Command(kvserverBin, "-c", f).CombinedOutput()
		if err == nil {
			t.Fatalf("%q: kvserver started", tc.body)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "bad.toml") {
			t.Errorf("%q: message %q does not name the key and file", tc.body, out)
		}
	}
	out, err := exec.Command(kvserverBin, "-version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "kvserver ") {
		t.Errorf("-version: %q %v", out, err)
	}
}

// TestMemoryLimitFromBudgets: the server gives the Go runtime a soft
// memory limit derived from its memtable and cache budgets (here 4 MiB
// and 16 MiB: (4×4 + 16) × 1.25 + 256 MiB), and GOMEMLIMIT replaces it.
func TestMemoryLimitFromBudgets(t *testing.T) {
	n := startNode(t, "", "")
	if got, want := gomemlimit(t, n.admin), float64(296<<20); got != want {
		t.Errorf("go_gc_gomemlimit_bytes = %.0f, want %.0f", got, want)
	}
	t.Setenv("GOMEMLIMIT", "123MiB")
	n2 := startNode(t, "", "")
	if got, want := gomemlimit(t, n2.admin), float64(123<<20); got != want {
		t.Errorf("with GOMEMLIMIT=123MiB: go_gc_gomemlimit_bytes = %.0f, want %.0f", got, want)
	}
}

func gomemlimit(t *testing.T, admin string) float64 {
	t.Helper()
	v, ok := metricValue(t, admin, "go_gc_gomemlimit_bytes")
	if !ok {
		t.Fatal("no go_gc_gomemlimit_bytes in /metrics")
	}
	return v
}

// metricValue returns the value of the first sample of /metrics on admin
// whose name and labels are series (e.g. `kv_engine_keys_estimate` or
// `kv_engine_level_files{level="0"}`), and whether there is one.
func metricValue(t *testing.T, admin, series string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f, true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return 0, false
}
