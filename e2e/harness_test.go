package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/internal/loopback"
)

var (
	kvserverBin string
	binDir      string // where TestMain and toolBin put the binaries

	toolsMu sync.Mutex
	tools   = map[string]string{} // command name -> built binary
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kv-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	kvserverBin = filepath.Join(dir, "kvserver")
	build := exec.Command("go", "build", "-o", kvserverBin, "../cmd/kvserver")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kvserver:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// toolBin returns the path of cmd/name (kvcli, kvbench) built for this
// run, building it the first time a test asks.
func toolBin(t testing.TB, name string) string {
	t.Helper()
	toolsMu.Lock()
	defer toolsMu.Unlock()
	if bin, ok := tools[name]; ok {
		return bin
	}
	bin := filepath.Join(binDir, name)
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/"+name).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	tools[name] = bin
	return bin
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := loopback.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// node is one kvserver process.
type node struct {
	t      testing.TB
	cmd    *exec.Cmd
	addr   string
	admin  string
	dir    string
	config string
	log    *os.File
	exited chan error
	nofile int      // RLIMIT_NOFILE for the process; 0: inherited
	flags  []string // command-line flags after -c FILE
}

// startNode writes a config (the [server] and [storage] basics plus extra
// TOML lines for those sections) and starts kvserver on it.
func startNode(t testing.TB, serverExtra, storageExtra string) *node {
	t.Helper()
	return startNodeLimited(t, 0, serverExtra, storageExtra)
}

// startNodeLimited is startNode with the process's open-file limit set to
// nofile (0: inherited).
func startNodeLimited(t testing.TB, nofile int, serverExtra, storageExtra string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{
		t:      t,
		nofile: nofile,
		addr:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		admin:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		dir:    filepath.Join(dir, "data"),
	}
	n.config = filepath.Join(dir, "kv.toml")
	cfg := fmt.Sprintf("[server]\nlisten = %q\nadmin_listen = %q\nevent_loops = 2\n%s\n[storage]\ndir = %q\nmemtable_bytes = \"4MiB\"\nblock_cache_bytes = \"16MiB\"\n%s\n[log]\nlevel = \"warn\"\n",
		n.addr, n.admin, serverExtra, n.dir, storageExtra)
	if err := os.WriteFile(n.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	n.start()
	t.Cleanup(func() { n.kill() })
	return n
}

// start launches the process on the node's config and waits until it
// answers PING.
func (n *node) start() {
	t := n.t
	t.Helper()
	logf, err := os.CreateTemp(filepath.Dir(n.config), "kvserver-*.log")
	if err != nil {
		t.Fatal(err)
	}
	n.log = logf
	n.cmd = exec.Command(kvserverBin, append([]string{"-c", n.config}, n.flags...)...)
	if n.nofile > 0 {
		n.cmd = exec.Command("bash", "-c", fmt.Sprintf("ulimit -n %d && exec %q -c %q %s", n.nofile, kvserverBin, n.config, strings.Join(n.flags, " ")))
	}
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(n.cmd, n.exited)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-n.exited:
			t.Fatalf("kvserver exited at start-up: %v\n%s", err, n.logText())
		default:
		}
		c, err := net.DialTimeout("tcp", n.addr, 200*time.Millisecond)
		if err == nil {
			fmt.Fprint(c, "PING\n")
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && line == "PONG\n" {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("kvserver did not start\n%s", n.logText())
}

func (n *node) logText() string {
	b, _ := os.ReadFile(n.log.Name())
	return string(b)
}

// kill SIGKILLs the process (no-op if it already exited).
func (n *node) kill() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exitedOnce()
}

func (n *node) exitedOnce() <-chan error {
	ch := make(chan error, 1)
	go func(ex chan error) {
		select {
		case err, ok := <-ex:
			if ok {
				ex <- err // keep it for the next reader
			}
			ch <- err
		case <-time.After(30 * time.Second):
			ch <- fmt.Errorf("timeout")
		}
	}(n.exited)
	return ch
}

// terminate sends SIGTERM and returns the exit error.
func (n *node) terminate() error {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	return <-n.exitedOnce()
}

// pipeConn is a raw pipe-protocol connection.
type pipeConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialPipe(t testing.TB, addr string) *pipeConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pipeConn{t: t, c: c, r: bufio.NewReaderSize(c, 1<<16)}
}

func (p *pipeConn) send(lines ...string) {
	p.t.Helper()
	p.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.c.Write([]byte(strings.Join(lines, ""))); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pipeConn) recv() string {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read reply: %v (got %q)", err, line)
	}
	return strings.TrimSuffix(line, "\n")
}

// do sends one request line and returns the reply line.
func (p *pipeConn) do(line string) string {
	p.t.Helper()
	p.send(line + "\n")
	return p.recv()
}

// expectClosed checks the server closes the connection.
func (p *pipeConn) expectClosed() {
	p.t.Helper()
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1<<16)
	for {
		_, err := p.r.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				p.t.Fatal("connection still open")
			}
			return
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
