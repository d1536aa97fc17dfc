package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/logtest"
	"github.com/kvstore/kv/internal/loopback"
	"github.com/kvstore/kv/lsm"
)

// TestMain makes the test binary kvserver itself when started with
// KVSERVER_TEST_MAIN set, so that tests can run it as a child process and
// send it signals without building it first.
func TestMain(m *testing.M) {
	if os.Getenv("KVSERVER_TEST_MAIN") != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child is a kvserver process started by a test.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *syncBuffer // standard output and error
	exited chan struct{}
	err    error // the exit status, once exited is closed
}

// startChild starts kvserver with args; it is killed when the test ends.
func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	c := &child{t: t, out: new(syncBuffer), exited: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], args...)
	c.cmd.Env = append(os.Environ(), "KVSERVER_TEST_MAIN=1")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-c.exited
	})
	return c
}

// waitStarted waits for the start-up line and returns it.
func (c *child) waitStarted() string {
	c.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		if line := c.line("kvserver started"); line != "" {
			return line
		}
		select {
		case <-c.exited:
			c.t.Fatalf("kvserver exited at start-up: %v\n%s", c.err, c.out)
		case <-deadline:
			c.t.Fatalf("kvserver did not start\n%s", c.out)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (c *child) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its status.
func (c *child) wait() error {
	c.t.Helper()
	select {
	case <-c.exited:
		return c.err
	case <-time.After(30 * time.Second):
		c.t.Fatalf("kvserver did not exit\n%s", c.out)
		return nil
	}
}

func (c *child) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// line returns the first line of output containing s, or "".
func (c *child) line(s string) string {
	for l := range strings.Lines(c.out.String()) {
		if strings.Contains(l, s) {
			return strings.TrimSuffix(l, "\n")
		}
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := loopback.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// writeConfig writes a configuration with small memory budgets and extra,
// which may add keys to [storage] and tables after it.
func writeConfig(t *testing.T, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kv.toml")
	body := "[storage]\nmemtable_bytes = \"4MiB\"\nblock_cache_bytes = \"16MiB\"\n" + extra
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestStrayArgumentStopsStartup: flag parsing stops at the first argument
// that is not a flag, so `kvserver node1.toml -listen ...` (no -c) would
// drop the file and every flag after it and start a default server.
func TestStrayArgumentStopsStartup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// Were the argument ignored, the server would start on these.
	c := startChild(t, "-admin", "off", "-listen", freeAddr(t), "-dir", dir, "node1.toml", "-sync", "none")
	// Without the check it starts and runs on: wait for either outcome.
	for deadline := time.Now().Add(20 * time.Second); !c.hasExited() && c.line("kvserver started") == ""; {
		if time.Now().After(deadline) {
			t.Fatalf("kvserver neither started nor exited\n%s", c.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !c.hasExited() || c.err == nil {
		t.Fatalf("kvserver started with a stray argument\n%s", c.out)
	}
	want := `kvserver: unexpected argument "node1.toml" (a configuration file is given with -c FILE)`
	if got := strings.TrimSpace(c.out.String()); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data directory was created (%v)", err)
	}
}

// TestLogFileErrorNamesKey: a log file that cannot be opened is reported
// as every bad configuration value is, "<source>: <key>: <message>".
func TestLogFileErrorNamesKey(t *testing.T) {
	tmp := t.TempDir()
	logFile := filepath.Join(tmp, "missing", "kv.log")
	cfg := writeConfig(t, fmt.Sprintf("[log]\nfile = %q\n", logFile))
	dir := filepath.Join(tmp, "data")
	err := run([]string{"-c", cfg, "-admin", "off", "-listen", freeAddr(t), "-dir", dir})
	want := fmt.Sprintf("%s: log.file: cannot open %q: no such file or directory", cfg, logFile)
	if err == nil || err.Error() != want {
		t.Fatalf("run: %v, want %q", err, want)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the error does not wrap its cause: %#v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the data directory was created (%v)", err)
	}

	_, _, _, err = newLogger(conf.Log{Level: "info", File: logFile}, "built-in configuration")
	if err == nil || !strings.HasPrefix(err.Error(), "built-in configuration: log.file: cannot open ") {
		t.Errorf("newLogger: %v", err)
	}
}

// TestMilestonesPassLevelFilter: whatever log.level says, the start-up
// line (naming the configuration) and the stop line are logged.
func TestMilestonesPassLevelFilter(t *testing.T) {
	for _, level := range []string{"warn", "error"} {
		t.Run(level, func(t *testing.T) {
			cfg := writeConfig(t, fmt.Sprintf("[log]\nlevel = %q\n", level))
			c := startChild(t, "-c", cfg, "-admin", "off", "-listen", freeAddr(t), "-dir", filepath.Join(t.TempDir(), "data"))
			started := c.waitStarted()
			for _, want := range []string{"level=" + strings.ToUpper(level), "config=" + cfg, "mode=standalone", "sync=always"} {
				if !strings.Contains(started, want) {
					t.Errorf("start-up line %q lacks %s", started, want)
				}
			}
			c.signal(syscall.SIGTERM)
			if err := c.wait(); err != nil {
				t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out)
			}
			if stopped := c.line("kvserver stopped"); !strings.Contains(stopped, "level="+strings.ToUpper(level)) {
				t.Errorf("stop line %q\n%s", stopped, c.out)
			}
			if c.line("shutting down") != "" {
				t.Errorf("an info line passed the %s filter:\n%s", level, c.out)
			}
		})
	}
}

// TestRepeatedSignalIsOneShutdown: GNU timeout sends SIGTERM to its child
// and to the process group, about 1 ms apart; the repeat must not turn the
// graceful shutdown into "second signal, exiting at once".
// TestRepeatedSignalIsOneShutdown: GNU timeout sends SIGTERM to its child
// and to the process group, about 1 ms apart; the repeat must not turn the
// graceful shutdown into "second signal, exiting at once".
func TestRepeatedSignalIsOneShutdown(t *testing.T) {
	// An idle server stops in well under a millisecond, and the kernel
	// merges a signal into one still pending: the repeat can come too late
	// or too early to be seen. Vary the gap and try until the server logs
	// that it saw it.
	gaps := []time.Duration{0, 50 * time.Microsecond, 100 * time.Microsecond, 200 * time.Microsecond, 400 * time.Microsecond, time.Millisecond}
	cfg := writeConfig(t, "[log]\nlevel = \"debug\"\n")
	const attempts = 50
	for i := range attempts {
		c := startChild(t, "-c", cfg, "-admin", "off", "-listen", freeAddr(t), "-dir", filepath.Join(t.TempDir(), "data"))
		c.waitStarted()
		c.signal(syscall.SIGTERM)
		time.Sleep(gaps[i%len(gaps)])
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatal(err)
		}
		if err := c.wait(); err != nil {
			t.Fatalf("exit status: %v, want 0\n%s", err, c.out)
		}
		for _, want := range []string{"shutting down", "kvserver stopped"} {
			if c.line(want) == "" {
				t.Fatalf("no %q line\n%s", want, c.out)
			}
		}
		if c.line("second signal") != "" {
			t.Fatalf("the repeat was taken for a second signal\n%s", c.out)
		}
		if c.line("repeated signal taken as the first") != "" {
			return
		}
	}
	t.Skipf("the repeated signal never reached a server still shutting down in %d attempts", attempts)
}

// TestBuiltInConfigNamed: the start-up line names the configuration,
// "built-in" without -c.
func TestBuiltInConfigNamed(t *testing.T) {
	c := startChild(t, "-admin", "off", "-listen", freeAddr(t), "-dir", filepath.Join(t.TempDir(), "data"))
	if started := c.waitStarted(); !strings.Contains(started, " config=built-in ") {
		t.Errorf("start-up line %q does not name the built-in configuration", started)
	}
	c.signal(syscall.SIGTERM)
	if err := c.wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out)
	}
}

// TestSecondSignalExitsAtOnce: a signal after the one that started the
// shutdown still cuts it short, unless it repeats that one within
// signalEcho.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		since  time.Duration // from the first signal to the next
		next   os.Signal
		exited bool
	}{
		{"repeat at once", 0, syscall.SIGTERM, false},
		{"repeat after the echo window", signalEcho + 50*time.Millisecond, syscall.SIGTERM, true},
		{"another signal at once", 0, syscall.SIGINT, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))
			sigs := make(chan os.Signal, 1)
			code := make(chan int, 1)
			done := make(chan struct{})
			go func() {
				exitOnSecondSignal(sigs, syscall.SIGTERM, time.Now().Add(-tt.since), logger, func(c int) { code <- c })
				close(done)
			}()
			sigs <- tt.next
			close(sigs)
			<-done
			select {
			case c := <-code:
				if !tt.exited || c != 1 {
					t.Errorf("exit(%d); want exit: %v\n%s", c, tt.exited, log.String())
				}
				if !strings.Contains(log.String(), "second signal, exiting at once") {
					t.Errorf("no warning logged:\n%s", log.String())
				}
			default:
				if tt.exited {
					t.Errorf("no exit\n%s", log.String())
				}
				if !strings.Contains(log.String(), "level=DEBUG msg=\"repeated signal taken as the first\"") {
					t.Errorf("the repeat was not logged at debug:\n%s", log.String())
				}
			}
		})
	}
}

// TestReportedSync: cluster nodes keep no engine WAL, so they report "raft"
// and warn, once, about sync settings that do nothing there.
func TestReportedSync(t *testing.T) {
	tests := []struct {
		name   string
		set    func(*conf.Config)
		want   string
		warned string // substring of the warning; "" for none
	}{
		{"standalone", func(c *conf.Config) { c.Storage.Sync = conf.SyncBatch }, "batch", ""},
		{"cluster", func(c *conf.Config) { c.Cluster.Enabled = true }, "raft", ""},
		{"cluster with sync", func(c *conf.Config) {
			c.Cluster.Enabled, c.Storage.Sync = true, conf.SyncNone
		}, "raft", `ignored="storage.sync = \"none\" (from -sync)"`},
		{"cluster with both", func(c *conf.Config) {
			c.Cluster.Enabled, c.Storage.Sync, c.Storage.SyncInterval = true, conf.SyncBatch, conf.Duration(time.Second)
		}, "raft", `ignored="storage.sync = \"batch\" (from -sync), storage.sync_interval = \"1s\" (from kv.toml)"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&log, nil))
			cfg := conf.Default()
			tt.set(&cfg)
			if got := reportedSync(cfg, "kv.toml", "-sync", logger); got != tt.want {
				t.Errorf("reported %q, want %q", got, tt.want)
			}
			n := strings.Count(log.String(), "level=WARN")
			if tt.warned == "" && n != 0 {
				t.Errorf("unexpected warning:\n%s", log.String())
			}
			if tt.warned != "" && (n != 1 || !strings.Contains(log.String(), tt.warned)) {
				t.Errorf("log:\n%s\nwant one warning with %s", log.String(), tt.warned)
			}
		})
	}
}

// oneNodeCluster writes the configuration of a one-node cluster on free
// loopback ports, with storage lines first (under writeConfig's
// [storage]), and returns its file and client address.
func oneNodeCluster(t *testing.T, storage string) (cfg, client string) {
	t.Helper()
	client, raft := freeAddr(t), freeAddr(t)
	cfg = writeConfig(t, fmt.Sprintf(`%[3]s
[cluster]
enabled = true
node_id = 1
raft_address = %[1]q
shards = 1
[[cluster.members]]
id = 1
raft = %[1]q
client = %[2]q
`, raft, client, storage))
	return cfg, client
}

// TestClusterReportsRaftSync: a one-node cluster whose configuration sets
// storage.sync says sync=raft in its start-up line and INFO, with a
// warning that the setting does nothing.
func TestClusterReportsRaftSync(t *testing.T) {
	cfg, client := oneNodeCluster(t, `sync = "none"`)
	c := startChild(t, "-c", cfg, "-admin", "off", "-listen", client, "-dir", filepath.Join(t.TempDir(), "data"))
	started := c.waitStarted()
	if !strings.Contains(started, "mode=cluster") || !strings.Contains(started, "sync=raft") {
		t.Errorf("start-up line %q", started)
	}
	if warn := c.line("no effect in cluster mode"); !strings.Contains(warn, `storage.sync = \"none\" (from `+cfg+`)`) {
		t.Errorf("warning %q\n%s", warn, c.out)
	}
	info := respCommand(t, client, "INFO", "persistence")
	if !strings.Contains(info, "\r\nsync:raft\r\n") {
		t.Errorf("INFO persistence:\n%s", info)
	}
	c.signal(syscall.SIGTERM)
	if err := c.wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out)
	}
}

// respCommand sends one RESP command and returns its bulk-string reply.
func respCommand(t *testing.T, addr string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	fmt.Fprintf(conn, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(conn, "$%d\r\n%s\r\n", len(a), a)
	}
	r := bufio.NewReader(conn)
	head, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if !strings.HasPrefix(head, "$") || err != nil || n < 0 {
		t.Fatalf("%s: reply %q", args[0], head)
	}
	body := make([]byte, n+2)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return string(body[:n])
}

// hangingCloser's Close returns only when released.
type hangingCloser struct{ release chan struct{} }

func (h hangingCloser) Close() error { <-h.release; return nil }

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// TestCloseWithin: a store whose close hangs does not keep the process
// alive past the bound (a cluster node whose raft engine was stuck on a
// full disk needed a second signal); one that closes in time reports its
// own result.
func TestCloseWithin(t *testing.T) {
	h := hangingCloser{release: make(chan struct{})}
	defer close(h.release)
	if err := closeWithin(h, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not finished") {
		t.Fatalf("hanging close: %v", err)
	}
	want := errors.New("flush failed")
	if err := closeWithin(closerFunc(func() error { return want }), time.Minute); err != want {
		t.Fatalf("close error: %v, want %v", err, want)
	}
}

// TestModeMismatchedDataDirRefused: a standalone server refuses a cluster
// node's data directory, and a cluster node a standalone server's, instead
// of creating an empty store beside the data and serving that.
func TestModeMismatchedDataDirRefused(t *testing.T) {
	nodeDir := filepath.Join(t.TempDir(), "node")
	if err := os.MkdirAll(filepath.Join(nodeDir, "raft"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"-admin", "off", "-listen", freeAddr(t), "-dir", nodeDir})
	if err == nil || !strings.Contains(err.Error(), "is a cluster node's data directory") {
		t.Fatalf("standalone on a node's directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "CURRENT")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a standalone DB was created in the node's directory (%v)", err)
	}

	standaloneDir := filepath.Join(t.TempDir(), "standalone")
	db, err := lsm.Open(standaloneDir, lsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, client := oneNodeCluster(t, "")
	err = run([]string{"-c", cfg, "-admin", "off", "-listen", client, "-dir", standaloneDir})
	if err == nil || !strings.Contains(err.Error(), "holds a standalone server's data") {
		t.Fatalf("cluster node on a standalone directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(standaloneDir, "raft")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("raft state was created in the standalone directory (%v)", err)
	}
}

// TestWarnExposed: a port beyond loopback without a password is warned
// about; with a password, or on loopback, nothing is said.
func TestWarnExposed(t *testing.T) {
	for _, c := range []struct {
		listen, admin, pass string
		tls                 conf.Server // its TLS keys only
		want                int
	}{
		{"127.0.0.1:8080", "127.0.0.1:9080", "", conf.Server{}, 0},
		{"localhost:8080", "", "", conf.Server{}, 0},
		{"0.0.0.0:8080", "127.0.0.1:9080", "", conf.Server{}, 1},
		{"0.0.0.0:8080", "[::]:9080", "", conf.Server{}, 2},
		{"0.0.0.0:8080", "0.0.0.0:9080", "pw", conf.Server{}, 0},
		// TLS alone encrypts; only client certificates keep strangers out.
		{"127.0.0.1:8080", "0.0.0.0:9080", "", conf.Server{TLSListen: "0.0.0.0:6380", AdminTLS: true}, 2},
		{"127.0.0.1:8080", "0.0.0.0:9080", "", conf.Server{TLSListen: "0.0.0.0:6380", AdminTLS: true, TLSCAFile: "ca.pem"}, 0},
	} {
		logger, rec := logtest.New()
		cfg := c.tls
		cfg.Listen, cfg.AdminListen, cfg.RequirePass = c.listen, c.admin, c.pass
		warnExposed(cfg, logger)
		if got := len(rec.Records()); got != c.want {
			t.Errorf("listen %s admin %s pass %q: %d warnings %q, want %d", c.listen, c.admin, c.pass, got, rec.Records(), c.want)
		}
	}
}
