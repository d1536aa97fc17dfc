package bench

import (
	"fmt"
	"strings"
)

// Op is one kind of request the generator sends.
type Op uint8

// The operations, in the order reports list them.
const (
	OpPut Op = iota
	OpGet
	OpDelete
	OpRange
	OpBatch
	OpPing
	numOps
)

var opNames = [numOps]string{"put", "get", "delete", "range", "batch", "ping"}

// Ops lists every operation in report order.
func Ops() []Op { return []Op{OpPut, OpGet, OpDelete, OpRange, OpBatch, OpPing} }

// String returns the name used on the command line and in reports.
func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// ParseOp reads an operation name. The Redis spellings set and del are
// accepted as well, so a redis-benchmark habit does not fail.
func ParseOp(s string) (Op, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "put", "set":
		return OpPut, nil
	case "get":
		return OpGet, nil
	case "delete", "del":
		return OpDelete, nil
	case "range", "scan":
		return OpRange, nil
	case "batch", "mset":
		return OpBatch, nil
	case "ping":
		return OpPing, nil
	}
	return 0, fmt.Errorf("unknown operation %q (want put, get, delete, range, batch or ping)", s)
}

// writes reports whether the operation changes stored data.
func (o Op) writes() bool { return o == OpPut || o == OpDelete || o == OpBatch }
