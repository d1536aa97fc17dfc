package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"github.com/kvstore/kv/client"
)

// TestGoClientAgainstServer drives the real server with the Go client.
func TestGoClientAgainstServer(t *testing.T) {
	n := startNode(t, `requirepass = "pw"`, "")
	ctx := ctxT(t)
	c, err := client.Dial(n.addr, client.Options{Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bin := []byte("a|b\\c\nd\re\x00f")
	if err := c.Put(ctx, []byte("bin"), bin); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, []byte("bin")); err != nil || !bytes.Equal(v, bin) {
		t.Fatalf("binary round trip: %q %v", v, err)
	}
	if _, err := c.Get(ctx, []byte("missing")); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	var kvs []client.KV
	for i := 0; i < 20; i++ {
		kvs = append(kvs, client.KV{Key: []byte(fmt.Sprintf("r%02d", i)), Value: []byte(fmt.Sprint(i))})
	}
	if err := c.Batch(ctx, kvs); err != nil {
		t.Fatal(err)
	}
	got, err := c.Range(ctx, []byte("r05"), []byte("r10"), 0)
	if err != nil || len(got) != 5 || string(got[0].Key) != "r05" {
		t.Fatalf("range: %v %v", got, err)
	}
	if err := c.Delete(ctx, []byte("r05")); err != nil {
		t.Fatal(err)
	}
	st, err := c.ClusterStatus(ctx)
	if err != nil || st.Get("mode") != "standalone" || st.Get("state") != "healthy" {
		t.Fatalf("status: %v %v", st, err)
	}
	p := c.Pipeline()
	for i := 0; i < 500; i++ {
		p.Put([]byte(fmt.Sprintf("pl%d", i)), []byte(fmt.Sprint(i)))
		p.Get([]byte(fmt.Sprintf("pl%d", i)))
	}
	res, err := p.Exec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		if r := res[2*i+1]; r.Err != nil || string(r.Value) != fmt.Sprint(i) {
			t.Fatalf("pipelined read-your-write %d: %q %v", i, r.Value, r.Err)
		}
	}
	// Concurrent use of one client.
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				k := []byte(fmt.Sprintf("g%d-%d", g, i))
				if err := c.Put(ctx, k, k); err != nil {
					t.Error(err)
					return
				}
				if v, err := c.Get(ctx, k); err != nil || !bytes.Equal(v, k) {
					t.Errorf("concurrent get: %q %v", v, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

// TestKvcliAgainstServer runs the kvcli binary: outputs and exit codes.
func TestKvcliAgainstServer(t *testing.T) {
	n := startNode(t, "", "")
	bin := toolBin(t, "kvcli")
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"-addr", n.addr}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)), code
	}
	for _, tc := range []struct {
		args []string
		out  string
		code int
	}{
		{[]string{"ping"}, "PONG", 0},
		{[]string{"put", "greeting", "hello world"}, "OK", 0},
		{[]string{"get", "greeting"}, "hello world", 0},
		{[]string{"batch", "a", "1", "b", "2"}, "", 0},
		{[]string{"range", "a", "c"}, "a\t1\nb\t2", 0},
		{[]string{"delete", "greeting"}, "OK", 0},
		{[]string{"get", "greeting"}, "", 1},
		{[]string{"raw", "NOSUCH"}, "", 2},
	} {
		out, code := run(tc.args...)
		if code != tc.code || (tc.out != "" && out != tc.out) {
			t.Errorf("kvcli %v: exit %d output %q; want exit %d output %q", tc.args, code, out, tc.code, tc.out)
		}
	}
	if out, code := run("cluster", "status"); code != 0 || !strings.Contains(out, "standalone") {
		t.Errorf("cluster status: %d %q", code, out)
	}
}
