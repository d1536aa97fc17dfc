package procfd

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCount(t *testing.T) {
	dir := t.TempDir()
	in := func(target string) bool { return filepath.Dir(target) == dir }
	before, err := Count(in)
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	f, err := os.Create(filepath.Join(dir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := Count(in); err != nil || n != before+1 {
		t.Fatalf("Count with one file open in %s: %d, %v; want %d", dir, n, err, before+1)
	}
}
