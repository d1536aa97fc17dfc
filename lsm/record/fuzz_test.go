package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	"github.com/kvstore/kv/lsm/internal/base"
)

// fuzzSeeds are logs in each interesting state.
func fuzzSeeds(t testing.TB) [][]byte {
	valid := buildLog(t, [][]byte{[]byte("first"), {}, bytes.Repeat([]byte{0xab}, 40)})
	corrupt := bytes.Clone(valid.data)
	corrupt[valid.starts[1]+2] ^= 0x10
	huge := bytes.Clone(valid.data)
	binary.LittleEndian.PutUint32(huge[valid.starts[1]+4:], 0xfffffff0)
	return [][]byte{
		nil,
		valid.data,
		valid.data[:len(valid.data)-3], // torn payload
		valid.data[:valid.starts[2]+5], // torn header
		append(bytes.Clone(valid.data), make([]byte, 20)...), // zero tail
		corrupt, // damage in the middle
		huge,    // impossible length in the middle
	}
}

// FuzzReader checks that the Reader never panics, returns only records
// whose checksum verifies (recomputed here independently), and classifies
// the end of the log exactly as the package comment defines it.
func FuzzReader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	castagnoli := crc32.MakeTable(crc32.Castagnoli)
	f.Fuzz(func(t *testing.T, data []byte) {
		rd := NewReader(bytes.NewReader(data))
		var off int64
		for {
			p, err := rd.Next()
			if err != nil {
				if rd.Offset() != off {
					t.Fatalf("Offset() = %d after error, last record ended at %d", rd.Offset(), off)
				}
				rest := data[off:]
				switch {
				case err == io.EOF:
					if len(rest) != 0 {
						t.Fatalf("io.EOF with %d bytes left", len(rest))
					}
				case errors.Is(err, ErrTornTail):
					if len(rest) == 0 || (len(rest) <= 4<<10 && bruteIntact(rest, 1)) {
						t.Fatalf("torn tail reported, but an intact record follows offset %d: %v", off, err)
					}
				case errors.Is(err, base.ErrCorruption):
					if len(rest) <= 4<<10 && !bruteIntact(rest, 1) {
						t.Fatalf("corruption reported, but no intact record follows offset %d: %v", off, err)
					}
				default:
					t.Fatalf("unexpected error %v", err)
				}
				if _, again := rd.Next(); again != err {
					t.Fatalf("error not sticky: %v then %v", err, again)
				}
				return
			}
			end := rd.Offset()
			if end <= off || end > int64(len(data)) {
				t.Fatalf("Offset() moved from %d to %d (log is %d bytes)", off, end, len(data))
			}
			rec := data[off:end]
			n := binary.LittleEndian.Uint32(rec[4:8])
			sum := crc32.Checksum(rec[4:], castagnoli)
			masked := (sum>>15 | sum<<17) + 0xa282ead8
			if int(n) != len(rec)-HeaderLen || binary.LittleEndian.Uint32(rec) != masked || !bytes.Equal(p, rec[HeaderLen:]) {
				t.Fatalf("returned a record at %d that does not verify", off)
			}
			off = end
		}
	})
}
