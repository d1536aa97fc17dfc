package cluster

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/cluster/raftwal"
)

// A node keeps the raft log store its directory was written with:
// dragonboat's pebble LogDB for nodes started before raftwal (dragonboat
// would refuse the directory with another), raftwal otherwise.
func TestLogDBFactoryKeepsTheStoreOnDisk(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name   string
		make   string // directory to create under the raft directory
		pebble bool
	}{
		{"new node", "", false},
		{"pebble LogDB", "vm/07330471291397159889/logdb-0", true},
		{"raftwal", "vm/07330471291397159889/" + raftwal.Dir, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			raftDir := filepath.Join(t.TempDir(), RaftDir)
			if c.make != "" {
				if err := os.MkdirAll(filepath.Join(raftDir, c.make), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			f, err := logDBFactory(vfs.Default, raftDir, raftwal.Factory{Log: log})
			if err != nil {
				t.Fatal(err)
			}
			if got := f == nil; got != c.pebble {
				t.Fatalf("factory %v, want pebble's (nil): %v", f, c.pebble)
			}
			dir, pebble, err := raftLogStore(vfs.Default, raftDir)
			if err != nil || pebble != c.pebble || (c.make == "") != (dir == "") {
				t.Fatalf("raftLogStore = %q, %v, %v", dir, pebble, err)
			}
		})
	}
}
