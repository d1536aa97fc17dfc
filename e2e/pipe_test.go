package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestPipeCommands walks PROTOCOL.md's pipe command table.
func TestPipeCommands(t *testing.T) {
	n := startNode(t, "", "")
	p := dialPipe(t, n.addr)
	steps := []struct{ req, want string }{
		{"PING", "PONG"},
		{"ping", "PONG"},
		{"GET|missing", "NOT_FOUND"},
		{"PUT|k1|v1", "OK"},
		{"GET|k1", "VALUE|v1"},
		{"put|k1|v2", "OK"},
		{"GET|k1", "VALUE|v2"},
		{"PUT|empty|", "OK"},
		{"GET|empty", "VALUE|"},
		{"DELETE|k1", "OK"},
		{"GET|k1", "NOT_FOUND"},
		{"DELETE|never-existed", "OK"},
		{`PUT|a\|b|x\\y\nz\rw\0end`, "OK"},
		{`GET|a\|b`, `VALUE|x\\y\nz\rw\0end`},
		{"BATCH|b1|1|b2|2|b3|3", "OK|3"},
		{"RANGE|b1|b3", "RANGE|2|b1|1|b2|2"},
		{"RANGE|b1|", "RANGE|4|b1|1|b2|2|b3|3|empty|"},
		{"RANGE|b1||2", "RANGE|2|b1|1|b2|2"},
		{"RANGE|b2\\0||1", "RANGE|1|b3|3"},
		{"RANGE|b1||0", "ERROR|limit must be a positive integer"},
		{"RANGE|b1||x", "ERROR|limit must be a positive integer"},
		{"RANGE|b1||-99999999999999999999", "ERROR|limit must be a positive integer"},
		{"RANGE|b1|b3|99999999999999999999", "RANGE|2|b1|1|b2|2"}, // beyond int64: capped, as any limit
		{"BATCH|odd|pair|x", "ERROR|wrong number of fields for 'BATCH'"},
		{"BATCH", "ERROR|wrong number of fields for 'BATCH'"},
		{"GET|x", "NOT_FOUND"},
		{"FOO|bar", "ERROR|unknown command 'FOO'"},
		{"GET", "ERROR|wrong number of fields for 'GET'"},
		{"GET|a|b", "ERROR|wrong number of fields for 'GET'"},
		{"PUT||v", "ERROR|empty key"},
		{`GET|bad\q`, "ERROR|bad escape sequence"},
		{`GET|trailing\`, "ERROR|bad escape sequence"},
		{"CLUSTER_STATUS", "CLUSTER_STATUS|mode=standalone|state=healthy|node_id=1|nodes=1|nodes_up=1|shards=1|shards_with_leader=1"},
		{"CLUSTER_NODES", "CLUSTER_NODES|1|id=1,client=" + n.addr + ",raft=,state=up"},
		{"CLUSTER_LEADER", "CLUSTER_LEADER|id=1,client=" + n.addr},
		{"CLUSTER_LEADER|somekey", "CLUSTER_LEADER|id=1,client=" + n.addr},
		{"AUTH|whatever", "OK"},
		{"PING\r", "PONG"},
	}
	for _, s := range steps {
		if got := p.do(s.req); got != s.want {
			t.Errorf("%s: got %q, want %q", s.req, got, s.want)
		}
	}
	// The BATCH with an odd count wrote nothing.
	if got := p.do("GET|odd"); got != "NOT_FOUND" {
		t.Errorf("odd batch wrote: %q", got)
	}
	// An empty line gets no reply: the next reply is PING's.
	p.send("\n\nPING\n")
	if got := p.recv(); got != "PONG" {
		t.Errorf("after empty lines: %q", got)
	}
	// Key length limit: the connection stays open.
	big := strings.Repeat("k", 64*1024+1)
	if got := p.do("PUT|" + big + "|v"); !strings.HasPrefix(got, "ERROR|key too large") {
		t.Errorf("oversize key: %q", got)
	}
	if got := p.do("PING"); got != "PONG" {
		t.Errorf("after oversize key: %q", got)
	}
	if got := p.do("QUIT"); got != "OK" {
		t.Errorf("QUIT: %q", got)
	}
	p.expectClosed()
}

// TestPipeRangePaging pages through a range the way PROTOCOL.md describes.
func TestPipeRangePaging(t *testing.T) {
	n := startNode(t, "range_limit = 7", "")
	p := dialPipe(t, n.addr)
	var batch []string
	for i := 0; i < 50; i++ {
		batch = append(batch, fmt.Sprintf("key%03d", i), fmt.Sprint(i))
	}
	if got := p.do("BATCH|" + strings.Join(batch, "|")); got != "OK|50" {
		t.Fatal(got)
	}
	if got := p.do("RANGE|||100"); !strings.HasPrefix(got, "RANGE|7|") {
		t.Fatalf("limit not capped by range_limit: %q", got)
	}
	seen := 0
	start := ""
	for {
		reply := p.do("RANGE|" + start + "||5")
		f := strings.Split(reply, "|")
		if f[0] != "RANGE" {
			t.Fatal(reply)
		}
		if f[1] == "0" {
			break
		}
		for i := 2; i < len(f); i += 2 {
			if want := fmt.Sprintf("key%03d", seen); f[i] != want {
				t.Fatalf("page order: got %s want %s", f[i], want)
			}
			seen++
		}
		start = f[len(f)-2] + `\0`
	}
	if seen != 50 {
		t.Fatalf("paged %d keys, want 50", seen)
	}
}

// TestPipelinedOrderAndReadYourWrites sends many mixed requests in one
// write; replies come back in order and each read sees earlier writes.
func TestPipelinedOrderAndReadYourWrites(t *testing.T) {
	n := startNode(t, "", "")
	p := dialPipe(t, n.addr)
	var req strings.Builder
	var want []string
	for i := 0; i < 2000; i++ {
		k := fmt.Sprintf("p%d", i%37)
		switch i % 5 {
		case 0, 1:
			fmt.Fprintf(&req, "PUT|%s|v%d\n", k, i)
			want = append(want, "OK")
		case 2:
			fmt.Fprintf(&req, "DELETE|%s\n", k)
			want = append(want, "OK")
		case 3:
			req.WriteString("PING\n")
			want = append(want, "PONG")
		case 4:
			fmt.Fprintf(&req, "GET|%s\n", k)
			want = append(want, "")
		}
	}
	// Compute the expected GET replies with a model of the sequence.
	model := map[string]string{}
	lines := strings.Split(strings.TrimSuffix(req.String(), "\n"), "\n")
	for i, l := range lines {
		f := strings.Split(l, "|")
		switch f[0] {
		case "PUT":
			model[f[1]] = f[2]
		case "DELETE":
			delete(model, f[1])
		case "GET":
			if v, ok := model[f[1]]; ok {
				want[i] = "VALUE|" + v
			} else {
				want[i] = "NOT_FOUND"
			}
		}
	}
	p.send(req.String())
	for i, w := range want {
		if got := p.recv(); got != w {
			t.Fatalf("reply %d to %q: got %q want %q", i, lines[i], got, w)
		}
	}
}
