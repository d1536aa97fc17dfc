package lsm

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"

	"github.com/lni/vfs"
)

// ErrLocked is returned by Open when the directory is already open, in
// this process or another.
var ErrLocked = errors.New("lsm: database directory is locked by another open DB")

// openDirs is the set of DB directories open in this process. It is
// process-wide by nature: the LOCK file's fcntl lock (vfs.Default.Lock)
// only excludes other processes, and an in-memory FS has no locks at all,
// so a second Open in the same process is caught here.
var openDirs = struct {
	sync.Mutex
	m map[dirKey]bool
}{m: make(map[dirKey]bool)}

// dirKey identifies a directory of one filesystem instance.
type dirKey struct {
	fsPtr  uintptr // pointer-typed FS (one instance per value)
	fsType string
	path   string
}

// dirLock holds a DB directory: the process-wide registration and the
// LOCK file's lock.
type dirLock struct {
	key    dirKey
	closer io.Closer
}

func lockDir(fs vfs.FS, dir string) (*dirLock, error) {
	path := filepath.Clean(dir)
	if _, ok := fs.(*vfs.MemFS); ok {
		path = strings.TrimLeft(path, "/") // MemFS resolves "/db" and "db" alike
	} else if abs, err := filepath.Abs(dir); err == nil {
		path = abs
	}
	key := dirKey{fsType: reflect.TypeOf(fs).String(), path: path}
	if v := reflect.ValueOf(fs); v.Kind() == reflect.Pointer {
		key.fsPtr = v.Pointer()
	}
	openDirs.Lock()
	if openDirs.m[key] {
		openDirs.Unlock()
		return nil, fmt.Errorf("lsm: open %s: already open in this process: %w", dir, ErrLocked)
	}
	openDirs.m[key] = true
	openDirs.Unlock()

	name := fs.PathJoin(dir, lockName)
	c, err := fs.Lock(name)
	if err != nil {
		openDirs.Lock()
		delete(openDirs.m, key)
		openDirs.Unlock()
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("lsm: open %s: %s is held by another process: %v: %w", dir, name, err, ErrLocked)
		}
		return nil, fmt.Errorf("lsm: open %s: lock %s: %w", dir, name, err)
	}
	return &dirLock{key: key, closer: c}, nil
}

func (l *dirLock) release() error {
	if l == nil {
		return nil
	}
	err := l.closer.Close()
	openDirs.Lock()
	delete(openDirs.m, l.key)
	openDirs.Unlock()
	if err != nil {
		return fmt.Errorf("lsm: release lock: %w", err)
	}
	return nil
}
