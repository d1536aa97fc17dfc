package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

func newBatch(key, value string) *lsm.Batch {
	b := lsm.NewBatch()
	b.Put([]byte(key), []byte(value))
	return b
}

// The crash tests run cluster nodes as child processes (this test binary
// re-executed) so they can be killed with SIGKILL: nothing is flushed or
// closed, which is the case Close can never exercise. A child reads
// commands on stdin and answers on stdout, one line each:
//
//	P id key value  ->  A id            (acknowledged)  | E id message
//	G id key        ->  V id value | N id (not found)   | E id message
const childEnv = "KV_CLUSTER_TEST_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(runChild(cfg))
	}
	os.Exit(m.Run())
}

func runChild(cfgJSON string) int {
	var cfg conf.Config
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c, err := Open(context.Background(), cfg, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
		mu.Unlock()
	}
	reply("READY")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 4 && f[0] == "P":
			id := f[1]
			b := newBatch(f[2], f[3])
			c.Write(b, func(err error) {
				if err != nil {
					reply("E %s %s", id, err)
				} else {
					reply("A %s", id)
				}
			})
		case len(f) == 3 && f[0] == "G":
			id := f[1]
			c.Get([]byte(f[2]), func(v []byte, err error) {
				switch {
				case errors.Is(err, store.ErrNotFound):
					reply("N %s", id)
				case err != nil:
					reply("E %s %s", id, err)
				default:
					reply("V %s %s", id, v)
				}
			})
		}
	}
	c.Close()
	return 0
}

// child is a node running in a child process.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	next  atomic.Uint64
	wait  map[string]chan string
	dead  chan struct{}
}

func startChild(t *testing.T, cfg conf.Config) *child {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(data))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, wait: map[string]chan string{}, dead: make(chan struct{})}
	t.Cleanup(c.kill)
	ready := make(chan struct{})
	go func() {
		defer close(c.dead)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if line == "READY" {
				close(ready)
				continue
			}
			f := strings.SplitN(line, " ", 3)
			if len(f) < 2 {
				continue
			}
			c.mu.Lock()
			ch := c.wait[f[1]]
			delete(c.wait, f[1])
			c.mu.Unlock()
			if ch != nil {
				ch <- line
			}
		}
	}()
	select {
	case <-ready:
	case <-c.dead:
		t.Fatalf("node %d exited before it was ready", cfg.Cluster.NodeID)
	case <-time.After(30 * time.Second):
		t.Fatalf("node %d did not start", cfg.Cluster.NodeID)
	}
	return c
}

// startChildren starts a child for each of cfgs, all at once.
func startChildren(t *testing.T, cfgs []conf.Config) []*child {
	t.Helper()
	nodes := make([]*child, len(cfgs))
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Add(1)
		go func() { defer wg.Done(); nodes[i] = startChild(t, cfgs[i]) }()
	}
	wg.Wait()
	for _, n := range nodes {
		if n == nil {
			t.FailNow() // startChild failed on its goroutine
		}
	}
	return nodes
}

// kill sends SIGKILL (by pid, to this child only) and reaps it.
func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
	<-c.dead
}

// call sends one command and waits for its answer; "" means the child died
// or did not answer in time.
func (c *child) call(format string, args ...any) string {
	id := fmt.Sprint(c.next.Add(1))
	ch := make(chan string, 1)
	c.mu.Lock()
	c.wait[id] = ch
	c.mu.Unlock()
	if _, err := fmt.Fprintf(c.stdin, format+"\n", append([]any{id}, args...)...); err != nil {
		return ""
	}
	select {
	case line := <-ch:
		return line
	case <-c.dead:
		return ""
	case <-time.After(20 * time.Second):
		return ""
	}
}

// put writes key=value through the child: nil once acknowledged, an error
// wrapping store.ErrTimeout when the outcome is unknown (the child said so,
// died or did not answer), another error when the write was refused.
func (c *child) put(key, value string) error {
	line := c.call("P %s %s %s", key, value)
	f := strings.SplitN(line, " ", 3)
	switch {
	case len(f) >= 2 && f[0] == "A":
		return nil
	case len(f) == 3 && f[0] == "E" && strings.HasPrefix(f[2], store.ErrTimeout.Error()):
		return fmt.Errorf("%w%s", store.ErrTimeout, strings.TrimPrefix(f[2], store.ErrTimeout.Error()))
	case len(f) == 3 && f[0] == "E":
		return errors.New(f[2])
	}
	return fmt.Errorf("%w: no answer (%q)", store.ErrTimeout, line)
}

func (c *child) get(key string) (string, error) {
	line := c.call("G %s %s", key)
	f := strings.SplitN(line, " ", 3)
	switch {
	case len(f) == 3 && f[0] == "V":
		return f[2], nil
	case len(f) >= 2 && f[0] == "N":
		return "", store.ErrNotFound
	case len(f) == 3:
		return "", errors.New(f[2])
	}
	return "", fmt.Errorf("no answer (%q)", line)
}

func childConfigs(t *testing.T, n int) []conf.Config {
	addrs := freeAddrs(t, 2*n)
	var members []conf.Member
	for i := range n {
		members = append(members, conf.Member{ID: uint64(i + 1), Raft: addrs[2*i], Client: addrs[2*i+1]})
	}
	var cfgs []conf.Config
	for i := range n {
		cfg := baseConfig(t, uint64(i+1), addrs[2*i], addrs[2*i+1], 4)
		cfg.Cluster.Members = members
		cfg.Cluster.SnapshotEntries = 50 // some Syncs and log compaction too
		cfgs = append(cfgs, cfg)
	}
	return cfgs
}

// writeLoad writes unique keys through the given children until stop
// closes, and returns the acknowledged ones.
func writeLoad(nodes []*child, prefix string, stop <-chan struct{}, count *atomic.Int64) map[string]string {
	var mu sync.Mutex
	acked := map[string]string{}
	loopWriters(12, stop, func(w, i int) bool {
		n := nodes[(w+i)%len(nodes)]
		k, v := fmt.Sprintf("%s-%d-%d", prefix, w, i), fmt.Sprintf("v%d.%d", w, i)
		if n.put(k, v) == nil {
			mu.Lock()
			acked[k] = v
			mu.Unlock()
			count.Add(1)
		}
		return true
	})()
	return acked
}

func checkAcked(t *testing.T, nodes []*child, acked map[string]string) {
	t.Helper()
	for _, n := range nodes {
		for k, v := range acked {
			got, err := n.get(k)
			if err != nil || got != v {
				t.Fatalf("acknowledged %s=%s reads back %q, %v", k, v, got, err)
			}
		}
	}
}

// TestKill9Leader kills a node process (SIGKILL) while writes go through
// every node, keeps writing through the survivors, restarts it, and checks
// that every acknowledged write is readable through every node.
func TestKill9Leader(t *testing.T) {
	cfgs := childConfigs(t, 3)
	nodes := startChildren(t, cfgs)

	stop := make(chan struct{})
	done := make(chan map[string]string)
	var count atomic.Int64
	go func() { done <- writeLoad(nodes, "a", stop, &count) }()
	waitFor(t, 30*time.Second, "100 acknowledged writes", func() bool { return count.Load() >= 100 })
	nodes[0].kill() // node 1: the bootstrap leader of most shards
	killed := time.Now()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	acked := <-done

	// Writes through the survivors succeed again within a few seconds.
	survivors := nodes[1:]
	start := time.Now()
	for survivors[0].put("probe", "1") != nil || survivors[1].put("probe", "2") != nil {
		if time.Since(start) > 15*time.Second {
			t.Fatal("no write succeeded through the survivors")
		}
	}
	t.Logf("survivors accepted new writes %v after the kill", time.Since(killed).Round(time.Millisecond))
	stop = make(chan struct{})
	count.Store(0)
	go func() { done <- writeLoad(survivors, "b", stop, &count) }()
	waitFor(t, 30*time.Second, "100 writes acknowledged by the survivors", func() bool { return count.Load() >= 100 })
	close(stop)
	for k, v := range <-done {
		acked[k] = v
	}

	nodes[0] = startChild(t, cfgs[0])
	checkAcked(t, nodes, acked)
	t.Logf("%d acknowledged writes all present", len(acked))
}

// TestKill9WholeCluster kills every node at once (nothing flushed) and
// restarts them: every acknowledged write survives.
func TestKill9WholeCluster(t *testing.T) {
	cfgs := childConfigs(t, 3)
	nodes := startChildren(t, cfgs)
	stop := make(chan struct{})
	done := make(chan map[string]string)
	var count atomic.Int64
	go func() { done <- writeLoad(nodes, "w", stop, &count) }()
	waitFor(t, 30*time.Second, "100 acknowledged writes", func() bool { return count.Load() >= 100 })
	for _, n := range nodes {
		n.kill()
	}
	close(stop)
	acked := <-done
	nodes = startChildren(t, cfgs)
	checkAcked(t, nodes, acked)
	t.Logf("%d acknowledged writes all present", len(acked))
}
