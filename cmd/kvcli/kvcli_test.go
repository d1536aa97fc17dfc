package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chzyer/readline"
)

// kvcli runs the program with args against s and returns its exit status
// and output.
func kvcli(t *testing.T, s *fakeServer, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if s != nil {
		args = append([]string{"-addr", s.addr()}, args...)
	}
	code = run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestOneShotCommands(t *testing.T) {
	s := newFakeServer(t, "")
	tests := []struct {
		args    []string
		code    int
		stdout  string
		stderr  string   // substring
		request []string // last request the server saw; nil: not checked
	}{
		{[]string{"ping"}, 0, "PONG\n", "", []string{"PING"}},
		{[]string{"put", "k1", "hello world"}, 0, "OK\n", "", []string{"PUT", "k1", "hello world"}},
		{[]string{"get", "k1"}, 0, "hello world\n", "", []string{"GET", "k1"}},
		{[]string{"GET", "k1"}, 0, "hello world\n", "", nil},
		{[]string{"put", "a|b", "x\\y\nz"}, 0, "OK\n", "", []string{"PUT", "a|b", "x\\y\nz"}},
		{[]string{"get", "a|b"}, 0, "x\\y\nz\n", "", nil},
		{[]string{"get", "missing"}, 1, "", "(not found)", nil},
		{[]string{"delete", "k1"}, 0, "OK\n", "", []string{"DELETE", "k1"}},
		{[]string{"del", "k1"}, 0, "OK\n", "", []string{"DELETE", "k1"}},
		{[]string{"get", "k1"}, 1, "", "", nil},
		{[]string{"batch", "b1", "1", "b2", "2", "b3", "3"}, 0, "OK (3 pairs)\n", "", []string{"BATCH", "b1", "1", "b2", "2", "b3", "3"}},
		{[]string{"range", "b1", "b3"}, 0, "b1\t1\nb2\t2\n", "", []string{"RANGE", "b2\x00", "b3"}}, // the page after the last key is empty
		{[]string{"range", "b", "", "2"}, 0, "b1\t1\nb2\t2\n", "", []string{"RANGE", "b", "", "2"}},
		{[]string{"range", "z", ""}, 0, "", "", nil},
		{[]string{"cluster", "status"}, 0, "mode: standalone\nstate: healthy\nnode_id: 1\nnodes: 1\nnodes_up: 1\nshards: 1\nshards_with_leader: 1\n", "", []string{"CLUSTER_STATUS"}},
		{[]string{"cluster", "nodes"}, 0, "id=1,client=127.0.0.1:8080,raft=,state=up\n", "", []string{"CLUSTER_NODES"}},
		{[]string{"cluster", "leader"}, 0, "id=1,client=127.0.0.1:8080\n", "", []string{"CLUSTER_LEADER"}},
		{[]string{"cluster", "leader", "k|x"}, 0, "id=1,client=127.0.0.1:8080\n", "", []string{"CLUSTER_LEADER", "k|x"}},
		{[]string{"cluster", "shards"}, 0, "shard=1,leader=127.0.0.1:8080\n", "", []string{"CLUSTER_LEADER", "0"}},
		{[]string{"cluster", "remove", "3"}, 0, "OK\n", "", []string{"CLUSTER_REMOVE", "3"}},
		// A shard not shown consistent is an error: exit 2, after every line.
		{[]string{"cluster", "check"}, 2, "shard=1,index=9,state=consistent,keys=3,nodes=1:aa/2:aa\nshard=2,index=8,state=inconsistent,keys=4,nodes=1:bb/2:cc\n",
			"1 of 2 shards not shown consistent", []string{"CLUSTER_CHECK"}},
		{[]string{"cluster", "remove", "1"}, 2, "", "server error: cannot remove node 1", nil},
		{[]string{"raw", "GET", "b1"}, 0, "VALUE\n1\n", "", []string{"GET", "b1"}},
		{[]string{"raw", "FROB"}, 2, "", "unknown command 'FROB'", nil},
		// raw prints any reply but ERROR as is, NOT_FOUND included: exit 0.
		{[]string{"raw", "GET", "missing"}, 0, "NOT_FOUND\n", "", []string{"GET", "missing"}},
		// Usage errors: nothing is sent.
		{[]string{"get"}, 2, "", "usage: get key", nil},
		{[]string{"put", "k"}, 2, "", "usage: put key value", nil},
		{[]string{"batch", "k", "v", "k2"}, 2, "", "usage: batch", nil},
		{[]string{"range", "a", "b", "0"}, 2, "", "limit must be a positive integer", nil},
		{[]string{"cluster", "explode"}, 2, "", "usage: cluster status", nil},
		{[]string{"cluster", "remove", "x"}, 2, "", "node id must be a positive integer", nil},
		{[]string{"cluster", "remove", "0"}, 2, "", "node id must be a positive integer", nil},
		{[]string{"frob"}, 2, "", `unknown command "frob"`, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := kvcli(t, s, "", tt.args...)
			if code != tt.code || out != tt.stdout || !strings.Contains(errOut, tt.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
					code, out, errOut, tt.code, tt.stdout, tt.stderr)
			}
			if tt.request != nil && !reflect.DeepEqual(s.last(), tt.request) {
				t.Fatalf("server got %q, want %q", s.last(), tt.request)
			}
		})
	}
}

func TestHostPortFlags(t *testing.T) {
	s := newFakeServer(t, "")
	host, port, _ := net.SplitHostPort(s.addr())
	var out, errOut bytes.Buffer
	if code := run([]string{"-h", host, "-p", port, "ping"}, strings.NewReader(""), &out, &errOut); code != 0 || out.String() != "PONG\n" {
		t.Fatalf("exit %d, %q, %q", code, out.String(), errOut.String())
	}
}

func TestPassword(t *testing.T) {
	s := newFakeServer(t, "pw")
	if code, out, errOut := kvcli(t, s, "", "-a", "pw", "put", "k", "v"); code != 0 || out != "OK\n" {
		t.Fatalf("with password: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut := kvcli(t, s, "", "put", "k", "v"); code != 2 || !strings.Contains(errOut, "NOAUTH") {
		t.Fatalf("without password: exit %d, %q", code, errOut)
	}
	if code, _, errOut := kvcli(t, s, "", "-a", "nope", "ping"); code != 2 || !strings.Contains(errOut, "invalid password") {
		t.Fatalf("wrong password: exit %d, %q", code, errOut)
	}
}

// TestMain keeps the password of the user running the tests out of them.
func TestMain(m *testing.M) {
	os.Unsetenv("KVCLI_AUTH")
	os.Exit(m.Run())
}

// TestPasswordFromEnv: KVCLI_AUTH gives the password without showing it
// in ps as -a does; -a, even empty, wins when both are given.
func TestPasswordFromEnv(t *testing.T) {
	s := newFakeServer(t, "pw")
	t.Setenv("KVCLI_AUTH", "pw")
	if code, out, errOut := kvcli(t, s, "", "put", "k", "v"); code != 0 || out != "OK\n" {
		t.Fatalf("KVCLI_AUTH=pw: exit %d, %q, %q", code, out, errOut)
	}
	if code, out, errOut := kvcli(t, s, "get k\n"); code != 0 || out != "v\n" {
		t.Fatalf("KVCLI_AUTH=pw, prompt: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut := kvcli(t, s, "", "-a", "nope", "ping"); code != 2 || !strings.Contains(errOut, "invalid password") {
		t.Fatalf("-a nope, KVCLI_AUTH=pw: exit %d, %q; want -a to win", code, errOut)
	}
	if code, _, errOut := kvcli(t, s, "", "-a", "", "put", "k", "v"); code != 2 || !strings.Contains(errOut, "NOAUTH") {
		t.Fatalf("-a '', KVCLI_AUTH=pw: exit %d, %q; want -a to win", code, errOut)
	}
	t.Setenv("KVCLI_AUTH", "nope")
	if code, out, errOut := kvcli(t, s, "", "-a", "pw", "put", "k", "v"); code != 0 || out != "OK\n" {
		t.Fatalf("-a pw, KVCLI_AUTH=nope: exit %d, %q, %q", code, out, errOut)
	}
	if _, _, errOut := kvcli(t, nil, "", "-help"); !strings.Contains(errOut, "KVCLI_AUTH") {
		t.Errorf("-help does not mention KVCLI_AUTH:\n%s", errOut)
	}
}

// TestAuthCommand: auth authenticates the client, not one connection as
// raw AUTH does: after the server closes the connection (raw QUIT), the
// new one authenticates too.
func TestAuthCommand(t *testing.T) {
	s := newFakeServer(t, "pw")
	input := "get k\nauth nope\nauth pw\nput k v\nraw QUIT\nget k\n"
	code, out, errOut := kvcli(t, s, input)
	want := "(error) NOAUTH authentication required\n(error) invalid password\nOK\nOK\n1) OK\nv\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d, stderr %q, output:\n%s\nwant:\n%s", code, errOut, out, want)
	}
	s.mu.Lock()
	reqs := slices.Clone(s.requests)
	s.mu.Unlock()
	i := slices.IndexFunc(reqs, func(r []string) bool { return r[0] == "QUIT" })
	if i < 0 || !reflect.DeepEqual(reqs[i+1:], [][]string{{"AUTH", "pw"}, {"GET", "k"}}) {
		t.Errorf("requests from QUIT on: %q, want QUIT, then AUTH pw on the new connection, then GET", reqs[max(i, 0):])
	}

	// A wrong -a keeps the prompt from connecting; auth sets the password
	// it connects with.
	code, out, errOut = kvcli(t, s, "ping\nauth pw\nget k\n", "-a", "nope")
	if code != 0 || !strings.Contains(errOut, "not connected") {
		t.Fatalf("-a nope: exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(out, "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "(error) not connected: ") || !strings.Contains(lines[0], "invalid password") ||
		lines[1] != "OK" || lines[2] != "v" {
		t.Fatalf("-a nope, then auth pw: output:\n%s", out)
	}

	// One-shot, it checks a password.
	if code, out, errOut := kvcli(t, s, "", "auth", "pw"); code != 0 || out != "OK\n" {
		t.Fatalf("auth pw: exit %d, %q, %q", code, out, errOut)
	}
	if code, _, errOut := kvcli(t, s, "", "auth", "nope"); code != 2 || !strings.Contains(errOut, "invalid password") {
		t.Fatalf("auth nope: exit %d, %q", code, errOut)
	}
	if _, out, _ := kvcli(t, nil, "", "help"); !strings.Contains(out, "auth password") {
		t.Errorf("help does not list auth:\n%s", out)
	}
}

// TestPromptWithoutServer: the prompt starts with no server, says it is
// not connected, reports each command's failure to connect, and connects
// once the server is up. One-shot commands fail at once (TestNoServer).
func TestPromptWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var errOut bytes.Buffer
	done := make(chan int, 1)
	go func() {
		code := run([]string{"-addr", addr}, inR, outW, &errOut)
		inR.Close() // unblock the test's writes if run ended early
		outW.Close()
		done <- code
	}()
	replies := bufio.NewScanner(outR)
	send := func(line string) string {
		t.Helper()
		if _, err := fmt.Fprintln(inW, line); err != nil {
			t.Fatalf("the prompt ended before %q: exit %d, stderr %q", line, <-done, errOut.String())
		}
		if !replies.Scan() {
			t.Fatalf("no reply to %q: exit %d, stderr %q", line, <-done, errOut.String())
		}
		return replies.Text()
	}

	if got := send("ping"); !strings.HasPrefix(got, "(error) not connected: ") || !strings.Contains(got, addr) {
		t.Fatalf("ping with no server: %q, want a not connected error naming %s", got, addr)
	}
	if got := send("frob"); !strings.HasPrefix(got, "(usage) unknown command") {
		t.Fatalf("frob with no server: %q, want a usage error", got)
	}
	newFakeServerAt(t, addr, "")
	if got := send("ping"); got != "PONG" {
		t.Fatalf("ping once the server is up: %q", got)
	}
	if got := send("put k v"); got != "OK" {
		t.Fatalf("put: %q", got)
	}
	inW.Close()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "not connected") {
		t.Errorf("no notice that the prompt started unconnected: stderr %q", errOut.String())
	}
}

func TestNoServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, _, errOut := kvcli(t, nil, "", "-addr", addr, "ping")
	if code != 2 || !strings.Contains(errOut, addr) {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

// TestUsageBeforeDial: arguments are checked before connecting, so a
// wrong one is reported as such with no server running.
func TestUsageBeforeDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, args := range [][]string{
		{"range", "a", "b", "0"},
		{"range", "a", "b", "-3"},
		{"range", "a", "b", "many"},
		{"cluster", "remove", "0"},
		{"cluster", "remove", "-1"},
	} {
		code, _, errOut := kvcli(t, nil, "", append([]string{"-addr", addr}, args...)...)
		if code != 2 || !strings.Contains(errOut, "must be a positive integer") || strings.Contains(errOut, "dial") {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, code, errOut)
		}
	}
}

// TestRangePages: the server caps each RANGE reply (server.range_limit),
// so range asks again from after the last key until the range is done or
// limit pairs are printed.
func TestRangePages(t *testing.T) {
	s := newFakeServer(t, "")
	s.fill("pg:", 25)
	s.fill("zz:", 3)
	s.setRangeLimit(10)
	pairs := func(from, to int) string {
		var b strings.Builder
		for i := from; i < to; i++ {
			fmt.Fprintf(&b, "pg:%05d\tv%d\n", i, i)
		}
		return b.String()
	}
	tests := []struct {
		args     []string
		stdout   string
		requests int
	}{
		{[]string{"range", "pg:", "pg;"}, pairs(0, 25), 4},        // 10, 10, 5, then an empty page
		{[]string{"range", "pg:", "pg;", "20"}, pairs(0, 20), 2},  // 10, 10: the limit is reached
		{[]string{"range", "pg:", "pg;", "15"}, pairs(0, 15), 2},  // 10, then the 5 still wanted
		{[]string{"range", "pg:", "pg;", "100"}, pairs(0, 25), 4}, // the range ends first
		{[]string{"range", "pg:00020", ""}, pairs(20, 25) + "zz:00000\tv0\nzz:00001\tv1\nzz:00002\tv2\n", 2},
	}
	for _, tt := range tests {
		before := s.count("RANGE")
		code, out, errOut := kvcli(t, s, "", tt.args...)
		if code != 0 || out != tt.stdout {
			t.Errorf("%q: exit %d, stderr %q, %d lines, want exit 0 and %d lines; output:\n%s",
				tt.args, code, errOut, strings.Count(out, "\n"), strings.Count(tt.stdout, "\n"), out)
		}
		if n := s.count("RANGE") - before; n != tt.requests {
			t.Errorf("%q: %d RANGE requests, want %d", tt.args, n, tt.requests)
		}
	}

	// Piped to the prompt, the same.
	code, out, errOut := kvcli(t, s, "range pg: pg;\n")
	if code != 0 || out != pairs(0, 25) {
		t.Errorf("piped: exit %d, stderr %q, output:\n%s", code, errOut, out)
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := kvcli(t, nil, "", "-version")
	if code != 0 || out != "kvcli dev\n" {
		t.Fatalf("-version: exit %d, %q", code, out)
	}
	code, out, _ = kvcli(t, nil, "", "help")
	if code != 0 || !strings.Contains(out, "range start end [limit]") {
		t.Fatalf("help: exit %d, %q", code, out)
	}
	code, _, errOut := kvcli(t, nil, "", "-help")
	if code != 0 || !strings.Contains(errOut, "Usage: kvcli") {
		t.Fatalf("-help: exit %d, %q", code, errOut)
	}
	// raw's exit status is documented where the others are.
	if !strings.Contains(errOut, "raw prints the reply as is: exit 0 for any reply but ERROR, NOT_FOUND included") {
		t.Errorf("-help does not say how raw exits:\n%s", errOut)
	}
	if code, _, _ := kvcli(t, nil, "", "-bogus"); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
}

// The prompt, fed from a non-terminal: commands, quoting, readable
// replies, errors that do not end the session, and quit.
func TestInteractive(t *testing.T) {
	s := newFakeServer(t, "")
	input := strings.Join([]string{
		`put greeting "hello world"`,
		`get greeting`,
		`put "it's" "a\x00b"`,
		`get "it's"`,
		`put empty ""`,
		`get empty`,
		`get nothing`,
		``,
		`frob`,
		`get "unterminated`,
		`range "" ""`,
		`range x ""`,
		`raw GET greeting`,
		`cluster status`,
		`help`,
		`quit`,
		`put after quit`,
	}, "\n")
	code, out, errOut := kvcli(t, s, input)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := []string{
		"OK",
		`"hello world"`,
		"OK",
		`"a\x00b"`,
		"OK",
		`""`,
		"(not found)",
		`(usage) unknown command "frob" (try help)`,
		"(usage) unbalanced quotes",
		"empty\t\"\"",
		"greeting\t\"hello world\"",
		"\"it's\"\t\"a\\x00b\"",
		"(empty)",
		"1) VALUE",
		`2) "hello world"`,
		"mode: standalone",
	}
	lines := strings.Split(out, "\n")
	for i, w := range want {
		if i >= len(lines) || lines[i] != w {
			t.Fatalf("output line %d = %q, want %q\nfull output:\n%s", i, lines[min(i, len(lines)-1)], w, out)
		}
	}
	if !strings.Contains(out, "quit, exit") {
		t.Errorf("help output missing the prompt's commands:\n%s", out)
	}
	if _, ok := s.data["after"]; ok {
		t.Error("a command after quit was run")
	}
}

// TestPipedLongLine: a piped line longer than bufio.Scanner's default
// 64 KiB is run like any other, and so are the lines after it.
func TestPipedLongLine(t *testing.T) {
	s := newFakeServer(t, "")
	big := strings.Repeat("x", 200<<10)
	code, out, errOut := kvcli(t, s, "put big "+big+"\nget big\n")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != "OK\n"+big+"\n" {
		t.Fatalf("output %d bytes, want OK and the value", len(out))
	}
}

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  bool
	}{
		{"", nil, false},
		{"   ", nil, false},
		{"get k", []string{"get", "k"}, false},
		{"  put\tk   v  ", []string{"put", "k", "v"}, false},
		{`put "a b" 'c d'`, []string{"put", "a b", "c d"}, false},
		{`put k ""`, []string{"put", "k", ""}, false},
		{`put k ''`, []string{"put", "k", ""}, false},
		{`"a\"b\\c\n\r\t\0"`, []string{"a\"b\\c\n\r\t\x00"}, false},
		{`"\x41\xff"`, []string{"A\xff"}, false},
		{`'don\'t' 'a\nb'`, []string{"don't", `a\nb`}, false},
		{`pre"mid dle"post`, []string{"premid dlepost"}, false},
		{`a|b`, []string{"a|b"}, false},
		{`"open`, nil, true},
		{`'open`, nil, true},
		{`"trailing\`, nil, true},
		{`"\x4"`, nil, true},
		{`"\xzz"`, nil, true},
	}
	for _, tt := range tests {
		got, err := splitArgs(tt.in)
		if (err != nil) != tt.err || (!tt.err && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("splitArgs(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestShow(t *testing.T) {
	tests := []struct {
		in    string
		quote bool
		want  string
	}{
		{"plain", false, "plain"},
		{"a\x00b", false, "a\x00b"},
		{"plain-text", true, "plain-text"},
		{"plain text", true, `"plain text"`},
		{"it's", true, `"it's"`},
		{`a\b`, true, `a\b`},
		{"", true, `""`},
		{" padded", true, `" padded"`},
		{"a\x00b", true, `"a\x00b"`},
		{"tab\there", true, `"tab\there"`},
		{"\xff", true, `"\xff"`},
		{`"quoted"`, true, `"\"quoted\""`},
		{"héllo", true, "héllo"},
		{"héllo wörld", true, `"héllo wörld"`},
		{"\a\b\f\v\x7f", true, `"\x07\x08\x0c\x0b\x7f"`},
		{"nb\u00a0sp", true, `"nb\xc2\xa0sp"`},
		{"\u202egnp.exe", true, `"\xe2\x80\xaegnp.exe"`},
		{"\xe6\x97", true, `"\xe6\x97"`},
	}
	for _, tt := range tests {
		if got := show([]byte(tt.in), tt.quote); got != tt.want {
			t.Errorf("show(%q, %v) = %q, want %q", tt.in, tt.quote, got, tt.want)
		}
	}
}

// TestShowReadsBack: whatever the prompt prints for a value, typed back at
// the prompt, is that value.
func TestShowReadsBack(t *testing.T) {
	values := []string{
		"", " ", "  ", "a b", " lead", "trail ", "it's", `say "hi"`, `'`, `"`, `\`, `\x41`, `\n`,
		"héllo", "日本語", "😀", "\ufffd", "\u00a0", "\u2028", "\u202e", "\u200b", "\ufeff",
		"\xe6\x97", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x00\x01", "\x001", "\\x00",
	}
	var all []byte
	for c := range 256 {
		values = append(values, string(rune(c)), string([]byte{byte(c)}), "a"+string([]byte{byte(c)})+"b")
		all = append(all, byte(c))
	}
	values = append(values, string(all))
	for _, v := range values {
		checkReadsBack(t, v)
	}
}

func FuzzShowReadsBack(f *testing.F) {
	f.Add("a\x00b")
	f.Add("héllo wörld")
	f.Add("\xff\xfe 'x' \"y\"")
	f.Fuzz(func(t *testing.T, v string) { checkReadsBack(t, v) })
}

func checkReadsBack(t *testing.T, v string) {
	t.Helper()
	shown := show([]byte(v), true)
	args, err := splitArgs(shown)
	if err != nil || len(args) != 1 || args[0] != v {
		t.Errorf("show(%q) = %s, read back as %q, %v", v, shown, args, err)
	}
	for _, r := range shown {
		if !strconv.IsPrint(r) {
			t.Errorf("show(%q) = %q prints %U", v, shown, r)
		}
	}
}

// TestHistoryOwnerOnly: ~/.kvcli_history keeps what is typed at the
// prompt (not passwords, but an older kvcli's history may hold them): it
// is made readable by its owner only,
// whether kvcli creates it, finds it from an older kvcli, or readline
// rewrites it to trim it.
func TestHistoryOwnerOnly(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	path := filepath.Join(home, ".kvcli_history")
	checkMode := func(when string) {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", when, fi.Mode().Perm())
		}
	}

	got, err := historyFile()
	if err != nil || got != path {
		t.Fatalf("historyFile() = %q, %v; want %q", got, err, path)
	}
	checkMode("created")

	// An older kvcli's history, longer than readline keeps.
	var lines strings.Builder
	for i := range 600 {
		fmt.Fprintf(&lines, "raw AUTH secret%d\n", i)
	}
	if err := os.WriteFile(path, []byte(lines.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := historyFile(); err != nil {
		t.Fatal(err)
	}
	checkMode("existing")
	if b, err := os.ReadFile(path); err != nil || string(b) != lines.String() {
		t.Fatalf("the history changed: %d bytes, %v", len(b), err)
	}

	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rl, err := newReadline(&readline.Config{HistoryFile: path, Stdin: stdin, Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	// Read a line before Close: readline's input loop registers with a
	// WaitGroup from inside its goroutine, so a Close right after NewEx is
	// a data race.
	fmt.Fprintln(w, "raw AUTH typed")
	if line, err := rl.Readline(); err != nil || line != "raw AUTH typed" {
		t.Fatalf("Readline() = %q, %v", line, err)
	}
	rl.Close()
	checkMode("trimmed by readline")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(b), "\n") >= 600 {
		t.Errorf("readline did not trim the history: the test no longer covers its rewrite")
	}
}

// savingLines is a lineReader with a history, as readline's.
type savingLines struct {
	lines []string
	saved []string
}

func (s *savingLines) Readline() (string, error) {
	if len(s.lines) == 0 {
		return "", io.EOF
	}
	line := s.lines[0]
	s.lines = s.lines[1:]
	return line, nil
}

func (s *savingLines) SaveHistory(line string) error {
	s.saved = append(s.saved, line)
	return nil
}

// TestHistoryKeepsNoPasswords: lines that send a password (auth, raw
// AUTH) are not saved in the history; the others are.
func TestHistoryKeepsNoPasswords(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: each command fails, which is fine here
	lr := &savingLines{lines: []string{"auth s3cret", "get k", "raw AUTH s3cret", "  Auth x", "raw auth y", "raw get k",
		// Quoted, the words are the same commands.
		`"auth" s3cret`, `raw "AUTH" s3cret`, `'raw' auth s3cret`, `"au"th s3cret`, `raw AU"TH" s3cret`,
		// Not run (unbalanced), but a password all the same.
		`"auth" "s3cret`}}
	s := &session{addr: addr}
	if err := repl(context.Background(), s, lr, io.Discard); err != nil {
		t.Fatal(err)
	}
	if want := []string{"get k", "raw get k"}; !slices.Equal(lr.saved, want) {
		t.Fatalf("history %q, want %q", lr.saved, want)
	}
}

// failingWriter fails every write, as a full disk or a closed pipe does.
type failingWriter struct{ writes int }

func (f *failingWriter) Write([]byte) (int, error) {
	f.writes++
	return 0, errors.New("no space left on device")
}

// TestPromptOutputFails: when the replies cannot be written (kvcli <
// script > file on a full disk), the prompt stops and exits 2, rather
// than run the rest of the script unseen and exit 0.
func TestPromptOutputFails(t *testing.T) {
	s := newFakeServer(t, "")
	var out failingWriter
	var errOut bytes.Buffer
	code := run([]string{"-addr", s.addr()}, strings.NewReader("get k\nput k v\nput k2 v\n"), &out, &errOut)
	if code != exitError || !strings.Contains(errOut.String(), "no space left on device") {
		t.Fatalf("exit %d, stderr %q; want exit 2 naming the write error", code, errOut.String())
	}
	if n := s.count("PUT"); n != 0 {
		t.Errorf("%d PUTs run after the output failed, want none", n)
	}
}
