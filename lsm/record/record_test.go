package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/lni/vfs"

	"github.com/kvstore/kv/lsm/internal/base"
)

// testLog is an encoded log and where each of its records starts and ends.
type testLog struct {
	data     []byte
	payloads [][]byte
	starts   []int64
	ends     []int64
}

func buildLog(t testing.TB, payloads [][]byte) testLog {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, nil)
	l := testLog{payloads: payloads}
	for i, p := range payloads {
		l.starts = append(l.starts, w.Size())
		if err := w.Append(p); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		l.ends = append(l.ends, w.Size())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	l.data = buf.Bytes()
	if int64(len(l.data)) != w.Size() {
		t.Fatalf("Size() = %d, wrote %d bytes", w.Size(), len(l.data))
	}
	return l
}

func randomPayloads(rng *rand.Rand, n, maxLen int) [][]byte {
	ps := make([][]byte, n)
	for i := range ps {
		ps[i] = randomBytes(rng, rng.IntN(maxLen+1))
	}
	return ps
}

// randomBytes returns n bytes drawn from a generator seeded by rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(rng.Uint32())
	}
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// readLog reads r to its end, returning the payloads (copied), the final
// error and the final Offset.
func readLog(r io.Reader) ([][]byte, int64, error) {
	rd := NewReader(r)
	var got [][]byte
	for {
		p, err := rd.Next()
		if err != nil {
			return got, rd.Offset(), err
		}
		got = append(got, bytes.Clone(p))
	}
}

func checkPrefix(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d: got %d bytes, want %d (contents differ)", i, len(got[i]), len(want[i]))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var payloads [][]byte
	for i := range 400 {
		n := rng.IntN(300) // mostly small, as WAL batches are
		switch {
		case i%50 == 7:
			n = 1 + rng.IntN(2<<20) // up to 2 MiB: written straight through
		case i%10 == 3:
			n = rng.IntN(100 << 10) // around the direct-write threshold
		case i%25 == 0:
			n = 0
		}
		payloads = append(payloads, randomBytes(rng, n))
	}
	payloads = append(payloads, randomBytes(rng, 2<<20)) // the maximum size tested
	l := buildLog(t, payloads)

	readers := map[string]func() io.Reader{
		"whole": func() io.Reader { return bytes.NewReader(l.data) },
		"half":  func() io.Reader { return iotest.HalfReader(bytes.NewReader(l.data)) },
		"data-with-EOF": func() io.Reader {
			return iotest.DataErrReader(bytes.NewReader(l.data))
		},
	}
	for name, mk := range readers {
		t.Run(name, func(t *testing.T) {
			got, off, err := readLog(mk())
			if err != io.EOF {
				t.Fatalf("final error %v, want io.EOF", err)
			}
			checkPrefix(t, got, payloads)
			if off != int64(len(l.data)) {
				t.Fatalf("Offset() = %d, want %d", off, len(l.data))
			}
		})
	}
}

func TestRoundTripOneByteReads(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	payloads := randomPayloads(rng, 30, 200)
	payloads = append(payloads, randomBytes(rng, 70<<10))
	l := buildLog(t, payloads)
	got, _, err := readLog(iotest.OneByteReader(bytes.NewReader(l.data)))
	if err != io.EOF {
		t.Fatalf("final error %v, want io.EOF", err)
	}
	checkPrefix(t, got, payloads)
}

func TestEmptyLog(t *testing.T) {
	got, off, err := readLog(bytes.NewReader(nil))
	if err != io.EOF || len(got) != 0 || off != 0 {
		t.Fatalf("empty log: %d records, err %v, offset %d", len(got), err, off)
	}
}

func TestEmptyPayloadHeaderIsNotZero(t *testing.T) {
	if hdr := appendHeader(nil, nil); bytes.Equal(hdr, make([]byte, HeaderLen)) {
		t.Fatal("an empty record has an all-zero header: zero-filled space would read as records")
	}
}

func TestMaskMatchesLevelDB(t *testing.T) {
	// LevelDB's crc32c::Mask: rotate right by 15, add kMaskDelta.
	for _, c := range []uint32{0, 1, 0xffffffff, 0x12345678, crc32.Checksum([]byte("abc"), crcTable)} {
		want := ((c >> 15) | (c << 17)) + 0xa282ead8
		if got := mask(c); got != want {
			t.Fatalf("mask(%#x) = %#x, want %#x", c, got, want)
		}
	}
	// The CRC covers the length bytes then the payload.
	hdr := appendHeader(nil, []byte("hello"))
	want := mask(crc32.Checksum([]byte{5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}, crc32.MakeTable(crc32.Castagnoli)))
	if got := binary.LittleEndian.Uint32(hdr[:4]); got != want || binary.LittleEndian.Uint32(hdr[4:]) != 5 {
		t.Fatalf("header %x, want crc %#x length 5", hdr, want)
	}
}

func TestTornTailAtEveryOffset(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	payloads := randomPayloads(rng, 20, 500)
	payloads = append(payloads, randomBytes(rng, 1000))
	l := buildLog(t, payloads)
	last := len(payloads) - 1
	start, end := l.starts[last], l.ends[last]

	check := func(t *testing.T, data []byte) {
		t.Helper()
		got, off, err := readLog(bytes.NewReader(data))
		if !errors.Is(err, ErrTornTail) || errors.Is(err, base.ErrCorruption) {
			t.Fatalf("final error %v, want ErrTornTail", err)
		}
		checkPrefix(t, got, payloads[:last])
		if off != start {
			t.Fatalf("Offset() = %d, want %d", off, start)
		}
	}
	for cut := start + 1; cut < end; cut++ {
		check(t, l.data[:cut])
		// A crash can also leave zero-filled blocks past the torn record.
		check(t, append(bytes.Clone(l.data[:cut]), make([]byte, 1+rng.IntN(5000))...))
	}
	// Cutting exactly at the record boundary is a clean end.
	got, off, err := readLog(bytes.NewReader(l.data[:start]))
	if err != io.EOF || off != start {
		t.Fatalf("cut at boundary: err %v, offset %d", err, off)
	}
	checkPrefix(t, got, payloads[:last])
}

func TestTornTailLargeRecord(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	payloads := [][]byte{randomBytes(rng, 100), randomBytes(rng, 2<<20)}
	l := buildLog(t, payloads)
	for range 10 {
		cut := l.starts[1] + 1 + rng.Int64N(l.ends[1]-l.starts[1]-1)
		got, off, err := readLog(iotest.HalfReader(bytes.NewReader(l.data[:cut])))
		if !errors.Is(err, ErrTornTail) || off != l.starts[1] {
			t.Fatalf("cut at %d: err %v offset %d", cut, err, off)
		}
		checkPrefix(t, got, payloads[:1])
	}
}

func TestFlipByteInMiddleRecordIsCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	payloads := randomPayloads(rng, 12, 300)
	payloads[6] = randomBytes(rng, 200)
	l := buildLog(t, payloads)
	for _, flip := range []byte{0x01, 0x80, 0xff} {
		for i := l.starts[6]; i < l.ends[6]; i++ {
			data := bytes.Clone(l.data)
			data[i] ^= flip
			got, off, err := readLog(bytes.NewReader(data))
			if !errors.Is(err, base.ErrCorruption) || errors.Is(err, ErrTornTail) {
				t.Fatalf("flip %#x at %d: final error %v, want corruption", flip, i, err)
			}
			checkPrefix(t, got, payloads[:6])
			if off != l.starts[6] {
				t.Fatalf("flip at %d: Offset() = %d, want %d", i, off, l.starts[6])
			}
		}
	}
}

func TestFlipByteInLastRecordIsTornTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	payloads := randomPayloads(rng, 12, 300)
	payloads = append(payloads, randomBytes(rng, 300))
	l := buildLog(t, payloads)
	last := len(payloads) - 1
	for _, flip := range []byte{0x01, 0x80, 0xff} {
		for i := l.starts[last]; i < l.ends[last]; i++ {
			data := bytes.Clone(l.data)
			data[i] ^= flip
			got, off, err := readLog(bytes.NewReader(data))
			if !errors.Is(err, ErrTornTail) {
				t.Fatalf("flip %#x at %d: final error %v, want ErrTornTail", flip, i, err)
			}
			checkPrefix(t, got, payloads[:last])
			if off != l.starts[last] {
				t.Fatalf("flip at %d: Offset() = %d", i, off)
			}
		}
	}
}

func TestZeroTail(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	payloads := randomPayloads(rng, 5, 100)
	l := buildLog(t, payloads)
	for _, n := range []int{1, 7, 8, 9, 100, 4096, 1 << 20} {
		for _, prefix := range []testLog{l, {}} {
			data := append(bytes.Clone(prefix.data), make([]byte, n)...)
			got, off, err := readLog(bytes.NewReader(data))
			if !errors.Is(err, ErrTornTail) {
				t.Fatalf("%d zero bytes after %d: final error %v, want ErrTornTail", n, len(prefix.data), err)
			}
			checkPrefix(t, got, prefix.payloads)
			if off != int64(len(prefix.data)) {
				t.Fatalf("Offset() = %d, want %d", off, len(prefix.data))
			}
		}
	}
}

func TestDamageBeforeIntactRecordsIsCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	payloads := randomPayloads(rng, 10, 300)
	payloads[4] = randomBytes(rng, 100)
	l := buildLog(t, payloads)
	s, e := l.starts[4], l.ends[4]
	cases := map[string]func(d []byte){
		"zeroed record": func(d []byte) { clear(d[s:e]) },
		"zeroed header": func(d []byte) { clear(d[s : s+HeaderLen]) },
		"impossible length": func(d []byte) {
			binary.LittleEndian.PutUint32(d[s+4:], MaxPayload+1)
		},
		"length past end": func(d []byte) {
			binary.LittleEndian.PutUint32(d[s+4:], uint32(len(d)))
		},
		"garbage": func(d []byte) { copy(d[s:e], randomBytes(rng, int(e-s))) },
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			data := bytes.Clone(l.data)
			damage(data)
			got, off, err := readLog(bytes.NewReader(data))
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("final error %v, want corruption", err)
			}
			checkPrefix(t, got, payloads[:4])
			if off != s {
				t.Fatalf("Offset() = %d, want %d", off, s)
			}
		})
	}
}

func TestImpossibleLengthAtEndIsTornTail(t *testing.T) {
	l := buildLog(t, [][]byte{[]byte("a"), []byte("b")})
	data := bytes.Clone(l.data)
	binary.LittleEndian.PutUint32(data[l.starts[1]+4:], 0xffffffff)
	got, off, err := readLog(bytes.NewReader(data))
	if !errors.Is(err, ErrTornTail) || off != l.starts[1] {
		t.Fatalf("err %v offset %d", err, off)
	}
	checkPrefix(t, got, l.payloads[:1])
}

func TestReaderErrorsAreSticky(t *testing.T) {
	l := buildLog(t, [][]byte{[]byte("a"), []byte("bb")})
	rd := NewReader(bytes.NewReader(l.data[:len(l.data)-1]))
	if _, err := rd.Next(); err != nil {
		t.Fatal(err)
	}
	_, err1 := rd.Next()
	_, err2 := rd.Next()
	if !errors.Is(err1, ErrTornTail) || err1 != err2 {
		t.Fatalf("errors %v then %v", err1, err2)
	}
}

func TestReaderIOError(t *testing.T) {
	boom := errors.New("disk on fire")
	l := buildLog(t, randomPayloads(rand.New(rand.NewPCG(17, 18)), 50, 2000))
	r := io.MultiReader(bytes.NewReader(l.data[:len(l.data)/2]), iotest.ErrReader(boom))
	got, _, err := readLog(r)
	if !errors.Is(err, boom) || errors.Is(err, ErrTornTail) || errors.Is(err, base.ErrCorruption) {
		t.Fatalf("final error %v, want the read error", err)
	}
	if len(got) == 0 || len(got) >= 50 {
		t.Fatalf("read %d records before the error", len(got))
	}
	checkPrefix(t, got, l.payloads[:len(got)])
}

func TestReaderRejectsStalledSource(t *testing.T) {
	_, _, err := readLog(stalledReader{})
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("err %v, want io.ErrNoProgress", err)
	}
}

type stalledReader struct{}

func (stalledReader) Read([]byte) (int, error) { return 0, nil }

func TestPayloadAliasesUntilNextCall(t *testing.T) {
	l := buildLog(t, [][]byte{[]byte("first"), []byte("second")})
	rd := NewReader(bytes.NewReader(l.data))
	p, err := rd.Next()
	if err != nil || string(p) != "first" {
		t.Fatalf("%q %v", p, err)
	}
	if cap(p) != len(p) {
		t.Fatalf("payload has capacity %d beyond its length %d: appending would overwrite the next record", cap(p), len(p))
	}
}

func TestWriterAtContinuesRecoveredLog(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	first := randomPayloads(rng, 10, 300)
	l := buildLog(t, first)
	torn := l.data[:len(l.data)-7]

	_, off, err := readLog(bytes.NewReader(torn))
	if !errors.Is(err, ErrTornTail) {
		t.Fatal(err)
	}
	buf := bytes.NewBuffer(bytes.Clone(torn[:off])) // truncated at Offset, opened for append
	w := NewWriterAt(buf, nil, off)
	more := randomPayloads(rng, 5, 300)
	for _, p := range more {
		if err := w.Append(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(buf.Len()) {
		t.Fatalf("Size() = %d, log is %d bytes", w.Size(), buf.Len())
	}
	got, _, err := readLog(buf)
	if err != io.EOF {
		t.Fatal(err)
	}
	checkPrefix(t, got, append(first[:len(first)-1:len(first)-1], more...))
}

// TestSyncSurvivesPowerLoss checks Sync against vfs's strict in-memory FS:
// records synced before a power loss survive it, later ones may vanish.
func TestSyncSurvivesPowerLoss(t *testing.T) {
	fs := vfs.NewStrictMem()
	f, err := fs.Create("000001.log")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := fs.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Sync(); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(f, f)
	synced := [][]byte{[]byte("one"), bytes.Repeat([]byte("x"), 100<<10), []byte("three")}
	for _, p := range synced {
		if err := w.Append(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.Append([]byte("flushed, never synced")); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fs.SetIgnoreSyncs(true)
	fs.ResetToSyncedState()
	fs.SetIgnoreSyncs(false)

	r, err := fs.Open("000001.log")
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := readLog(r)
	if err != io.EOF {
		t.Fatalf("final error %v", err)
	}
	checkPrefix(t, got, synced)
}

type failingFile struct {
	writeErr, syncErr error
	writes, syncs     int
}

func (f *failingFile) Write(p []byte) (int, error) {
	f.writes++
	if f.writeErr != nil {
		return 0, f.writeErr
	}
	return len(p), nil
}

func (f *failingFile) Sync() error {
	f.syncs++
	return f.syncErr
}

func TestWriterErrorsAreSticky(t *testing.T) {
	boom := errors.New("EIO")
	t.Run("write", func(t *testing.T) {
		f := &failingFile{writeErr: boom}
		w := NewWriter(f, nil)
		if err := w.Append([]byte("buffered")); err != nil {
			t.Fatalf("append touched the file: %v", err)
		}
		if err := w.Flush(); !errors.Is(err, boom) {
			t.Fatalf("flush: %v", err)
		}
		writes := f.writes
		f.writeErr = nil
		if err := w.Append([]byte("x")); !errors.Is(err, boom) {
			t.Fatalf("append after failure: %v", err)
		}
		if err := w.Sync(); !errors.Is(err, boom) || f.writes != writes || f.syncs != 0 {
			t.Fatalf("sync after failure: %v (writes %d, syncs %d)", err, f.writes, f.syncs)
		}
	})
	t.Run("direct write", func(t *testing.T) {
		w := NewWriter(&failingFile{writeErr: boom}, nil)
		if err := w.Append(make([]byte, directThreshold)); !errors.Is(err, boom) {
			t.Fatalf("large append: %v", err)
		}
	})
	t.Run("sync", func(t *testing.T) {
		f := &failingFile{syncErr: boom}
		w := NewWriter(f, nil)
		if err := w.Append([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(); !errors.Is(err, boom) || f.writes != 1 {
			t.Fatalf("sync: %v, %d writes", err, f.writes)
		}
		f.syncErr = nil
		if err := w.Sync(); !errors.Is(err, boom) {
			t.Fatalf("second sync: %v", err)
		}
	})
	t.Run("no syncer", func(t *testing.T) {
		w := NewWriter(&bytes.Buffer{}, nil)
		if err := w.Sync(); err == nil {
			t.Fatal("Sync without a syncer succeeded")
		}
	})
}

func TestWriterBuffersUntilFlush(t *testing.T) {
	f := &failingFile{}
	w := NewWriter(f, nil)
	for range 100 {
		if err := w.Append(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if f.writes != 0 || w.Size() != 100*(HeaderLen+100) {
		t.Fatalf("%d writes before Flush, Size %d", f.writes, w.Size())
	}
	if err := w.Sync(); err != nil || f.writes != 1 || f.syncs != 1 {
		t.Fatalf("sync: %v, %d writes, %d syncs", err, f.writes, f.syncs)
	}
	// The buffer is bounded: a long run of appends without Flush writes
	// early.
	for range 2 * flushThreshold / 100 {
		if err := w.Append(make([]byte, 92)); err != nil {
			t.Fatal(err)
		}
	}
	if f.writes < 2 {
		t.Fatal("buffer grew past the flush threshold without writing")
	}
}

func TestAppendTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a 1 GiB slice (untouched)")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, nil)
	if err := w.Append(make([]byte, MaxPayload+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
	// Not sticky: the log is untouched.
	if err := w.Append([]byte("ok")); err != nil || w.Size() != HeaderLen+2 {
		t.Fatalf("append after rejection: %v, size %d", err, w.Size())
	}
}

func BenchmarkAppendFlush100(b *testing.B) {
	w := NewWriter(io.Discard, nil)
	p := make([]byte, 100)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if err := w.Append(p); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppend100(b *testing.B) {
	w := NewWriter(io.Discard, nil)
	p := make([]byte, 100)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if err := w.Append(p); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkRead100(b *testing.B) {
	payloads := make([][]byte, 10000)
	for i := range payloads {
		payloads[i] = make([]byte, 100)
	}
	l := buildLog(b, payloads)
	b.SetBytes(int64(len(l.data)))
	for b.Loop() {
		rd := NewReader(bytes.NewReader(l.data))
		for {
			if _, err := rd.Next(); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
