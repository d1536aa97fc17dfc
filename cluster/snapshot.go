package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"

	sm "github.com/lni/dragonboat/v4/statemachine"
	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm"
)

// A snapshot stream is every key/value pair of a shard's lsm (user data and
// metadata, so the applied index travels with the data), in key order:
//
//	"KVSNAP01"                                   magic
//	{ uvarint klen (> 0) | key | uvarint vlen | value }...
//	uvarint 0                                    end of records
//	u64 LE  record count
//	u32 LE  CRC-32C of every byte from the first record through the count
//
// Stored keys are never empty (each has a one-byte prefix), so a zero key
// length can only be the end marker.
const snapshotMagic = "KVSNAP01"

// maxSnapshotField bounds a key or value length read from a stream, so a
// corrupt length cannot make the reader allocate without limit.
const maxSnapshotField = 1 << 30

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stopCheckEvery is how many records pass between looks at stopc.
const stopCheckEvery = 4096

func stopped(stopc <-chan struct{}) bool {
	select {
	case <-stopc:
		return true
	default:
		return false
	}
}

// writeSnapshot streams the iterator's view to w.
func writeSnapshot(it *lsm.Iterator, w io.Writer, stopc <-chan struct{}) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	if _, err := bw.WriteString(snapshotMagic); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	var crc uint32
	var n uint64
	var hdr []byte
	for ok := it.First(); ok; ok = it.Next() {
		if n%stopCheckEvery == 0 && stopped(stopc) {
			return sm.ErrSnapshotStopped
		}
		k, v := it.Key(), it.Value()
		if len(k) == 0 {
			return fmt.Errorf("save snapshot: empty stored key")
		}
		hdr = binary.AppendUvarint(hdr[:0], uint64(len(k)))
		crc = crc32.Update(crc, castagnoli, hdr)
		crc = crc32.Update(crc, castagnoli, k)
		if _, err := bw.Write(hdr); err != nil {
			return fmt.Errorf("save snapshot: %w", err)
		}
		if _, err := bw.Write(k); err != nil {
			return fmt.Errorf("save snapshot: %w", err)
		}
		hdr = binary.AppendUvarint(hdr[:0], uint64(len(v)))
		crc = crc32.Update(crc, castagnoli, hdr)
		crc = crc32.Update(crc, castagnoli, v)
		if _, err := bw.Write(hdr); err != nil {
			return fmt.Errorf("save snapshot: %w", err)
		}
		if _, err := bw.Write(v); err != nil {
			return fmt.Errorf("save snapshot: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("save snapshot: read state: %w", err)
	}
	tail := binary.AppendUvarint(nil, 0)
	tail = binary.LittleEndian.AppendUint64(tail, n)
	crc = crc32.Update(crc, castagnoli, tail)
	tail = binary.LittleEndian.AppendUint32(tail, crc)
	if _, err := bw.Write(tail); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	return nil
}

// crcReader checksums what is read through it.
type crcReader struct {
	r   *bufio.Reader
	crc uint32
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc = crc32.Update(c.crc, castagnoli, []byte{b})
	}
	return b, err
}

func (c *crcReader) readFull(p []byte) error {
	if _, err := io.ReadFull(c.r, p); err != nil {
		return err
	}
	c.crc = crc32.Update(c.crc, castagnoli, p)
	return nil
}

// readSnapshot loads a stream written by writeSnapshot into db, which is
// expected to be empty. It returns sm.ErrSnapshotStopped (unwrapped, as
// dragonboat compares it) when stopc closes.
func readSnapshot(r io.Reader, db *lsm.DB, stopc <-chan struct{}) error {
	cr := &crcReader{r: bufio.NewReaderSize(r, 256<<10)}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(cr.r, magic); err != nil {
		return fmt.Errorf("read snapshot magic: %w", noEOF(err))
	}
	if string(magic) != snapshotMagic {
		if v, ok := bytes.CutPrefix(magic, []byte(snapshotMagic[:6])); ok && string(v) > snapshotMagic[6:] {
			return fmt.Errorf("snapshot of format %s, newer than this version of kvserver reads: upgrade this node: %w", magic, errNewerCommand)
		}
		return fmt.Errorf("snapshot magic %q: %w", magic, errSnapshotFormat)
	}
	b := lsm.NewBatch()
	var key, value []byte
	var n uint64
	for {
		if n%stopCheckEvery == 0 && stopped(stopc) {
			return sm.ErrSnapshotStopped
		}
		klen, err := binary.ReadUvarint(cr)
		if err != nil {
			return fmt.Errorf("read snapshot record %d: %w", n, noEOF(err))
		}
		if klen == 0 {
			break
		}
		if klen > maxSnapshotField {
			return fmt.Errorf("snapshot record %d: key length %d: %w", n, klen, errSnapshotFormat)
		}
		key = grow(key, int(klen))
		if err := cr.readFull(key); err != nil {
			return fmt.Errorf("read snapshot record %d: %w", n, noEOF(err))
		}
		vlen, err := binary.ReadUvarint(cr)
		if err != nil {
			return fmt.Errorf("read snapshot record %d: %w", n, noEOF(err))
		}
		if vlen > maxSnapshotField {
			return fmt.Errorf("snapshot record %d: value length %d: %w", n, vlen, errSnapshotFormat)
		}
		value = grow(value, int(vlen))
		if err := cr.readFull(value); err != nil {
			return fmt.Errorf("read snapshot record %d: %w", n, noEOF(err))
		}
		b.Put(key, value)
		n++
		if b.Size() >= applyChunkBytes {
			if err := db.Write(b); err != nil {
				return fmt.Errorf("load snapshot: %w", err)
			}
			b.Reset()
		}
	}
	var cnt [8]byte
	if err := cr.readFull(cnt[:]); err != nil {
		return fmt.Errorf("read snapshot trailer: %w", noEOF(err))
	}
	want := cr.crc
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return fmt.Errorf("read snapshot trailer: %w", noEOF(err))
	}
	if got := binary.LittleEndian.Uint64(cnt[:]); got != n {
		return fmt.Errorf("snapshot has %d records, trailer says %d: %w", n, got, errSnapshotFormat)
	}
	if got := binary.LittleEndian.Uint32(sum[:]); got != want {
		return fmt.Errorf("snapshot checksum %08x, computed %08x: %w", got, want, errSnapshotFormat)
	}
	if b.Len() > 0 {
		if err := db.Write(b); err != nil {
			return fmt.Errorf("load snapshot: %w", err)
		}
	}
	return nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// noEOF turns a premature end of stream into a format error.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated: %w", errSnapshotFormat)
	}
	return err
}

// The CURRENT file names the live lsm directory of a shard.
const currentFile = "CURRENT"

const dbDirPrefix = "db-"

func dbDirName(n uint64) string { return fmt.Sprintf("%s%06d", dbDirPrefix, n) }

func parseDBDirName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, dbDirPrefix) {
		return 0, false
	}
	n, err := strconv.ParseUint(name[len(dbDirPrefix):], 10, 64)
	return n, err == nil && n > 0
}

func nextDBDirName(current string) string {
	n, _ := parseDBDirName(current)
	return dbDirName(n + 1)
}

// readCurrent returns the live directory's name, or "" if there is no
// CURRENT file yet.
func readCurrent(fs vfs.FS, dir string) (string, error) {
	f, err := fs.Open(fs.PathJoin(dir, currentFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", currentFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", currentFile, err)
	}
	name := strings.TrimSuffix(string(data), "\n")
	if _, ok := parseDBDirName(name); !ok {
		return "", fmt.Errorf("read %s: bad contents %q: %w", currentFile, data, lsm.ErrCorruption)
	}
	return name, nil
}

// writeCurrent points CURRENT at name crash-atomically.
func writeCurrent(fs vfs.FS, dir, name string) error {
	return writeFileAtomic(fs, dir, currentFile, []byte(name+"\n"))
}

// writeFileAtomic makes dir/name hold data, crash-atomically: a temporary
// file is written and fsynced, renamed over name, and the directory
// fsynced.
func writeFileAtomic(fs vfs.FS, dir, name string, data []byte) error {
	path := fs.PathJoin(dir, name)
	tmp := path + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(fs, dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return d.Close()
}

// removeStaleDBDirs deletes lsm directories other than the live one: the
// leftovers of a snapshot recovery interrupted by a crash, or of one that
// finished switching CURRENT but not deleting the old state.
func removeStaleDBDirs(fs vfs.FS, dir, live string) error {
	names, err := fs.List(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, name := range names {
		if _, ok := parseDBDirName(name); !ok || name == live {
			continue
		}
		if err := fs.RemoveAll(fs.PathJoin(dir, name)); err != nil {
			return fmt.Errorf("remove stale %s: %w", name, err)
		}
	}
	return nil
}
