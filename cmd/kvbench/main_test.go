package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/bench"
	"github.com/kvstore/kv/bench/fakeserver"
)

func startServer(t *testing.T, opts fakeserver.Options) string {
	t.Helper()
	s, err := fakeserver.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Addr()
}

// TestReadmeCommand runs the command the issue names, -clients 512 -ops
// put,get, against a fake server instead of 127.0.0.1:8080, for a few
// thousand requests.
func TestReadmeCommand(t *testing.T) {
	addr := startServer(t, fakeserver.Options{})
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"-clients", "512", "-ops", "put,get", "-addr", addr, "-n", "5000", "-warmup", "0"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"512 clients × pipeline 1", "put=1,get=1", "5,000 requests", "  put ", "  get ", "  all  5,000 "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestReportFiles(t *testing.T) {
	for _, proto := range []string{"pipe", "resp"} {
		t.Run(proto, func(t *testing.T) {
			addr := startServer(t, fakeserver.Options{})
			dir := t.TempDir()
			jsonPath := filepath.Join(dir, "run.json")
			histPath := filepath.Join(dir, "lat.hgrm")
			htmlPath := filepath.Join(dir, "run.html")
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{
				"-addr", addr + "," + addr, "-proto", proto, "-clients", "4", "-pipeline", "4",
				"-ops", "put=1,get=8,ping=1", "-n", "2000", "-warmup", "0", "-prefill", "-verify",
				"-dist", "zipf", "-value-size", "10-200", "-keys", "500",
				"-json", jsonPath, "-hist", histPath, "-report", htmlPath,
			}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
			}
			f, err := os.Open(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res, err := bench.ReadJSON(f)
			if err != nil {
				t.Fatal(err)
			}
			if res.All.Count != 2000 || res.Run.Proto != proto || !res.Run.Verify || res.Run.Dist != "zipf" {
				t.Errorf("JSON report: %+v", res.Run)
			}
			for _, p := range []string{histPath, filepath.Join(dir, "lat.put.hgrm"), filepath.Join(dir, "lat.get.hgrm"), filepath.Join(dir, "lat.ping.hgrm")} {
				b, err := os.ReadFile(p)
				if err != nil || !strings.HasPrefix(string(b), " Value\tPercentile") {
					t.Errorf("%s: %v %.40q", p, err, b)
				}
			}
			page, err := os.ReadFile(htmlPath)
			if err != nil || !strings.Contains(string(page), "<svg") {
				t.Errorf("HTML report: %v", err)
			}
			matches, _ := filepath.Glob(filepath.Join(dir, "*.tmp"))
			if len(matches) > 0 {
				t.Errorf("temporary files left: %v", matches)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		msg  string // in stderr
	}{
		{"unreachable", []string{"-addr", "127.0.0.1:1", "-n", "10"}, 1, "kvbench: server unreachable: "},
		{"errors", []string{"-addr", startServer(t, fakeserver.Options{Fail: func(c string) string {
			if c == "GET" {
				return "boom"
			}
			return ""
		}}), "-n", "10", "-clients", "1", "-ops", "get", "-warmup", "0"}, 1, "too many errors"},
		{"wrong password", []string{"-addr", startServer(t, fakeserver.Options{Password: "right"}), "-a", "wrong", "-n", "10"}, 1,
			"kvbench: authentication failed on "},
		{"nothing measured", []string{"-addr", startServer(t, fakeserver.Options{}), "-duration", "1ns", "-warmup", "0"}, 1,
			"kvbench: no request was measured"},
		{"bad flag", []string{"-clients", "x"}, 2, "invalid value"},
		{"bad mix", []string{"-ops", "put=0"}, 2, "weight of put"},
		{"bad proto", []string{"-proto", "http"}, 2, "unknown protocol"},
		{"bad size", []string{"-value-size", "9-1"}, 2, "value size"},
		{"stray argument", []string{"-n", "1", "now"}, 2, "unexpected argument"},
		{"version", []string{"-version"}, 0, ""},
		{"tolerated errors", []string{"-addr", startServer(t, fakeserver.Options{Fail: func(c string) string {
			if c == "PUT" {
				return "boom"
			}
			return ""
		}}), "-n", "100", "-clients", "1", "-max-errors", "1000", "-warmup", "0"}, 0, ""},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code {
			t.Errorf("%s: exit %d, want %d\n%s", tt.name, code, tt.code, stderr.String())
		}
		if tt.msg != "" && !strings.Contains(stderr.String(), tt.msg) {
			t.Errorf("%s: stderr %q lacks %q", tt.name, stderr.String(), tt.msg)
		}
		if tt.name == "nothing measured" && !strings.Contains(stdout.String(), "WARNING   no request was measured") {
			t.Errorf("%s: report has no warning:\n%s", tt.name, stdout.String())
		}
		if (tt.name == "unreachable" || tt.name == "wrong password") && strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%s: message is not one line: %q", tt.name, stderr.String())
		}
	}
}

func TestOpPath(t *testing.T) {
	for in, want := range map[string]string{"lat.hgrm": "lat.put.hgrm", "out/lat": "out/lat.put", "a.b/c.txt": "a.b/c.put.txt"} {
		if got := opPath(in, "put"); got != want {
			t.Errorf("opPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestInterruptedWhileConnecting: Ctrl-C while kvbench waits for a server
// that takes connections but does not answer exits at once, saying it was
// interrupted, not after -timeout (an hour here).
func TestInterruptedWhileConnecting(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn, 64) // kept open, never answered
	t.Cleanup(func() {
		_ = ln.Close()
		for len(conns) > 0 {
			_ = (<-conns).Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as if Ctrl-C came while connecting
	var stdout, stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"-addr", ln.Addr().String(), "-n", "10", "-timeout", "1h"}, &stdout, &stderr)
	}()
	select {
	case c := <-code:
		if c != 1 || stderr.String() != "kvbench: interrupted\n" {
			t.Errorf("exit %d, stderr %q; want 1 and kvbench: interrupted", c, stderr.String())
		}
	case <-time.After(time.Minute): // a guard against the hang, not a timing check
		t.Fatal("kvbench did not stop when interrupted while connecting")
	}
}
