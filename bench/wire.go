package bench

import (
	"bytes"
	"strconv"

	"github.com/kvstore/kv/codec"
)

// replyKind is a reply reduced to what the generator checks; both
// protocols map onto it, so the client loop does not care which it speaks.
type replyKind uint8

const (
	replySkip     replyKind = iota // nothing to match (an empty pipe line)
	replyOK                        // OK, +OK
	replyValue                     // VALUE|v, a bulk
	replyNotFound                  // NOT_FOUND, a null bulk
	replyCount                     // OK|n, :n
	replyRange                     // RANGE|n|..., SCAN's two-element array
	replyPong                      // PONG, +PONG
	replyError                     // ERROR|msg, -msg
	replyOther                     // anything else
)

var replyKindNames = [...]string{"skip", "OK", "value", "not-found", "count", "range", "PONG", "error", "other"}

func (k replyKind) String() string {
	if int(k) < len(replyKindNames) {
		return replyKindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// reply is one decoded reply; val aliases the read buffer until the next decode.
type reply struct {
	kind replyKind
	val  []byte // the value, or the error text
}

// accepts reports whether rep is a successful reply to op.
func accepts(op Op, k replyKind) bool {
	switch op {
	case OpPut:
		return k == replyOK
	case OpGet:
		return k == replyValue || k == replyNotFound
	case OpDelete, OpBatch:
		return k == replyOK || k == replyCount
	case OpRange:
		return k == replyRange
	case OpPing:
		return k == replyPong
	}
	return false
}

// wire encodes requests and decodes replies of one protocol for one
// connection. Encoders append to the caller's buffer and never allocate
// beyond growing it.
type wire interface {
	appendPut(dst, key, val []byte) []byte
	appendGet(dst, key []byte) []byte
	appendDelete(dst, key []byte) []byte
	appendRange(dst, start []byte) []byte
	appendBatch(dst []byte, kvs [][]byte) []byte
	appendPing(dst []byte) []byte
	appendAuth(dst []byte, password string) []byte
	decode(buf []byte) (reply, int, error)
	reset()
}

func newWire(p Proto, rangeLimit int) wire {
	limit := []byte(strconv.Itoa(rangeLimit))
	if p == ProtoRESP {
		return &respWire{dec: codec.NewReplyDecoder(codec.ReplyLimits(0)), limit: limit}
	}
	return &pipeWire{dec: codec.NewPipeDecoder(codec.ReplyLimits(0)), limit: limit}
}

var (
	pipePut    = []byte("PUT")
	pipeGet    = []byte("GET")
	pipeDelete = []byte("DELETE")
	pipeRange  = []byte("RANGE")
	pipeBatch  = []byte("BATCH")
	pipePing   = []byte("PING")
	pipeAuth   = []byte("AUTH")

	pipeOK       = []byte("OK")
	pipeValue    = []byte("VALUE")
	pipeNotFound = []byte("NOT_FOUND")
	pipeRangeRep = []byte("RANGE")
	pipePong     = []byte("PONG")
	pipeError    = []byte("ERROR")
)

// pipeWire speaks the pipe protocol: PUT|k|v, GET|k, DELETE|k,
// RANGE|start||limit (no upper bound), BATCH|k1|v1|..., PING.
type pipeWire struct {
	dec   *codec.PipeDecoder
	limit []byte
	args  [][]byte
}

func (w *pipeWire) appendPut(dst, key, val []byte) []byte {
	return codec.AppendPipe(dst, pipePut, key, val)
}

func (w *pipeWire) appendGet(dst, key []byte) []byte { return codec.AppendPipe(dst, pipeGet, key) }

func (w *pipeWire) appendDelete(dst, key []byte) []byte {
	return codec.AppendPipe(dst, pipeDelete, key)
}

func (w *pipeWire) appendRange(dst, start []byte) []byte {
	return codec.AppendPipe(dst, pipeRange, start, nil, w.limit)
}

func (w *pipeWire) appendBatch(dst []byte, kvs [][]byte) []byte {
	w.args = append(append(w.args[:0], pipeBatch), kvs...)
	return codec.AppendPipe(dst, w.args...)
}

func (w *pipeWire) appendPing(dst []byte) []byte { return codec.AppendPipe(dst, pipePing) }

func (w *pipeWire) appendAuth(dst []byte, password string) []byte {
	return codec.AppendPipe(dst, pipeAuth, []byte(password))
}

func (w *pipeWire) reset() { w.dec.Reset() }

func (w *pipeWire) decode(buf []byte) (reply, int, error) {
	f, n, err := w.dec.Decode(buf)
	if err != nil || n == 0 {
		return reply{}, n, err
	}
	if len(f) == 0 {
		return reply{kind: replySkip}, n, nil
	}
	switch {
	case bytes.Equal(f[0], pipeOK):
		if len(f) == 1 {
			return reply{kind: replyOK}, n, nil
		}
		return reply{kind: replyCount}, n, nil
	case bytes.Equal(f[0], pipeValue) && len(f) == 2:
		return reply{kind: replyValue, val: f[1]}, n, nil
	case bytes.Equal(f[0], pipeNotFound) && len(f) == 1:
		return reply{kind: replyNotFound}, n, nil
	case bytes.Equal(f[0], pipeRangeRep) && len(f) >= 2:
		return reply{kind: replyRange}, n, nil
	case bytes.Equal(f[0], pipePong):
		return reply{kind: replyPong}, n, nil
	case bytes.Equal(f[0], pipeError):
		var msg []byte
		if len(f) > 1 {
			msg = f[1]
		}
		return reply{kind: replyError, val: msg}, n, nil
	}
	return reply{kind: replyOther, val: f[0]}, n, nil
}

var (
	respSet   = []byte("SET")
	respGet   = []byte("GET")
	respDel   = []byte("DEL")
	respScan  = []byte("SCAN")
	respZero  = []byte("0")
	respCount = []byte("COUNT")
	respMSet  = []byte("MSET")
	respPing  = []byte("PING")
	respAuth  = []byte("AUTH")

	respArray = []byte("(array)")
)

// respWire speaks RESP2 as redis-benchmark does: SET, GET, DEL, MSET, PING,
// and for range SCAN 0 COUNT n, the nearest thing Redis has to a bounded
// range read (it walks n hash buckets from the start, not a key range).
type respWire struct {
	dec   *codec.ReplyDecoder
	limit []byte
	args  [][]byte
}

func (w *respWire) appendPut(dst, key, val []byte) []byte {
	return codec.AppendRESPCommand(dst, respSet, key, val)
}

func (w *respWire) appendGet(dst, key []byte) []byte {
	return codec.AppendRESPCommand(dst, respGet, key)
}

func (w *respWire) appendDelete(dst, key []byte) []byte {
	return codec.AppendRESPCommand(dst, respDel, key)
}

func (w *respWire) appendRange(dst, _ []byte) []byte {
	return codec.AppendRESPCommand(dst, respScan, respZero, respCount, w.limit)
}

func (w *respWire) appendBatch(dst []byte, kvs [][]byte) []byte {
	w.args = append(append(w.args[:0], respMSet), kvs...)
	return codec.AppendRESPCommand(dst, w.args...)
}

func (w *respWire) appendPing(dst []byte) []byte { return codec.AppendRESPCommand(dst, respPing) }

func (w *respWire) appendAuth(dst []byte, password string) []byte {
	return codec.AppendRESPCommand(dst, respAuth, []byte(password))
}

func (w *respWire) reset() { w.dec.Reset() }

func (w *respWire) decode(buf []byte) (reply, int, error) {
	r, n, err := w.dec.Decode(buf)
	if err != nil || n == 0 {
		return reply{}, n, err
	}
	switch r.Type {
	case '+':
		switch {
		case bytes.Equal(r.Str, pipeOK):
			return reply{kind: replyOK}, n, nil
		case bytes.Equal(r.Str, pipePong):
			return reply{kind: replyPong}, n, nil
		}
	case '-':
		return reply{kind: replyError, val: r.Str}, n, nil
	case ':':
		return reply{kind: replyCount}, n, nil
	case '$':
		if r.Null {
			return reply{kind: replyNotFound}, n, nil
		}
		return reply{kind: replyValue, val: r.Str}, n, nil
	case '*':
		if !r.Null && len(r.Elems) == 2 && r.Elems[1].Type == '*' {
			return reply{kind: replyRange}, n, nil
		}
		return reply{kind: replyOther, val: respArray}, n, nil
	}
	return reply{kind: replyOther, val: r.Str}, n, nil
}
