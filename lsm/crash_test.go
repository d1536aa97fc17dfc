package lsm

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	crashDirEnv   = "LSM_CRASH_CHILD_DIR"
	crashRoundEnv = "LSM_CRASH_CHILD_ROUND"
)

// crashValue is the only value ever written for key: a value that is not
// crashValue(key) came from nowhere.
func crashValue(key string) string { return "value-of-" + key }

// TestCrashChild is the child process of TestCrashKill (it does nothing in
// a normal run). It writes with SyncAlways from several goroutines and
// prints "ACK key" once a put has returned (durable), "TRY key" before a
// delete and "DEL key" once the delete has returned, until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashKill")
	}
	round := os.Getenv(crashRoundEnv)
	opts := smallOptions(nil)
	opts.FS = nil
	opts.Sync = SyncAlways
	d, err := Open(dir, opts)
	if err != nil {
		fmt.Println("OPEN-ERROR", err)
		os.Exit(3)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(out, format, args...)
		out.Flush()
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("r%s-g%d-%06d", round, g, i)
				if err := d.Put([]byte(key), []byte(crashValue(key))); err != nil {
					report("ERROR %v\n", err)
					return
				}
				report("ACK %s\n", key)
				if i%5 == 4 {
					del := fmt.Sprintf("r%s-g%d-%06d", round, g, i-2)
					report("TRY %s\n", del)
					if err := d.Delete([]byte(del)); err != nil {
						report("ERROR %v\n", err)
						return
					}
					report("DEL %s\n", del)
				}
			}
		}()
	}
	wg.Wait()
	os.Exit(4) // only reached after an error
}

// TestCrashKill kills a writing child process with SIGKILL at random
// moments, several times over the same directory, and checks after each
// kill that the DB opens, every acknowledged write is there (and every
// acknowledged delete), and no value comes from nowhere.
func TestCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	// present holds the acknowledged state of each key: a put, a delete,
	// or a delete in flight (either outcome is fine).
	present := make(map[string]keyState)
	totalAcks := 0
	const rounds = 12
	for round := range rounds {
		cmd, lines := startChild(t, "TestCrashChild", crashDirEnv+"="+dir, fmt.Sprintf("%s=%d", crashRoundEnv, round))
		var acks []string
		// Wait for the child to write, then let it run a random while.
		first := time.After(20 * time.Second)
		var kill <-chan time.Time
	collect:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break collect
				}
				if strings.HasPrefix(line, "ACK ") || strings.HasPrefix(line, "TRY ") || strings.HasPrefix(line, "DEL ") {
					acks = append(acks, line)
					if kill == nil {
						kill = time.After(time.Duration(50+rng.IntN(400)) * time.Millisecond)
					}
				} else if strings.HasPrefix(line, "OPEN-ERROR") || strings.HasPrefix(line, "ERROR") {
					cmd.Process.Kill()
					t.Fatalf("round %d: child: %s", round, line)
				}
			case <-kill:
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				kill = nil
			case <-first:
				cmd.Process.Kill()
				t.Fatalf("round %d: child wrote nothing", round)
			}
		}
		if err := cmd.Wait(); err == nil {
			t.Fatalf("round %d: child exited by itself", round)
		}
		for _, line := range acks {
			op, key, _ := strings.Cut(line, " ")
			switch op {
			case "ACK":
				present[key] = keyPut
			case "TRY":
				present[key] = keyDeleting
			case "DEL":
				present[key] = keyDeleted
			}
		}
		totalAcks += len(acks)
		verifyCrashState(t, dir, present, round)
	}
	t.Logf("%d rounds, %d acknowledged operations survived SIGKILL", rounds, totalAcks)
}

type keyState int

const (
	keyPut keyState = iota + 1
	keyDeleting
	keyDeleted
)

func verifyCrashState(t *testing.T, dir string, present map[string]keyState, round int) {
	t.Helper()
	opts := smallOptions(nil)
	opts.FS = nil
	d, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("round %d: reopen after kill: %v", round, err)
	}
	defer d.Close()
	for key, state := range present {
		v, err := d.Get([]byte(key))
		switch {
		case state == keyPut && err != nil:
			t.Fatalf("round %d: acknowledged %s lost: %v", round, key, err)
		case state == keyDeleted && !errors.Is(err, ErrNotFound):
			t.Fatalf("round %d: acknowledged delete of %s undone: %q %v", round, key, v, err)
		case err == nil && string(v) != crashValue(key):
			t.Fatalf("round %d: %s = %q", round, key, v)
		case err != nil && !errors.Is(err, ErrNotFound):
			t.Fatalf("round %d: get %s: %v", round, key, err)
		}
	}
	it := d.NewIterator(nil, nil)
	for ok := it.First(); ok; ok = it.Next() {
		if string(it.Value()) != crashValue(string(it.Key())) {
			t.Fatalf("round %d: %s holds %q, which was never written", round, it.Key(), it.Value())
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
}

const lockDirEnv = "LSM_LOCK_CHILD_DIR"

// TestLockChild is the child process of TestLockOtherProcess: it tries to
// open the directory and reports the outcome.
func TestLockChild(t *testing.T) {
	dir := os.Getenv(lockDirEnv)
	if dir == "" {
		t.Skip("helper process for TestLockOtherProcess")
	}
	d, err := Open(dir, Options{BlockCacheBytes: testCacheBytes})
	switch {
	case errors.Is(err, ErrLocked):
		fmt.Println("RESULT locked")
	case err != nil:
		fmt.Println("RESULT error", err)
	default:
		d.Close()
		fmt.Println("RESULT opened")
	}
}

// TestLockOtherProcess checks that the LOCK file keeps a second process out
// while the DB is open, and only then.
func TestLockOtherProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	dir := t.TempDir()
	child := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockChild$")
		cmd.Env = append(os.Environ(), lockDirEnv+"="+dir)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if r, ok := strings.CutPrefix(line, "RESULT "); ok {
				return r
			}
		}
		t.Fatalf("child printed no result:\n%s", out)
		return ""
	}
	d := mustOpen(t, dir, Options{BlockCacheBytes: testCacheBytes})
	if got := child(); got != "locked" {
		t.Fatalf("second process while open: %s", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := child(); got != "opened" {
		t.Fatalf("second process after Close: %s", got)
	}
}

// startChild runs this test binary's test name in a child process with
// env added, and returns it with the lines of its standard output (closed
// when the output ends); its standard error is the test's.
func startChild(t *testing.T, name string, env ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}
