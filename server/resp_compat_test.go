package server

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/codec"
)

// readRESPReplies reads n RESP replies from c and renders each as type byte
// and text ("+OK", "-ERR ...", "$v", "$<nil>").
func readRESPReplies(t *testing.T, c net.Conn, n int) []string {
	t.Helper()
	d := codec.NewReplyDecoder(codec.Limits{})
	var out []string
	var buf []byte
	chunk := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(out) < n {
		for len(out) < n && len(buf) >= d.Need() {
			r, m, err := d.Decode(buf)
			if err != nil {
				t.Fatal(err)
			}
			if m == 0 {
				break
			}
			s := string(r.Type) + string(r.Str)
			if r.Type == ':' {
				s = fmt.Sprintf(":%d", r.Int)
			}
			if r.Null {
				s = string(r.Type) + "<nil>"
			}
			out = append(out, s)
			buf = buf[m:]
		}
		if len(out) == n {
			break
		}
		m, err := c.Read(chunk)
		if err != nil {
			t.Fatalf("after %d replies %q: %v", len(out), out, err)
		}
		buf = append(buf, chunk[:m]...)
	}
	return out
}

// TestTransactionsRunNothing: transactions are not supported, and what a
// client pipelines between MULTI and EXEC (go-redis's TxPipelined,
// redis-py's default pipeline) must not run: each command is refused as
// Redis refuses one it cannot queue, and EXEC aborts the transaction. The
// client reads one reply per command it sent, so none is left over to be
// taken for the reply of a later command.
func TestTransactionsRunNothing(t *testing.T) {
	cmds := [][]string{
		{"SET", "before", "1"},
		{"MULTI"},
		{"SET", "k", "v"},
		{"NOSUCH"},
		{"MULTI"},
		{"GET", "before"},
		{"EXEC"},
		{"GET", "k"},
		{"EXEC"},
		{"DISCARD"},
		{"MULTI"},
		{"MSET", "k", "v"},
		{"DISCARD"},
		{"EXISTS", "k"},
		{"MULTI"},
		{"EXEC"},
		{"SET", "k", "after"},
		{"GET", "k"},
	}
	notRun := "-ERR " + errNotRunInTx
	checkRESPScript(t, cmds, []string{
		"+OK",
		"+OK",
		notRun,
		notRun,
		"-ERR MULTI calls can not be nested",
		notRun,
		"-" + errExecAbort,
		"$<nil>",
		"-ERR EXEC without MULTI",
		"-ERR DISCARD without MULTI",
		"+OK",
		notRun,
		"+OK",
		":0",
		"+OK",
		"*",
		"+OK",
		"$after",
	})
}

// checkRESPScript sends cmds to a new server in one write and checks the
// replies against want, rendered as readRESPReplies renders them.
func checkRESPScript(t *testing.T, cmds [][]string, want []string) {
	t.Helper()
	addr := startTestServer(t, newSlowStore(), nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var req []byte
	for _, a := range cmds {
		req = appendRESP(req, a...)
	}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	got := readRESPReplies(t, c, len(cmds))
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("reply %d to %s: %q, want %q", i, strings.Join(cmds[i], " "), got[i], want[i])
		}
	}
}

// TestMemoryUsage: MEMORY USAGE (what redis-cli --memkeys asks of each key)
// counts the key and value bytes, also right behind a pipelined SET of the
// key, and answers a missing key with a null bulk, as Redis does.
func TestMemoryUsage(t *testing.T) {
	cmds := [][]string{
		{"SET", "k", "hello"},
		{"MEMORY", "USAGE", "k"},
		{"memory", "usage", "k", "samples", "0"},
		{"MEMORY", "USAGE", "missing"},
		{"MEMORY", "USAGE"},
		{"MEMORY", "USAGE", "k", "SAMPLES"},
		{"MEMORY", "USAGE", "k", "SAMPLES", "x"},
		{"MEMORY", "DOCTOR"},
		{"MEMORY", "USAGE", ""},
	}
	checkRESPScript(t, cmds, []string{
		"+OK",
		":6",
		":6",
		"$<nil>",
		"-ERR syntax error",
		"-ERR syntax error",
		"-ERR value is not an integer or out of range",
		"-ERR unknown subcommand 'DOCTOR'. Only MEMORY USAGE is supported.",
		"-ERR empty key",
	})
}
