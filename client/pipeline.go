package client

import (
	"context"
	"errors"
	"strconv"
)

// Pipeline queues requests and sends them in one write when Exec is
// called; the replies come back in request order on one connection. A
// Pipeline is not safe for concurrent use; it may be reused after Exec.
type Pipeline struct {
	c   *Client
	buf []byte // encoded requests
	ops []pipeOp
}

type pipeOp struct {
	kind opKind
	cmd  string
	n    int // BATCH: pairs sent
}

type opKind uint8

const (
	opOK opKind = iota // reply must be OK (PUT, DELETE)
	opGet
	opBatch
	opRaw
)

// Result is the outcome of one pipelined request.
type Result struct {
	// Value is the value a Get found.
	Value []byte
	// Fields are the reply's fields for a Do request.
	Fields [][]byte
	// Err is this request's error: a *ServerError, ErrNotFound for a Get
	// that found nothing, or nil.
	Err error
}

// Pipeline returns an empty pipeline on c.
func (c *Client) Pipeline() *Pipeline { return &Pipeline{c: c} }

// Len returns the number of queued requests.
func (p *Pipeline) Len() int { return len(p.ops) }

// Put queues a PUT. The arguments are encoded at once and may be reused.
func (p *Pipeline) Put(key, value []byte) {
	p.buf = appendRequest(p.buf, "PUT", key, value)
	p.ops = append(p.ops, pipeOp{kind: opOK, cmd: "PUT"})
}

// Get queues a GET; its Result carries Value or ErrNotFound.
func (p *Pipeline) Get(key []byte) {
	p.buf = appendRequest(p.buf, "GET", key)
	p.ops = append(p.ops, pipeOp{kind: opGet, cmd: "GET"})
}

// Delete queues a DELETE.
func (p *Pipeline) Delete(key []byte) {
	p.buf = appendRequest(p.buf, "DELETE", key)
	p.ops = append(p.ops, pipeOp{kind: opOK, cmd: "DELETE"})
}

// Batch queues an atomic BATCH of kvs; an empty batch is not sent and its
// Result is empty.
func (p *Pipeline) Batch(kvs []KV) {
	if len(kvs) == 0 {
		p.ops = append(p.ops, pipeOp{kind: opBatch, cmd: "BATCH", n: 0})
		return
	}
	p.buf = append(p.buf, "BATCH"...)
	for _, kv := range kvs {
		p.buf = append(p.buf, '|')
		p.buf = appendEscaped(p.buf, kv.Key)
		p.buf = append(p.buf, '|')
		p.buf = appendEscaped(p.buf, kv.Value)
	}
	p.buf = append(p.buf, '\n')
	p.ops = append(p.ops, pipeOp{kind: opBatch, cmd: "BATCH", n: len(kvs)})
}

// Do queues a raw request; its Result carries the reply's Fields.
func (p *Pipeline) Do(fields ...[]byte) {
	if len(fields) == 0 || len(fields[0]) == 0 {
		// Nothing is sent (Exec reports "no command"): a line with an empty
		// command would get a reply nobody expects.
		p.ops = append(p.ops, pipeOp{kind: opRaw})
		return
	}
	p.buf = appendFields(p.buf, fields)
	p.ops = append(p.ops, pipeOp{kind: opRaw, cmd: string(fields[0])})
}

// Exec sends every queued request in one write, reads every reply, and
// empties the pipeline. It returns one Result per request, in order, and
// the first error among them other than ErrNotFound (a miss is an answer,
// not a failure). If the exchange itself fails (I/O error, timeout,
// cancellation) it returns that error and nil results: any of the requests
// may or may not have been applied.
func (p *Pipeline) Exec(ctx context.Context) ([]Result, error) {
	ops := p.ops
	buf := p.buf
	p.ops, p.buf = p.ops[:0], p.buf[:0]
	if len(ops) == 0 {
		return nil, nil
	}

	results := make([]Result, len(ops))
	// Requests that send nothing (an empty batch) get no reply; map each
	// reply index to its op.
	sent := make([]int, 0, len(ops))
	for i, op := range ops {
		if op.kind == opBatch && op.n == 0 {
			continue
		}
		if op.kind == opRaw && op.cmd == "" {
			// An empty request line gets no reply either.
			results[i].Err = errors.New("kv do: no command")
			continue
		}
		sent = append(sent, i)
	}
	if len(sent) == 0 {
		return results, firstError(results)
	}

	quit := false
	for _, i := range sent {
		quit = quit || isQuit(ops[i].cmd)
	}
	cmd := "pipeline of " + strconv.Itoa(len(sent))
	if quit {
		cmd = "QUIT" // the server closes the connection after it
	}
	err := p.c.roundTrip(ctx, cmd, func(b []byte) []byte { return append(b, buf...) }, len(sent),
		func(j int, f [][]byte) error {
			i := sent[j]
			r := &results[i]
			switch op := ops[i]; op.kind {
			case opOK:
				r.Err = expect(op.cmd, f, "OK")
			case opGet:
				r.Value, r.Err = parseGet(f)
			case opBatch:
				if r.Err = replyError(f); r.Err == nil &&
					(len(f) != 2 || string(f[0]) != "OK" || string(f[1]) != strconv.Itoa(op.n)) {
					r.Err = unexpected("BATCH", f)
				}
			case opRaw:
				if r.Err = replyError(f); r.Err == nil {
					r.Fields = copyFields(f)
				}
			}
			if r.Err != nil && !inStep(r.Err) {
				return r.Err // malformed: abandon the connection
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return results, firstError(results)
}

func firstError(results []Result) error {
	for _, r := range results {
		if r.Err != nil && !errors.Is(r.Err, ErrNotFound) {
			return r.Err
		}
	}
	return nil
}
