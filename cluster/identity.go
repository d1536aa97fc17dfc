package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/lni/vfs"
)

// identityFile names the file that says which node, of a cluster with how
// many shards, a data directory belongs to. It is written at the node's
// first start and checked at every later one, so that a changed node_id or
// shards setting stops start-up instead of misrouting keys or taking over
// (and clearing) another node's data.
const identityFile = "CLUSTER_IDENTITY"

type identity struct {
	NodeID uint64
	Shards int
	// Deployment is the raft deployment id (see Cluster.deployment); 0 in
	// files of builds before it, whose clusters run under dragonboat's
	// default.
	Deployment uint64
	// Raft is the node's raft address, which dragonboat also keeps with
	// the raft log and refuses to see changed ("not the owner of the data
	// directory"); recorded here so that a changed raft_address is refused
	// with a message that says so. Empty in files of earlier builds.
	Raft string
}

func (id identity) String() string {
	s := fmt.Sprintf("node_id=%d\nshards=%d\n", id.NodeID, id.Shards)
	if id.Deployment != 0 {
		s += fmt.Sprintf("deployment=%d\n", id.Deployment)
	}
	if id.Raft != "" {
		s += fmt.Sprintf("raft=%s\n", id.Raft)
	}
	return s
}

// readIdentity reads dir's identity file; found is false when there is
// none (a new directory, or one written by a build without the file).
func readIdentity(fs vfs.FS, dir string) (id identity, found bool, err error) {
	path := fs.PathJoin(dir, identityFile)
	f, err := fs.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return identity{}, false, nil
	}
	if err != nil {
		return identity{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return identity{}, false, fmt.Errorf("read %s: %w", path, err)
	}
	for line := range bytes.Lines(data) {
		k, v, _ := strings.Cut(strings.TrimSpace(string(line)), "=")
		switch k {
		case "node_id":
			id.NodeID, err = strconv.ParseUint(v, 10, 64)
		case "shards":
			id.Shards, err = strconv.Atoi(v)
		case "deployment":
			id.Deployment, err = strconv.ParseUint(v, 10, 64)
		case "raft":
			id.Raft = v
		}
		if err != nil {
			return identity{}, false, fmt.Errorf("read %s: bad %s: %w", path, k, err)
		}
	}
	if id.NodeID == 0 || id.Shards < 1 {
		return identity{}, false, fmt.Errorf("read %s: incomplete identity %q", path, data)
	}
	return id, true, nil
}

// writeIdentity makes dir's identity file durable.
func writeIdentity(fs vfs.FS, dir string, id identity) error {
	return writeFileAtomic(fs, dir, identityFile, []byte(id.String()))
}

// shardDirs returns the shard numbers that have a directory in dir.
func shardDirs(fs vfs.FS, dir string) ([]uint64, error) {
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var shards []uint64
	for _, name := range names {
		if rest, ok := strings.CutPrefix(name, "shard-"); ok {
			if n, err := strconv.ParseUint(rest, 10, 64); err == nil {
				shards = append(shards, n)
			}
		}
	}
	return shards, nil
}

// EngineDirs returns, by shard, the lsm directory each shard of the node
// data directory dir holds (see stateMachine), for tools that read them
// offline with the node stopped, such as kvserver -check. Those lsm
// directories run without a WAL (lsm.Options.DisableWAL): the raft log
// is theirs.
func EngineDirs(dir string) (map[uint64]string, error) {
	fs := vfs.Default
	shards, err := shardDirs(fs, dir)
	if err != nil {
		return nil, err
	}
	dirs := make(map[uint64]string, len(shards))
	for _, s := range shards {
		shardDir := shardDirPath(fs, dir, s)
		name, err := readCurrent(fs, shardDir)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", s, err)
		}
		if name == "" {
			return nil, fmt.Errorf("shard %d: %s has no %s", s, shardDir, currentFile)
		}
		dirs[s] = fs.PathJoin(shardDir, name)
	}
	return dirs, nil
}
