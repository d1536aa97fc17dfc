package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestKvbenchAgainstServer runs kvbench for a couple of seconds against a
// real kvserver, both protocols, with read-back verification: no errors,
// no wrong values, a well-formed JSON report.
func TestKvbenchAgainstServer(t *testing.T) {
	n := startNode(t, "", `sync = "batch"`)
	dir := t.TempDir()
	bin := toolBin(t, "kvbench")
	for _, proto := range []string{"pipe", "resp"} {
		report := filepath.Join(dir, proto+".json")
		cmd := exec.Command(bin, "-addr", n.addr, "-proto", proto, "-clients", "16", "-pipeline", "4",
			"-ops", "put=2,get=5,delete=1,batch=1,range=1", "-keys", "2000", "-prefill", "-verify",
			"-duration", "2s", "-warmup", "300ms", "-json", report)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kvbench -proto %s: %v\n%s", proto, err, out)
		}
		if !strings.Contains(string(out), "p99") {
			t.Errorf("kvbench output lacks percentiles:\n%s", out)
		}
		raw, err := os.ReadFile(report)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("JSON report: %v", err)
		}
	}
}
