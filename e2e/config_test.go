package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
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
