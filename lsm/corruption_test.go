package lsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm/record"
)

// editFile copies fs's DB at /db with the file called name replaced by
// edit of its contents.
func editFile(t *testing.T, fs *vfs.MemFS, name string, edit func(data []byte) []byte) *vfs.MemFS {
	t.Helper()
	return copyFS(t, fs, "/db", func(file string, data []byte) []byte {
		if file == name {
			return edit(data)
		}
		return data
	})
}

// walWithRecords writes n single-put batches with SyncAlways and closes the
// DB without flushing, so that they live only in its one WAL. It returns
// the FS, the WAL's name and the end offset of each record.
func walWithRecords(t *testing.T, n int) (*vfs.MemFS, string, []int64) {
	t.Helper()
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", testOptions(fs))
	for i := range n {
		mustPut(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i))
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	logs := filesOfType(t, fs, "/db", fileTypeLog)
	if len(logs) != 1 {
		t.Fatalf("WALs %v, want one", logs)
	}
	name := makeFilename(fileTypeLog, logs[0])
	r := record.NewReader(bytes.NewReader(readFile(t, fs, "/db/"+name)))
	var ends []int64
	for {
		_, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, r.Offset())
	}
	if len(ends) != n {
		t.Fatalf("WAL holds %d records, want %d", len(ends), n)
	}
	return fs, name, ends
}

// TestWALTornTail truncates the WAL at every byte offset of its last record:
// the DB must open, keep every earlier write and lose only that one, and
// stay usable across another reopen.
func TestWALTornTail(t *testing.T) {
	const n = 20
	fs, wal, ends := walWithRecords(t, n)
	start, end := ends[n-2], ends[n-1]
	cases := map[string]func([]byte) []byte{}
	for cut := start; cut < end; cut++ {
		cases[fmt.Sprint("cut", cut)] = func(b []byte) []byte { return b[:cut] }
	}
	cases["zero-tail"] = func(b []byte) []byte { return append(b[:start], make([]byte, 4096)...) }
	cases["garbage-tail"] = func(b []byte) []byte { return append(b[:start], bytes.Repeat([]byte{0xa5}, 100)...) }
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			cfs := editFile(t, fs, wal, func(data []byte) []byte {
				return edit(data)
			})
			for range 2 {
				d := mustOpen(t, "/db", testOptions(cfs))
				for i := range n - 1 {
					checkGet(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i), true)
				}
				checkGet(t, d, fmt.Sprintf("k%03d", n-1), "", false)
				mustPut(t, d, "after", "repair")
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	// The intact WAL loses nothing.
	d := mustOpen(t, "/db", testOptions(fs))
	defer d.Close()
	checkGet(t, d, fmt.Sprintf("k%03d", n-1), fmt.Sprintf("value-%03d", n-1), true)
}

// TestWALCorruption flips a byte in a record followed by intact records:
// Open must refuse (later acknowledged writes would be lost silently).
func TestWALCorruption(t *testing.T) {
	const n = 20
	fs, wal, ends := walWithRecords(t, n)
	for _, off := range []int64{ends[4] + 2, ends[4] + 9, (ends[9] + ends[10]) / 2, ends[n-3] - 1} {
		cfs := editFile(t, fs, wal, func(data []byte) []byte {
			data[off] ^= 0x40
			return data
		})
		_, err := Open("/db", testOptions(cfs))
		if !errors.Is(err, ErrCorruption) {
			t.Fatalf("flip at %d: Open = %v, want corruption", off, err)
		}
		if !strings.Contains(err.Error(), wal) {
			t.Fatalf("error does not name the WAL: %v", err)
		}
	}
}

// TestOlderWALTornTail: only the newest WAL with records may end in a torn
// record; an older WAL was synced before the next one started, so Open
// refuses. With RecoverDamagedWAL it opens with the writes before the
// damage, and drops the later WALs too (their writes came after it).
func TestOlderWALTornTail(t *testing.T) {
	const n = 10
	fs, wal, ends := walWithRecords(t, n)
	_, num, _ := parseFilename(wal)
	cfs := editFile(t, fs, wal, func(data []byte) []byte {
		return data[:ends[n-1]-3]
	})
	newer := makeFilename(fileTypeLog, num+1)
	b := NewBatch()
	b.Put([]byte("later"), []byte("1"))
	b.setSeq(1000)
	var buf bytes.Buffer
	w := record.NewWriter(&buf, nil)
	if err := w.Append(b.Repr()); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfs, "/db/"+newer, buf.Bytes())
	if _, err := Open("/db", testOptions(cfs)); !errors.Is(err, ErrCorruption) {
		t.Fatalf("Open = %v, want corruption", err)
	}
	opts := testOptions(cfs)
	opts.RecoverDamagedWAL = true
	d := mustOpen(t, "/db", opts)
	for i := range n {
		checkGet(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i), i < n-1)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{wal, newer} {
		if _, err := cfs.Stat("/db/" + name + ".corrupt"); err != nil {
			t.Errorf("%s was not set aside: %v", name, err)
		}
	}
}

// TestTornTailBeforeEmptyWALs: a torn newest record followed only by empty
// WALs is a torn tail, not damage: that is what a crash leaves between
// Open's creation of its WAL and the manifest that retires the replayed
// ones (which Open refused to open again, pointing at -recover-wal).
func TestTornTailBeforeEmptyWALs(t *testing.T) {
	const n = 10
	fs, wal, ends := walWithRecords(t, n)
	_, num, _ := parseFilename(wal)
	cfs := editFile(t, fs, wal, func(data []byte) []byte {
		return data[:ends[n-1]-3]
	})
	writeFile(t, cfs, "/db/"+makeFilename(fileTypeLog, num+1), nil)
	writeFile(t, cfs, "/db/"+makeFilename(fileTypeLog, num+2), nil)
	d := mustOpen(t, "/db", testOptions(cfs))
	defer d.Close()
	for i := range n {
		checkGet(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i), i < n-1)
	}
}

// TestTableCorruption flips a byte inside a data block: Get and iteration
// must report corruption naming the file, never return wrong data.
func TestTableCorruption(t *testing.T) {
	cfs, table := damagedTableDB(t) // "value-000" -> "value-100"
	d := mustOpen(t, "/db", testOptions(cfs))
	defer d.Close()
	v, err := d.Get([]byte("k000"))
	if !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), table) {
		t.Fatalf("Get = %q, %v; want corruption naming %s", v, err, table)
	}
	it := d.NewIterator(nil, nil)
	for ok := it.First(); ok; ok = it.Next() {
		if bytes.HasPrefix(it.Key(), []byte("k00")) {
			t.Fatalf("iterator returned %q from a damaged block", it.Key())
		}
	}
	if err := it.Close(); !errors.Is(err, ErrCorruption) {
		t.Fatalf("iterator error %v, want corruption", err)
	}
}

// TestManifestCorruption: damage before the last manifest record is
// corruption.
func TestManifestCorruption(t *testing.T) {
	fs := vfs.NewMem()
	opts := smallOptions(fs)
	d := mustOpen(t, "/db", opts)
	for i := range 3000 {
		mustPut(t, d, fmt.Sprintf("k%05d", i), "v")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	manifests := filesOfType(t, fs, "/db", fileTypeManifest)
	if len(manifests) != 1 {
		t.Fatalf("manifests %v", manifests)
	}
	name := makeFilename(fileTypeManifest, manifests[0])
	cfs := editFile(t, fs, name, func(data []byte) []byte {
		data[10] ^= 0xff
		return data
	})
	if _, err := Open("/db", testOptions(cfs)); !errors.Is(err, ErrCorruption) {
		t.Fatalf("Open = %v, want corruption", err)
	}
}

// TestRecoverDamagedWAL: with RecoverDamagedWAL, a DB whose WAL has a
// damaged middle record opens with every write before the damage and none
// after it; the WAL is set aside as NAME.corrupt, and the DB then opens
// normally and takes writes. Without the option Open refuses, saying why.
func TestRecoverDamagedWAL(t *testing.T) {
	const n, bad = 20, 10
	fs, wal, ends := walWithRecords(t, n)
	cfs := editFile(t, fs, wal, func(data []byte) []byte {
		data[ends[bad-1]+9] ^= 0x40 // a payload byte of record bad
		return data
	})
	if _, err := Open("/db", testOptions(cfs)); !errors.Is(err, ErrDamagedWAL) || !errors.Is(err, ErrCorruption) {
		t.Fatalf("Open = %v, want a damaged-WAL corruption", err)
	}
	opts := testOptions(cfs)
	opts.RecoverDamagedWAL = true
	d := mustOpen(t, "/db", opts)
	check := func(d *DB) {
		t.Helper()
		for i := range n {
			checkGet(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i), i < bad)
		}
	}
	check(d)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, cfs, "/db/"+wal+".corrupt"); len(got) != int(ends[n-1]) {
		t.Fatalf("set-aside WAL has %d bytes, want the damaged WAL's %d", len(got), ends[n-1])
	}
	d = mustOpen(t, "/db", testOptions(cfs))
	check(d)
	mustPut(t, d, "after", "recovery")
	checkGet(t, d, "after", "recovery", true)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// failManifestFS fails the creation of manifests.
type failManifestFS struct{ vfs.FS }

func (f failManifestFS) Create(name string) (vfs.File, error) {
	if strings.Contains(name, "MANIFEST") {
		return nil, errors.New("injected: cannot create manifest")
	}
	return f.FS.Create(name)
}

// TestRecoverDamagedWALInterrupted: a recovery that fails before its new
// manifest (here: cannot create it) leaves the DB as it was, so a plain
// Open still refuses and the damaged WAL is still there (also as
// NAME.corrupt); a second recovery completes, without warnings about files
// that vanished.
func TestRecoverDamagedWALInterrupted(t *testing.T) {
	const n, bad = 20, 10
	fs, wal, ends := walWithRecords(t, n)
	cfs := editFile(t, fs, wal, func(data []byte) []byte {
		data[ends[bad-1]+9] ^= 0x40
		return data
	})
	opts := testOptions(failManifestFS{cfs})
	opts.RecoverDamagedWAL = true
	if _, err := Open("/db", opts); err == nil {
		t.Fatal("recovery without a manifest succeeded")
	}
	if _, err := Open("/db", testOptions(cfs)); !errors.Is(err, ErrDamagedWAL) {
		t.Fatalf("plain Open after an interrupted recovery = %v, want the damaged-WAL refusal", err)
	}
	var logged strings.Builder
	opts = testOptions(cfs)
	opts.RecoverDamagedWAL = true
	opts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	d := mustOpen(t, "/db", opts)
	for i := range n {
		checkGet(t, d, fmt.Sprintf("k%03d", i), fmt.Sprintf("value-%03d", i), i < bad)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, cfs, "/db/"+wal+".corrupt"); len(got) != int(ends[n-1]) {
		t.Fatalf("kept WAL has %d bytes, want %d", len(got), ends[n-1])
	}
	if _, err := cfs.Stat("/db/" + wal); err == nil {
		t.Fatal("the damaged WAL is still live after recovery")
	}
	if strings.Contains(logged.String(), "leftover") {
		t.Fatalf("recovery logged a spurious warning:\n%s", logged.String())
	}
}

// TestManifestLastRecordDamagedAtRest: a synced manifest edit moves logNum
// past a WAL, which is then deleted. If that last record is damaged later
// (a bit flip at rest), it reads like a torn write; dropping it would lose
// the writes of the deleted WAL silently, and delete the table the edit
// added as unreferenced. Open refuses instead, and deletes nothing. A WAL
// deleted by hand is found the same way.
// flushedAndLoggedDB returns a closed DB holding "flushed" in a table
// (the flush's edit is the manifest's last record) and "in-wal" only in
// the WAL.
func flushedAndLoggedDB(t *testing.T) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", testOptions(fs))
	mustPut(t, d, "flushed", "1")
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	mustPut(t, d, "in-wal", "2")
	d.Close()
	return fs
}

func TestManifestLastRecordDamagedAtRest(t *testing.T) {
	fs := flushedAndLoggedDB(t)
	var d *DB
	manifests := filesOfType(t, fs, "/db", fileTypeManifest)
	if len(manifests) != 1 {
		t.Fatalf("manifests %v", manifests)
	}
	name := makeFilename(fileTypeManifest, manifests[0])
	cfs := editFile(t, fs, name, func(data []byte) []byte {
		data[len(data)-3] ^= 0xff
		return data
	})
	tables := filesOfType(t, cfs, "/db", fileTypeTable)
	_, err := Open("/db", testOptions(cfs))
	if !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Open with the last manifest record damaged = %v, want corruption naming %s", err, name)
	}
	if got := filesOfType(t, cfs, "/db", fileTypeTable); !slices.Equal(got, tables) {
		t.Fatalf("tables %v after the refused Open, want %v untouched", got, tables)
	}

	// The undamaged DB opens, with both writes.
	d = mustOpen(t, "/db", testOptions(fs))
	checkGet(t, d, "flushed", "1", true)
	checkGet(t, d, "in-wal", "2", true)
	d.Close()

	// The WAL the manifest starts from gone, a later one present (as if
	// it had been deleted by hand after a rotation).
	logs := filesOfType(t, fs, "/db", fileTypeLog)
	if len(logs) != 1 {
		t.Fatalf("WALs %v", logs)
	}
	cfs = copyFS(t, fs, "/db", func(_ string, data []byte) []byte { return data })
	if err := cfs.Rename("/db/"+makeFilename(fileTypeLog, logs[0]), "/db/"+makeFilename(fileTypeLog, logs[0]+5)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("/db", testOptions(cfs)); !errors.Is(err, ErrCorruption) || !strings.Contains(err.Error(), "deleted from the directory") {
		t.Fatalf("Open with the first WAL missing = %v, want corruption", err)
	}
}

// TestMissingWALRefused: the WAL the manifest starts from deleted by hand
// (the newest, so no later one shows the gap) is refused, naming it, with
// nothing deleted; before, Open started without the writes acknowledged
// since the last flush, silently. RecoverDamagedWAL opens without them.
func TestMissingWALRefused(t *testing.T) {
	fs := flushedAndLoggedDB(t)
	logs := filesOfType(t, fs, "/db", fileTypeLog)
	if len(logs) != 1 {
		t.Fatalf("WALs %v", logs)
	}
	name := makeFilename(fileTypeLog, logs[0])
	if err := fs.Remove("/db/" + name); err != nil {
		t.Fatal(err)
	}
	tables := filesOfType(t, fs, "/db", fileTypeTable)
	_, err := Open("/db", testOptions(fs))
	if !errors.Is(err, ErrDamagedWAL) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Open without the WAL = %v, want ErrDamagedWAL naming %s", err, name)
	}
	if got := filesOfType(t, fs, "/db", fileTypeTable); !slices.Equal(got, tables) {
		t.Fatalf("tables %v after the refused Open, want %v untouched", got, tables)
	}
	opts := testOptions(fs)
	opts.RecoverDamagedWAL = true
	d := mustOpen(t, "/db", opts)
	checkGet(t, d, "flushed", "1", true)
	checkGet(t, d, "in-wal", "", false)
	d.Close()
	d = mustOpen(t, "/db", testOptions(fs)) // and from then on as usual
	checkGet(t, d, "flushed", "1", true)
	d.Close()
}

// TestFormatVersion: a new DB and a checkpoint carry FORMAT; a directory
// of a newer format is refused as such (not as damage) and left alone; a
// directory from before FORMAT opens and gets it; a FORMAT that is not one
// is corruption.
func TestFormatVersion(t *testing.T) {
	fs := vfs.NewMem()
	d := mustOpen(t, "/db", testOptions(fs))
	mustPut(t, d, "k", "v")
	if err := d.Checkpoint("/ckpt"); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for _, dir := range []string{"/db", "/ckpt"} {
		if got := string(readFile(t, fs, dir+"/"+formatName)); got != "kv-lsm-format 1\n" {
			t.Fatalf("%s/FORMAT = %q", dir, got)
		}
	}
	writeFile(t, fs, "/db/"+formatName, []byte("kv-lsm-format 2\n"))
	if _, err := Open("/db", testOptions(fs)); !errors.Is(err, ErrNewerFormat) || errors.Is(err, ErrCorruption) {
		t.Fatalf("Open of a newer format: %v, want ErrNewerFormat and not corruption", err)
	}
	if got := string(readFile(t, fs, "/db/"+formatName)); got != "kv-lsm-format 2\n" {
		t.Fatalf("FORMAT rewritten by the refused Open: %q", got)
	}
	if err := fs.Remove("/db/" + formatName); err != nil {
		t.Fatal(err)
	}
	d = mustOpen(t, "/db", testOptions(fs)) // as a build before FORMAT left it
	checkGet(t, d, "k", "v", true)
	d.Close()
	if got := string(readFile(t, fs, "/db/"+formatName)); got != "kv-lsm-format 1\n" {
		t.Fatalf("FORMAT after opening a directory without one: %q", got)
	}
	writeFile(t, fs, "/db/"+formatName, []byte("garbage"))
	if _, err := Open("/db", testOptions(fs)); !errors.Is(err, ErrCorruption) {
		t.Fatalf("Open with a FORMAT that is not one: %v", err)
	}
}

// FuzzFormat: checkFormat never panics on any FORMAT contents, accepts
// only this format (or an older one), and never takes a newer or a
// garbled one for this format.
func FuzzFormat(f *testing.F) {
	f.Add([]byte("kv-lsm-format 1\n"))
	f.Add([]byte("kv-lsm-format 2\n"))
	f.Add([]byte("kv-lsm-format 0"))
	f.Add([]byte("kv-lsm-format -1"))
	f.Add([]byte("kv-lsm-format 99999999999999999999"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := vfs.NewMem()
		if err := fs.MkdirAll("/db", 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, fs, "/db/"+formatName, data)
		err := checkFormat(fs, "/db", true)
		text, _ := strings.CutPrefix(strings.TrimSpace(string(data[:min(len(data), 64)])), formatPrefix)
		if err == nil && text != "1" && strings.TrimLeft(text, "0") != "1" && text != "+1" {
			t.Fatalf("FORMAT %q accepted", data)
		}
		if err != nil && !errors.Is(err, ErrNewerFormat) && !errors.Is(err, ErrCorruption) {
			t.Fatalf("FORMAT %q: %v, want ErrNewerFormat or ErrCorruption", data, err)
		}
	})
}
