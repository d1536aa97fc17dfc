//go:build !linux

package raftwal

import (
	"fmt"
	"os"
	"path/filepath"
)

func fdatasync(f *os.File) error { return f.Sync() }

// lockDir opens dir's LOCK file; outside Linux it is not locked (dragonboat
// locks the NodeHost directory around it).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftwal: %w", err)
	}
	return f, nil
}
