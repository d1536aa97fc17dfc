package server

import "testing"

// TestConfigParamsSync: CONFIG GET appendonly/appendfsync in Redis's terms
// for each sync policy kvserver reports, "raft" (cluster nodes) included.
func TestConfigParamsSync(t *testing.T) {
	for sync, want := range map[string][2]string{
		"always": {"yes", "always"},
		"batch":  {"yes", "everysec"},
		"none":   {"no", "no"},
		"raft":   {"yes", "always"},
	} {
		s := &Server{info: Info{Sync: sync}}
		got := map[string]string{}
		for _, p := range s.configParams() {
			got[p[0]] = p[1]
		}
		if got["appendonly"] != want[0] || got["appendfsync"] != want[1] {
			t.Errorf("sync %q: appendonly %q, appendfsync %q; want %q, %q", sync, got["appendonly"], got["appendfsync"], want[0], want[1])
		}
	}
}
