package server

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/kvstore/kv/codec"
	"github.com/kvstore/kv/store"
)

// RESP replies that never change.
var (
	respOK    = []byte("+OK\r\n")
	respPong  = []byte("+PONG\r\n")
	respNull  = []byte("$-1\r\n")
	respEmpty = []byte("*0\r\n")
)

func (s *Server) respCommands() []*command {
	return []*command{
		{name: "PING", minArgs: 1, maxArgs: 2, noAuth: true, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			if len(args) == 2 {
				s.emit(cs, codec.AppendBulk(nil, args[1]))
				return
			}
			s.emit(cs, respPong)
		}},
		{name: "ECHO", minArgs: 2, maxArgs: 2, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			s.emit(cs, codec.AppendBulk(nil, args[1]))
		}},
		{name: "QUIT", minArgs: 1, maxArgs: -1, noAuth: true, endsTx: true, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			s.emit(cs, respOK)
			cs.closing = true
		}},
		{name: "AUTH", minArgs: 2, maxArgs: 3, noAuth: true, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			s.emit(cs, s.respAuth(cs, "AUTH", args[1:]))
		}},
		// Transactions are not supported: MULTI opens one as in Redis, but
		// every command up to EXEC or DISCARD is refused without running
		// (dispatch), and EXEC then aborts it.
		{name: "MULTI", minArgs: 1, maxArgs: 1, endsTx: true, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			if cs.inMulti {
				s.refuse(cs, args, causeInvalid, "MULTI calls can not be nested")
				return
			}
			cs.inMulti, cs.multiRefused = true, 0
			s.emit(cs, respOK)
		}},
		{name: "EXEC", minArgs: 1, maxArgs: 1, endsTx: true, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			if !cs.inMulti {
				s.refuse(cs, args, causeInvalid, "EXEC without MULTI")
				return
			}
			cs.inMulti = false
			if cs.multiRefused == 0 {
				s.emit(cs, respEmpty) // an empty transaction
				return
			}
			s.emit(cs, s.appendRESPErr(nil, "EXEC", causeInvalid, errExecAbort))
		}},
		{name: "DISCARD", minArgs: 1, maxArgs: 1, endsTx: true, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			if !cs.inMulti {
				s.refuse(cs, args, causeInvalid, "DISCARD without MULTI")
				return
			}
			cs.inMulti = false
			s.emit(cs, respOK)
		}},
		{name: "HELLO", minArgs: 1, maxArgs: -1, noAuth: true, run: (*Server).respHello},
		{name: "SELECT", minArgs: 2, maxArgs: 2, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			if string(args[1]) != "0" {
				s.refuse(cs, args, causeInvalid, "DB index is out of range")
				return
			}
			s.emit(cs, respOK)
		}},
		{name: "GET", minArgs: 2, maxArgs: 2, class: classRead, run: (*Server).respGet, waitsInQueue: true},
		// STRLEN and TYPE: what redis-cli --bigkeys asks of each key.
		{name: "STRLEN", minArgs: 2, maxArgs: 2, class: classRead, run: (*Server).respStrlen, waitsInQueue: true},
		{name: "TYPE", minArgs: 2, maxArgs: 2, class: classRead, run: (*Server).respType, waitsInQueue: true},
		// MEMORY USAGE: what redis-cli --memkeys asks of each key.
		{name: "MEMORY", minArgs: 2, maxArgs: -1, class: classRead, run: (*Server).respMemory, waitsInQueue: true},
		{name: "SET", minArgs: 3, maxArgs: -1, class: classWrite, run: (*Server).respSet, keys: oneKey, coalesces: true},
		{name: "MSET", minArgs: 3, maxArgs: -1, class: classWrite, run: (*Server).respMSet, keys: pairKeys},
		{name: "DEL", minArgs: 2, maxArgs: -1, class: classWrite, run: (*Server).respDel, keys: allKeys, readsFirst: true},
		{name: "UNLINK", minArgs: 2, maxArgs: -1, class: classWrite, run: (*Server).respDel, keys: allKeys, readsFirst: true},
		{name: "EXISTS", minArgs: 2, maxArgs: -1, class: classRead, run: (*Server).respExists, multiKey: true},
		{name: "MGET", minArgs: 2, maxArgs: -1, class: classRead, run: (*Server).respMGet, multiKey: true},
		{name: "SCAN", minArgs: 2, maxArgs: -1, class: classRead, run: (*Server).respScan, ranges: true},
		// classRead: it counts the writes pipelined before it.
		{name: "DBSIZE", minArgs: 1, maxArgs: 1, class: classRead, run: func(s *Server, cs *conn, _ [][]byte, _ int64) {
			s.emit(cs, codec.AppendInt(nil, s.store.ApproxKeys()))
		}},
		{name: "INFO", minArgs: 1, maxArgs: -1, run: func(s *Server, cs *conn, args [][]byte, _ int64) {
			sections := make([]string, 0, len(args)-1)
			for _, a := range args[1:] {
				sections = append(sections, strings.ToLower(string(a)))
			}
			s.emit(cs, codec.AppendBulkString(nil, s.infoText(sections...)))
		}},
		{name: "COMMAND", minArgs: 1, maxArgs: -1, run: (*Server).respCommand},
		{name: "CONFIG", minArgs: 2, maxArgs: -1, run: (*Server).respConfig},
		{name: "CLIENT", minArgs: 2, maxArgs: -1, run: (*Server).respClient},
		{name: "FLUSHALL", minArgs: 1, maxArgs: 2, class: classBarrier, run: (*Server).respFlush},
		{name: "FLUSHDB", minArgs: 1, maxArgs: 2, class: classBarrier, run: (*Server).respFlush},
	}
}

// Errors of a transaction, which is never run.
const (
	errNotRunInTx = "command not run: MULTI/EXEC transactions are not supported by this store (EXEC or DISCARD ends the transaction)"
	errExecAbort  = "EXECABORT Transaction discarded because of previous errors: MULTI/EXEC transactions are not supported by this store"
)

// respAuth checks AUTH's arguments ([user] password) for command (AUTH or
// HELLO) and returns the reply.
func (s *Server) respAuth(cs *conn, command string, args [][]byte) []byte {
	pw := args[len(args)-1]
	if len(args) == 2 && string(args[0]) != "default" {
		return s.appendRESPErr(nil, command, causeNoAuth, "WRONGPASS invalid password")
	}
	// Without requirepass every password is accepted, as on the pipe
	// protocol: PROTOCOL.md allows only +OK and WRONGPASS (Redis would
	// answer an -ERR here).
	if !s.passwordOK(pw) {
		s.authFailed(cs)
		return s.appendRESPErr(nil, command, causeNoAuth, "WRONGPASS invalid password")
	}
	s.authenticate(cs)
	return respOK
}

// maxClientName bounds CLIENT SETNAME: a name is kept for the life of the
// connection (30 connections named with 30 MiB each held 1.6 GiB).
const maxClientName = 512

// clientNameError checks a connection name as Redis does (no spaces or
// special characters), and its length; "" means it is fine.
func clientNameError(name []byte) string {
	if len(name) > maxClientName {
		return fmt.Sprintf("Client names are limited to %d bytes", maxClientName)
	}
	for _, c := range name {
		if c < '!' || c > '~' {
			return "Client names cannot contain spaces, newlines or special characters."
		}
	}
	return ""
}

func (s *Server) respHello(cs *conn, args [][]byte, _ int64) {
	rest := args[1:]
	if len(rest) > 0 {
		v, err := strconv.Atoi(string(rest[0]))
		if err != nil {
			s.refuse(cs, args, causeInvalid, "Protocol version is not an integer or out of range")
			return
		}
		if v != 2 {
			// Not counted in kv_errors_total: go-redis opens every
			// connection with HELLO 3 and falls back on this answer, so
			// counting it made each new connection an error to alert on.
			s.emit(cs, codec.AppendError(nil, "NOPROTO sorry, this protocol version is not supported"))
			return
		}
		rest = rest[1:]
	}
	for len(rest) > 0 {
		switch strings.ToUpper(string(rest[0])) {
		case "AUTH":
			if len(rest) < 3 {
				s.refuse(cs, args, causeInvalid, "Syntax error in HELLO option 'auth'")
				return
			}
			if r := s.respAuth(cs, "HELLO", rest[1:3]); r[0] == '-' {
				s.emit(cs, r)
				return
			}
			rest = rest[3:]
		case "SETNAME":
			if len(rest) < 2 {
				s.refuse(cs, args, causeInvalid, "Syntax error in HELLO option 'setname'")
				return
			}
			if msg := clientNameError(rest[1]); msg != "" {
				s.refuse(cs, args, causeInvalid, msg)
				return
			}
			cs.name = string(rest[1])
			rest = rest[2:]
		default:
			s.refuse(cs, args, causeInvalid, "Syntax error in HELLO option '"+printable(rest[0])+"'")
			return
		}
	}
	if !cs.authed {
		s.emit(cs, s.appendRESPErr(nil, "HELLO", causeNoAuth, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"))
		return
	}
	out := codec.AppendArrayHeader(nil, 14)
	out = codec.AppendBulkString(out, "server")
	out = codec.AppendBulkString(out, "kvserver")
	out = codec.AppendBulkString(out, "version")
	out = codec.AppendBulkString(out, s.info.Version)
	out = codec.AppendBulkString(out, "proto")
	out = codec.AppendInt(out, 2)
	out = codec.AppendBulkString(out, "id")
	out = codec.AppendInt(out, int64(cs.id))
	out = codec.AppendBulkString(out, "mode")
	out = codec.AppendBulkString(out, s.info.Mode)
	out = codec.AppendBulkString(out, "role")
	out = codec.AppendBulkString(out, "master")
	out = codec.AppendBulkString(out, "modules")
	out = codec.AppendArrayHeader(out, 0)
	s.emit(cs, out)
}

func (s *Server) respGet(cs *conn, args [][]byte, start int64) {
	s.get(cs, args, start, respGetReply)
}

func (s *Server) respStrlen(cs *conn, args [][]byte, start int64) {
	s.get(cs, args, start, respStrlenReply)
}

func (s *Server) respType(cs *conn, args [][]byte, start int64) {
	s.get(cs, args, start, respTypeReply)
}

// respMemory serves MEMORY USAGE key [SAMPLES n]: the bytes of the key and
// its value (the engine's per-entry overhead is not counted), or a null
// bulk for a missing key, as Redis answers.
func (s *Server) respMemory(cs *conn, args [][]byte, start int64) {
	if !strings.EqualFold(string(args[1]), "USAGE") {
		s.refuse(cs, args, causeInvalid, "unknown subcommand '"+printable(args[1])+"'. Only MEMORY USAGE is supported.")
		return
	}
	if len(args) != 3 && (len(args) != 5 || !strings.EqualFold(string(args[3]), "SAMPLES")) {
		s.refuse(cs, args, causeInvalid, "syntax error")
		return
	}
	if len(args) == 5 {
		if n, err := strconv.Atoi(string(args[4])); err != nil || n < 0 {
			s.refuse(cs, args, causeInvalid, "value is not an integer or out of range")
			return
		}
	}
	if msg := s.checkKey(args[2]); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	keyLen := int64(len(args[2]))
	// get reads args[1]: the key, once MEMORY is dropped.
	s.get(cs, args[1:3], start, &readReply{
		found:   func(dst, v []byte) []byte { return codec.AppendInt(dst, keyLen+int64(len(v))) },
		missing: respNull,
	})
}

// Replies of the RESP single-key reads.
var (
	respGetReply    = &readReply{found: codec.AppendBulk, missing: respNull}
	respStrlenReply = &readReply{
		found:   func(dst, v []byte) []byte { return codec.AppendInt(dst, int64(len(v))) },
		missing: []byte(":0\r\n"),
	}
	respTypeReply = &readReply{
		found:   func(dst, _ []byte) []byte { return append(dst, "+string\r\n"...) },
		missing: []byte("+none\r\n"),
	}
)

func (s *Server) respSet(cs *conn, args [][]byte, start int64) {
	if len(args) > 3 {
		s.refuse(cs, args, causeInvalid, "SET options are not supported by this store (EX, PX, NX, XX, KEEPTTL, GET)")
		return
	}
	if msg := s.checkKey(args[1]); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	s.writeOne(cs, s.cmdPut, args[1], args[2], false, start, respOK)
}

func (s *Server) respMSet(cs *conn, args [][]byte, start int64) {
	pairs := args[1:]
	if len(pairs)%2 != 0 {
		s.refuse(cs, args, causeArity, "wrong number of arguments for 'mset' command")
		return
	}
	if msg := s.checkKeys(pairs, 2); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	s.write(cs, newBatchPairs(pairs), s.cmdBatch, start, respOK)
}

// multiGet reads keys and calls done once with every result (vals[i] ==
// nil and found[i] == false for an absent key). keys must stay valid until
// done runs.
//
// With keepBytes < 0 no value is kept (EXISTS and DEL only need found).
// Otherwise, once the values kept add up to more than keepBytes, the rest
// are dropped as they arrive and done gets errReplyTooLarge: a 1 KB MGET of
// one 4 MiB key repeated 500 times must not assemble a 2 GB reply.
//
// At most multiGetWindow reads are out at once: a read that needs the disk
// gets a goroutine of its own (store.Local), and a cold MGET of a million
// keys must not start a million of them.
//
// With cs non-nil, the values kept count in cs.owed from their arrival,
// so that the connection's output limits see them while the other reads
// wait for the disk (a client pipelining MGETs of cold keys could hold
// max_output_bytes per MGET, uncounted); a value that would take cs.owed
// past max_output_bytes fails the command with errOutputFull. done, given
// the values, takes their count over (heldBytes, finishHeld); given an
// error, it has none.
func (s *Server) multiGet(cs *conn, keys [][]byte, keepBytes int64, done func(vals [][]byte, found []bool, err error)) {
	m := &multiGet{keys: keys, keepBytes: keepBytes, done: done, found: make([]bool, len(keys))}
	if keepBytes >= 0 {
		m.vals = make([][]byte, len(keys))
		if cs != nil {
			m.owed, m.owedLimit = &cs.owed, int64(s.cfg.MaxOutputBytes)
		}
	}
	if len(keys) == 0 {
		done(m.vals, m.found, nil)
		return
	}
	m.left.Store(int64(len(keys)))
	m.pump(s)
}

// multiGetWindow bounds the reads of one multi-key command in flight.
const multiGetWindow = 64

// maxMultiReads bounds a connection's multi-key reads (MGET, EXISTS) out
// at the store at once, so its reads out are at most maxAsyncReads, as for
// single-key reads: each MGET of cold keys has up to multiGetWindow reads
// out, each with a goroutine (store.Local), and 4096 pipelined ones
// started 262k goroutines for one connection. Later ones wait unparsed
// (admit).
const maxMultiReads = maxAsyncReads / multiGetWindow

// errReplyTooLarge is a multi-key read whose values add up to more than
// max_output_bytes; errOutputFull one whose values, added to the replies
// its connection holds (multiGet), would.
var (
	errReplyTooLarge = errors.New("reply too large (values add up to more than max_output_bytes)")
	errOutputFull    = errors.New("reply too large (values and the replies not yet read add up to more than max_output_bytes)")
)

type multiGet struct {
	keys      [][]byte
	vals      [][]byte
	found     []bool
	keepBytes int64
	done      func(vals [][]byte, found []bool, err error)

	next     atomic.Int64 // index of the next key to read
	inflight atomic.Int64 // reads issued and not completed
	pumping  atomic.Bool  // a goroutine is issuing reads
	left     atomic.Int64 // reads not completed
	kept     atomic.Int64 // bytes of the values kept
	firstErr atomic.Pointer[error]

	// owed, if set, is the connection's count the values kept are
	// charged to, up to owedLimit (multiGet).
	owed      *atomic.Int64
	owedLimit int64
}

// pump issues reads while fewer than multiGetWindow are out. Completions
// call it again; one that runs inline, inside store.Get, finds pumping set
// and returns, so the issuing stays a loop, never a recursion.
func (m *multiGet) pump(s *Server) {
	n := int64(len(m.keys))
	for m.pumping.CompareAndSwap(false, true) {
		for m.inflight.Load() < multiGetWindow {
			i := m.next.Add(1) - 1
			if i >= n {
				break
			}
			m.inflight.Add(1)
			s.store.Get(m.keys[i], func(v []byte, err error) { m.complete(s, int(i), v, err) })
		}
		m.pumping.Store(false)
		// A completion that came after the check above may have found
		// pumping set and left the issuing to this goroutine.
		if m.next.Load() >= n || m.inflight.Load() >= multiGetWindow {
			return
		}
	}
}

func (m *multiGet) complete(s *Server, i int, v []byte, err error) {
	switch {
	case err == nil:
		m.found[i] = true
		if m.vals != nil {
			switch n := int64(len(v)); {
			case m.kept.Add(n) > m.keepBytes:
				m.firstErr.CompareAndSwap(nil, &errReplyTooLarge)
			case m.owed != nil && m.owed.Add(n) > m.owedLimit && m.owedLimit > 0:
				m.owed.Add(-n)
				m.firstErr.CompareAndSwap(nil, &errOutputFull)
			default:
				m.vals[i] = v
			}
		}
	case err == store.ErrNotFound:
	default:
		m.firstErr.CompareAndSwap(nil, &err)
	}
	m.inflight.Add(-1)
	if m.left.Add(-1) == 0 {
		if e := m.firstErr.Load(); e != nil {
			if m.owed != nil {
				m.owed.Add(-int64(heldBytes(m.vals)))
			}
			m.done(nil, nil, *e)
			return
		}
		m.done(m.vals, m.found, nil)
		return
	}
	m.pump(s)
}

// heldBytes is the size of the values an MGET kept (multiGet).
func heldBytes(vals [][]byte) int {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	return n
}

// copyKeys copies keys that must outlive the current input buffer.
func copyKeys(keys [][]byte) [][]byte {
	n := 0
	for _, k := range keys {
		n += len(k)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(keys))
	for i, k := range keys {
		buf = append(buf, k...)
		out[i] = buf[len(buf)-len(k):]
	}
	return out
}

func (s *Server) respExists(cs *conn, args [][]byte, start int64) {
	if msg := s.checkKeys(args[1:], 1); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	p := s.newPending(cs, classRead, s.cmdGet, start)
	s.multiGet(nil, copyKeys(args[1:]), -1, func(_ [][]byte, found []bool, err error) {
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		s.finish(p, codec.AppendInt(nil, int64(countTrue(found))))
	})
	s.settle(p)
	s.countMultiRead(cs, p)
}

func (s *Server) respMGet(cs *conn, args [][]byte, start int64) {
	if msg := s.checkKeys(args[1:], 1); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	p := s.newPending(cs, classRead, s.cmdGet, start)
	s.multiGet(cs, copyKeys(args[1:]), int64(s.cfg.MaxOutputBytes), func(vals [][]byte, found []bool, err error) {
		if errors.Is(err, errReplyTooLarge) || errors.Is(err, errOutputFull) {
			s.finish(p, s.appendErr(cs, nil, "MGET", causeLimit, err.Error()))
			return
		}
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		out := codec.AppendArrayHeader(nil, len(vals))
		for i, v := range vals {
			if found[i] {
				out = codec.AppendBulk(out, v)
			} else {
				out = codec.AppendNull(out)
			}
		}
		s.finishHeld(p, out, int64(heldBytes(vals)))
	})
	s.settle(p)
	s.countMultiRead(cs, p)
}

// countMultiRead counts p, a multi-key read just handed to the store, in
// cs.multiReads while it is out (maxMultiReads), and has the output check
// count the values it keeps as they arrive from other goroutines.
func (s *Server) countMultiRead(cs *conn, p *pending) {
	if p.done {
		return // answered on the spot
	}
	p.multiRead = true
	cs.multiReads++
	s.watchOutput(cs)
}

// respDel reads the keys first (DEL replies how many existed), then deletes
// them in one atomic batch. The count is taken just before the delete, not
// atomically with it: a concurrent writer can make it off by that write.
func (s *Server) respDel(cs *conn, args [][]byte, start int64) {
	if msg := s.checkKeys(args[1:], 1); msg != "" {
		s.refuse(cs, args, causeInvalid, msg)
		return
	}
	keys := copyKeys(args[1:])
	p := s.newPending(cs, classWrite, s.cmdDelete, start)
	p.readsFirst = true
	s.multiGet(nil, keys, -1, func(_ [][]byte, found []bool, err error) {
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		// Only the keys found get a tombstone: one for a missing key would
		// change nothing but DBSIZE's estimate.
		existing := foundKeys(keys, found)
		reply := codec.AppendInt(nil, int64(len(existing)))
		if len(existing) == 0 {
			s.finish(p, reply)
			return
		}
		b := newDeleteBatch(existing)
		size := int64(b.Size())
		s.writing.Add(size)
		s.store.Write(b, func(err error) {
			s.writing.Add(-size)
			s.finishOK(p, cs, err, reply)
		})
	})
	s.settle(p)
}

// foundKeys returns the distinct keys found: DEL k k deletes one key.
func foundKeys(keys [][]byte, found []bool) [][]byte {
	var out [][]byte
	seen := make(map[string]struct{}, len(keys))
	for i, k := range keys {
		if _, dup := seen[string(k)]; found[i] && !dup {
			seen[string(k)] = struct{}{}
			out = append(out, k)
		}
	}
	return out
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// respScan pages through the keyspace in key order. Redis clients parse the
// cursor as an unsigned integer, so the position (a key) is kept in a
// server-side cursor table and the client sees its number.
func (s *Server) respScan(cs *conn, args [][]byte, start int64) {
	cursor, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil {
		s.refuse(cs, args, causeInvalid, "invalid cursor")
		return
	}
	var pattern []byte
	count := 10
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			s.refuse(cs, args, causeInvalid, "syntax error")
			return
		}
		switch strings.ToUpper(string(args[i])) {
		case "MATCH":
			if len(args[i+1]) > maxGlobPattern {
				s.refuse(cs, args, causeInvalid, fmt.Sprintf("pattern too long (max %d bytes)", maxGlobPattern))
				return
			}
			pattern = bytes.Clone(args[i+1])
		case "COUNT":
			n, err := strconv.Atoi(string(args[i+1]))
			if err != nil || n <= 0 {
				s.refuse(cs, args, causeInvalid, "value is not an integer or out of range")
				return
			}
			count = n
		case "TYPE":
			// Every key is a string.
			if !strings.EqualFold(string(args[i+1]), "string") {
				s.emit(cs, scanReply(0, nil))
				return
			}
		default:
			s.refuse(cs, args, causeInvalid, "syntax error")
			return
		}
	}
	var from []byte
	if cursor != 0 {
		k, ok := s.cursors.get(cursor)
		if !ok {
			s.refuse(cs, args, causeInvalid, "invalid cursor (expired or never issued); restart from 0")
			return
		}
		from = k
	}
	limit := s.rangeLimit(count)
	p := s.newPending(cs, classRead, s.cmdRange, start)
	s.store.Range(from, nil, limit, func(kvs []store.KV, err error) {
		if errors.Is(err, store.ErrRangeTruncated) {
			// Big values: fewer keys this time (SCAN may return fewer than
			// COUNT), and the cursor goes on after the last.
			err, limit = nil, len(kvs)
		}
		if err != nil {
			s.finish(p, s.storeErr(cs, nil, p.cmd, err))
			return
		}
		if pattern != nil && scanMatchCost(kvs, pattern) > scanMatchInline {
			// The callback may run on the event loop (a standalone range
			// answered from memory), where one SCAN matching a 1 KiB
			// pattern against 64 KiB keys held every other connection of
			// the loop 174 ms: match on a goroutine of its own instead.
			pattern := bytes.Clone(pattern) // it aliases the request's buffer
			go func() { s.finish(p, s.scanPage(kvs, limit, pattern, cursor)) }()
			return
		}
		s.finish(p, s.scanPage(kvs, limit, pattern, cursor))
	})
	s.settle(p)
}

// scanPage is the reply to a SCAN continuing cursor that read kvs (limit
// asked): the keys matching pattern (nil: all) and the next cursor. Past
// scanMatchBudget of matching the page ends early (SCAN may return fewer
// keys than COUNT) and the cursor resumes after the last key examined.
func (s *Server) scanPage(kvs []store.KV, limit int, pattern []byte, cursor uint64) []byte {
	var keys [][]byte
	budget := scanMatchBudget
	for i, kv := range kvs {
		if pattern != nil {
			cost := (len(kv.Key) + 1) * (len(pattern) + 1)
			if i > 0 && cost > budget {
				kvs = kvs[:i]
				limit = i
				break
			}
			budget -= cost
		}
		if pattern == nil || globMatch(pattern, kv.Key) {
			keys = append(keys, kv.Key)
		}
	}
	var next uint64
	if len(kvs) == limit && limit > 0 {
		last := kvs[len(kvs)-1].Key
		next = s.cursors.put(cursor, append(bytes.Clone(last), 0))
	}
	return scanReply(next, keys)
}

// scanMatchCost bounds the glob work of matching pattern against kvs'
// keys (the matcher's worst case, len(key)·len(pattern) steps each).
func scanMatchCost(kvs []store.KV, pattern []byte) int {
	cost := 0
	for _, kv := range kvs {
		cost += (len(kv.Key) + 1) * (len(pattern) + 1)
	}
	return cost
}

// scanMatchBudget bounds the glob work of one SCAN call (in steps of
// len(key)·len(pattern), the matcher's worst case): about 10 ms, more for
// its first key, which is always examined. Past scanMatchInline (~0.1 ms)
// the matching leaves the event loop.
const (
	scanMatchBudget = 16 << 20
	scanMatchInline = 128 << 10
)

// maxConfigPatterns bounds the patterns of one CONFIG GET: each is matched
// against every parameter on the event loop.
const maxConfigPatterns = 1024

func scanReply(next uint64, keys [][]byte) []byte {
	out := codec.AppendArrayHeader(nil, 2)
	out = codec.AppendBulkString(out, strconv.FormatUint(next, 10))
	out = codec.AppendArrayHeader(out, len(keys))
	for _, k := range keys {
		out = codec.AppendBulk(out, k)
	}
	return out
}

func (s *Server) respCommand(cs *conn, args [][]byte, _ int64) {
	if len(args) == 1 {
		s.emit(cs, respEmpty)
		return
	}
	switch strings.ToUpper(string(args[1])) {
	case "COUNT":
		s.emit(cs, codec.AppendInt(nil, int64(len(s.respTable))))
	case "DOCS", "INFO", "LIST":
		s.emit(cs, respEmpty)
	default:
		s.refuse(cs, args, causeInvalid, "unknown subcommand '"+printable(args[1])+"'. Try COMMAND HELP.")
	}
}

func (s *Server) respConfig(cs *conn, args [][]byte, _ int64) {
	if !strings.EqualFold(string(args[1]), "GET") {
		s.refuse(cs, args, causeInvalid, "CONFIG "+strings.ToUpper(printable(args[1]))+" is not supported; configuration is read from the TOML file at start-up")
		return
	}
	if len(args) < 3 {
		s.refuse(cs, args, causeArity, "wrong number of arguments for 'config|get' command")
		return
	}
	if len(args)-2 > maxConfigPatterns {
		s.refuse(cs, args, causeInvalid, fmt.Sprintf("too many patterns (max %d)", maxConfigPatterns))
		return
	}
	pats := make([][]byte, len(args)-2)
	for i, pat := range args[2:] {
		if len(pat) > maxGlobPattern {
			s.refuse(cs, args, causeInvalid, fmt.Sprintf("pattern too long (max %d bytes)", maxGlobPattern))
			return
		}
		pats[i] = bytes.ToLower(pat)
	}
	params := s.configParams()
	var out []byte
	n := 0
	for _, kv := range params {
		for _, pat := range pats {
			if globMatch(pat, []byte(kv[0])) {
				out = codec.AppendBulkString(out, kv[0])
				out = codec.AppendBulkString(out, kv[1])
				n++
				break
			}
		}
	}
	s.emit(cs, append(codec.AppendArrayHeader(nil, 2*n), out...))
}

func (s *Server) respClient(cs *conn, args [][]byte, _ int64) {
	switch strings.ToUpper(string(args[1])) {
	case "ID":
		s.emit(cs, codec.AppendInt(nil, int64(cs.id)))
	case "SETNAME":
		if len(args) != 3 {
			s.refuse(cs, args, causeArity, "wrong number of arguments for 'client|setname' command")
			return
		}
		if msg := clientNameError(args[2]); msg != "" {
			s.refuse(cs, args, causeInvalid, msg)
			return
		}
		cs.name = string(args[2])
		s.emit(cs, respOK)
	case "GETNAME":
		if cs.name == "" {
			s.emit(cs, respNull)
			return
		}
		s.emit(cs, codec.AppendBulkString(nil, cs.name))
	case "SETINFO":
		s.emit(cs, respOK)
	default:
		s.refuse(cs, args, causeInvalid, "unknown subcommand '"+printable(args[1])+"'. Try CLIENT HELP.")
	}
}

func (s *Server) respFlush(cs *conn, args [][]byte, start int64) {
	if !s.cfg.AllowFlush {
		s.refuse(cs, args, causeInvalid, "FLUSHALL/FLUSHDB are disabled; set server.allow_flush = true to enable them")
		return
	}
	// ASYNC and SYNC only say how Redis frees memory; anything else is a
	// mistake worth reporting before deleting everything.
	if len(args) == 2 && !strings.EqualFold(string(args[1]), "ASYNC") && !strings.EqualFold(string(args[1]), "SYNC") {
		s.refuse(cs, args, causeInvalid, "syntax error")
		return
	}
	// A barrier: the store's Clear deletes what it finds, so it is not
	// ordered with writes still in flight on this connection (they could
	// survive it, or be deleted after a later write of the same key).
	p := s.newPending(cs, classBarrier, s.cmdAdmin, start)
	s.store.Clear(func(err error) { s.finishOK(p, cs, err, respOK) })
	s.settle(p)
}
