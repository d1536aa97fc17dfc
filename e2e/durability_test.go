package e2e

import (
	"bufio"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKill9KeepsAcknowledgedWrites: several connections pipeline PUTs with
// sync = "always"; the server is SIGKILLed at random moments, restarted,
// and every PUT that was acknowledged must be readable with its value.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	n := startNode(t, "", `sync = "always"`)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	acked := map[string]string{}
	var mu sync.Mutex
	for round := 0; round < 4; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				writeUntilKilled(n.addr, fmt.Sprintf("r%dw%d", round, w), stop, func(k, v string) {
					mu.Lock()
					acked[k] = v
					mu.Unlock()
				})
			}(w)
		}
		time.Sleep(time.Duration(100+rng.Intn(400)) * time.Millisecond)
		n.kill()
		close(stop)
		wg.Wait()
		n.start()
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 100 {
		t.Fatalf("only %d writes acknowledged; the test did not exercise anything", len(acked))
	}
	p := dialPipe(t, n.addr)
	for k, v := range acked {
		if got := p.do("GET|" + k); got != "VALUE|"+v {
			t.Fatalf("acknowledged %s=%s, after kill -9 read %q", k, v, got)
		}
	}
	t.Logf("%d acknowledged writes survived 4 kill -9 rounds", len(acked))
}

// writeUntilKilled pipelines PUTs on one connection (32 in flight) and
// reports each acknowledged one, until the connection dies.
func writeUntilKilled(addr, prefix string, stop chan struct{}, ack func(k, v string)) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer c.Close()
	sent := make(chan [2]string, 32)
	go func() {
		defer close(sent)
		w := bufio.NewWriter(c)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("v%d-%s", i, strings.Repeat("x", i%50))
			select {
			case sent <- [2]string{k, v}:
			case <-stop:
				return
			}
			fmt.Fprintf(w, "PUT|%s|%s\n", k, v)
			if len(sent) == cap(sent) || i%8 == 0 {
				if w.Flush() != nil {
					return
				}
			}
		}
	}()
	r := bufio.NewReader(c)
	for kv := range sent {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if line == "OK\n" {
			ack(kv[0], kv[1])
		}
	}
}

// TestGracefulShutdown: SIGTERM finishes, exits 0, and the data is there
// after a restart.
func TestGracefulShutdown(t *testing.T) {
	n := startNode(t, "", `sync = "none"`)
	p := dialPipe(t, n.addr)
	var req strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&req, "PUT|g%d|%d\n", i, i)
	}
	p.send(req.String())
	for i := 0; i < 5000; i++ {
		if got := p.recv(); got != "OK" {
			t.Fatal(got)
		}
	}
	// A client that keeps writing through the shutdown: its requests are
	// acknowledged until they are refused, then the connection closes.
	c, err := net.Dial("tcp", n.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var acked atomic.Int64
	last := make(chan string, 1)
	go func() {
		r := bufio.NewReader(c)
		for i := 0; ; i++ {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "PUT|s%d|%d\n", i, i)
			line, err := r.ReadString('\n')
			if err != nil || line != "OK\n" {
				last <- fmt.Sprintf("%q %v", line, err)
				return
			}
			acked.Store(int64(i + 1))
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := n.terminate(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, n.logText())
	}
	// The end of the writer's connection: refused, or closed by the
	// stopping event loops (a reset when its last request was unread).
	if got := <-last; !strings.Contains(got, "ERROR|server is shutting down") && !strings.Contains(got, "EOF") && !strings.Contains(got, "reset") {
		t.Errorf("the writer's last reply: %s, want the shutdown error or a closed connection", got)
	}
	n.start()
	q := dialPipe(t, n.addr)
	for i := 0; i < 5000; i += 97 {
		if got := q.do(fmt.Sprintf("GET|g%d", i)); got != fmt.Sprintf("VALUE|%d", i) {
			t.Fatalf("g%d after restart: %q", i, got)
		}
	}
	for i := range int(acked.Load()) {
		if got := q.do(fmt.Sprintf("GET|s%d", i)); got != fmt.Sprintf("VALUE|%d", i) {
			t.Fatalf("s%d, acknowledged before the shutdown, after restart: %q", i, got)
		}
	}
}

// TestRecoverDamagedWAL: a WAL damaged in the middle stops start-up with a
// message pointing at -recover-wal; with it the server starts with the
// writes before the damage, none after, and the WAL set aside as *.corrupt.
func TestRecoverDamagedWAL(t *testing.T) {
	n := startNode(t, "", `sync = "always"`)
	p := dialPipe(t, n.addr)
	const keys = 200
	for i := range keys {
		if got := p.do(fmt.Sprintf("PUT|k%03d|%s", i, strings.Repeat("v", 100))); got != "OK" {
			t.Fatalf("PUT: %s", got)
		}
	}
	n.kill() // the writes stay in the WAL
	logs, _ := filepath.Glob(filepath.Join(n.dir, "*.log"))
	if len(logs) != 1 {
		t.Fatalf("WAL files %v, want one", logs)
	}
	data, err := os.ReadFile(logs[0])
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(logs[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kvserverBin, "-c", n.config).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-recover-wal") {
		t.Fatalf("start on a damaged WAL: %v, output %q; want a refusal naming -recover-wal", err, out)
	}
	n.flags = []string{"-recover-wal"}
	n.start()
	p = dialPipe(t, n.addr)
	if got := p.do("GET|k000"); !strings.HasPrefix(got, "VALUE|") {
		t.Fatalf("first write lost: %s", got)
	}
	if got := p.do(fmt.Sprintf("GET|k%03d", keys-1)); got != "NOT_FOUND" {
		t.Fatalf("a write after the damage survived: %s", got)
	}
	if _, err := os.Stat(logs[0] + ".corrupt"); err != nil {
		t.Fatalf("damaged WAL not set aside: %v", err)
	}
	if got := p.do("PUT|after|x"); got != "OK" {
		t.Fatalf("PUT after recovery: %s", got)
	}
}
