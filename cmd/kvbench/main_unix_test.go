//go:build unix

package main

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"

	"github.com/kvstore/kv/bench/fakeserver"
)

// TestOutOfFileDescriptors runs kvbench under a low open-file limit, as
// `ulimit -n` sets it, with more clients than the limit allows. That is a
// local limit: the message says so and how to raise it, where it said
// "server unreachable: ... socket: too many open files".
func TestOutOfFileDescriptors(t *testing.T) {
	addr := startServer(t, fakeserver.Options{})
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	low := old
	low.Cur = 64
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
				t.Errorf("restore the open-file limit: %v", err)
			}
		}
	}
	t.Cleanup(restore)

	var stdout, stderr bytes.Buffer
	// Connections the server had no descriptor to accept wait for their
	// PING until -timeout: a short one keeps the test short.
	code := run(context.Background(), []string{"-addr", addr, "-clients", "200", "-n", "10", "-warmup", "0", "-timeout", "1s"}, &stdout, &stderr)
	restore()
	msg := stderr.String()
	if code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, msg)
	}
	for _, want := range []string{"kvbench: out of file descriptors: -clients 200", "limit of 64", "a local limit, not the server's", "ulimit -n", "lower -clients"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "unreachable") || strings.Count(msg, "\n") != 1 {
		t.Errorf("stderr %q: want one line, not blaming the server", msg)
	}
}
