package e2e

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

func newRedis(t *testing.T, addr string, opts ...func(*redis.Options)) *redis.Client {
	o := &redis.Options{Addr: addr, MaxRetries: -1}
	for _, f := range opts {
		f(o)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRESPCommands drives PROTOCOL.md's RESP subset with go-redis.
func TestRESPCommands(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	r := newRedis(t, n.addr)

	if v, err := r.Ping(ctx).Result(); err != nil || v != "PONG" {
		t.Fatalf("PING: %q %v", v, err)
	}
	if v, err := r.Echo(ctx, "hello").Result(); err != nil || v != "hello" {
		t.Fatalf("ECHO: %q %v", v, err)
	}
	if err := r.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET: %q %v", v, err)
	}
	if _, err := r.Get(ctx, "nope").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET missing: %v", err)
	}
	// TYPE and STRLEN (what redis-cli --bigkeys asks), also right behind a
	// pipelined SET of the key.
	pipe := r.Pipeline()
	pipe.Set(ctx, "sized", "12345", 0)
	typ, strlen := pipe.Type(ctx, "sized"), pipe.StrLen(ctx, "sized")
	typNone, strlenNone := pipe.Type(ctx, "nope"), pipe.StrLen(ctx, "nope")
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if typ.Val() != "string" || strlen.Val() != 5 || typNone.Val() != "none" || strlenNone.Val() != 0 {
		t.Fatalf("TYPE/STRLEN: %q %d, missing key %q %d", typ.Val(), strlen.Val(), typNone.Val(), strlenNone.Val())
	}
	if err := r.SetNX(ctx, "k", "v", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "ERR") {
		t.Fatalf("SET NX must be refused: %v", err)
	}
	if err := r.Set(ctx, "k", "v", 1e9).Err(); err == nil {
		t.Fatal("SET EX must be refused")
	}
	if err := r.MSet(ctx, "m1", "1", "m2", "2", "m3", "3").Err(); err != nil {
		t.Fatal(err)
	}
	vals, err := r.MGet(ctx, "m1", "missing", "m3").Result()
	if err != nil || fmt.Sprint(vals) != "[1 <nil> 3]" {
		t.Fatalf("MGET: %v %v", vals, err)
	}
	if n, err := r.Exists(ctx, "m1", "m2", "missing").Result(); err != nil || n != 2 {
		t.Fatalf("EXISTS: %d %v", n, err)
	}
	if n, err := r.Del(ctx, "m1", "missing", "m2").Result(); err != nil || n != 2 {
		t.Fatalf("DEL: %d %v", n, err)
	}
	if n, err := r.Exists(ctx, "m1", "m2").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS after DEL: %d %v", n, err)
	}
	r.Set(ctx, "dup", "v", 0)
	if n, err := r.Del(ctx, "dup", "dup", "missing").Result(); err != nil || n != 1 {
		t.Fatalf("DEL of a key named twice: %d %v, want 1 (keys that existed)", n, err)
	}
	if n, err := r.DBSize(ctx).Result(); err != nil || n < 1 {
		t.Fatalf("DBSIZE: %d %v", n, err)
	}
	info, err := r.Info(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range []string{"# Server", "# Clients", "# Stats", "# Persistence", "# Keyspace", "# Cluster"} {
		if !strings.Contains(info, sec) {
			t.Errorf("INFO lacks %s", sec)
		}
	}
	// Fields redis-cli --stat reads (it printed LONG_MIN for each missing one).
	for _, field := range []string{"used_memory", "used_memory_rss", "blocked_clients", "total_commands_processed", "total_connections_received", "connected_clients"} {
		v, ok := infoField(info, field)
		if n, err := strconv.ParseInt(v, 10, 64); !ok || err != nil || n < 0 || (strings.HasPrefix(field, "used_memory") && n == 0) {
			t.Errorf("INFO %s: %q", field, v)
		}
	}
	if info, _ := r.Info(ctx, "keyspace").Result(); strings.Contains(info, "# Server") || !strings.Contains(info, "db0:keys=") {
		t.Errorf("INFO keyspace: %q", info)
	}
	if info, _ := r.Info(ctx, "keyspace", "server").Result(); !strings.Contains(info, "# Server") || !strings.Contains(info, "# Keyspace") || strings.Contains(info, "# Clients") {
		t.Errorf("INFO keyspace server: %q", info)
	}
	if err := r.Do(ctx, "AUTH", "anything").Err(); err != nil {
		t.Errorf("AUTH without requirepass: %v, want +OK", err)
	}
	if err := r.Do(ctx, "SELECT", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Do(ctx, "SELECT", "1").Err(); err == nil {
		t.Fatal("SELECT 1 accepted")
	}
	cfg, err := r.ConfigGet(ctx, "appendonly").Result()
	if err != nil || cfg["appendonly"] != "yes" {
		t.Fatalf("CONFIG GET: %v %v", cfg, err)
	}
	if cfg, _ := r.ConfigGet(ctx, "nosuchthing").Result(); len(cfg) != 0 {
		t.Fatalf("CONFIG GET unknown: %v", cfg)
	}
	host, port, _ := net.SplitHostPort(n.addr)
	if cfg, err := r.ConfigGet(ctx, "*").Result(); err != nil || cfg["bind"] != host || cfg["port"] != port || cfg["maxmemory"] != "0" {
		t.Fatalf("CONFIG GET bind, port, maxmemory: %v %v", cfg, err)
	}
	if info, _ := r.Info(ctx, "replication").Result(); !strings.Contains(info, "# Replication\r\nrole:master\r\nconnected_slaves:0\r\n") {
		t.Errorf("INFO replication: %q", info)
	}
	if err := r.Do(ctx, "CLIENT", "SETNAME", "tester").Err(); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Do(ctx, "CLIENT", "GETNAME").Text(); err != nil || v != "tester" {
		t.Fatalf("CLIENT GETNAME: %q %v", v, err)
	}
	if err := r.Do(ctx, "CLIENT", "SETNAME", strings.Repeat("n", 513)).Err(); err == nil || !strings.Contains(err.Error(), "limited to 512 bytes") {
		t.Fatalf("CLIENT SETNAME of 513 bytes: %v", err)
	}
	if err := r.Do(ctx, "HELLO", "2", "SETNAME", "a\x01b").Err(); err == nil || !strings.Contains(err.Error(), "cannot contain") {
		t.Fatalf("HELLO SETNAME with a control byte: %v", err)
	}
	if id, err := r.Do(ctx, "CLIENT", "ID").Int64(); err != nil || id <= 0 {
		t.Fatalf("CLIENT ID: %d %v", id, err)
	}
	if err := r.Do(ctx, "HELLO", "3").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPROTO") {
		t.Fatalf("HELLO 3: %v", err)
	}
	if v, err := r.Do(ctx, "HELLO", "2").Slice(); err != nil || len(v) != 14 {
		t.Fatalf("HELLO 2: %v %v", v, err)
	}
	if n, err := r.Do(ctx, "COMMAND", "COUNT").Int64(); err != nil || n <= 0 {
		t.Fatalf("COMMAND COUNT: %d %v", n, err)
	}
	if err := r.Do(ctx, "COMMAND", "DOCS").Err(); err != nil {
		t.Fatalf("COMMAND DOCS: %v", err)
	}
	if err := r.FlushAll(ctx).Err(); err == nil {
		t.Fatal("FLUSHALL must be refused without allow_flush")
	}
	if err := r.Do(ctx, "NOSUCH", "x").Err(); err == nil || err.Error() != "ERR unknown command 'NOSUCH'" {
		t.Fatalf("unknown command: %v", err)
	}
	if err := r.Do(ctx, "GET").Err(); err == nil || err.Error() != "ERR wrong number of arguments for 'get' command" {
		t.Fatalf("arity: %v", err)
	}
}

// TestRESPScan pages with SCAN and MATCH.
func TestRESPScan(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	r := newRedis(t, n.addr)
	want := map[string]bool{}
	for i := 0; i < 95; i++ {
		k := fmt.Sprintf("user:%03d", i)
		want[k] = true
		if err := r.Set(ctx, k, "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.Set(ctx, fmt.Sprintf("other:%d", i), "y", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	iter := r.Scan(ctx, 0, "user:*", 20).Iterator()
	for iter.Next(ctx) {
		got = append(got, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(got)
	if len(got) != len(want) {
		t.Fatalf("SCAN MATCH found %d keys, want %d", len(got), len(want))
	}
	for _, k := range got {
		if !want[k] {
			t.Fatalf("unexpected key %q", k)
		}
	}
}

// TestRESPScanCostIsBounded: a MATCH pattern whose stars would make a
// backtracking matcher exponential answers at once; a match too costly for
// one call's budget ends the reply early and the cursor resumes after it, so
// paging still finds every key; over-long patterns and too many CONFIG GET
// patterns are refused.
func TestRESPScanCostIsBounded(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	r := newRedis(t, n.addr)
	long := strings.Repeat("a", 20000)
	for i := 0; i < 10; i++ {
		if err := r.Set(ctx, fmt.Sprintf("%s%02d", long, i), "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Set(ctx, strings.Repeat("a", 60), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	keys, _, err := r.Scan(ctx, 0, strings.Repeat("*a", 12)+"*b", 100).Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("SCAN with a pattern matching nothing: %d keys, %v", len(keys), err)
	}
	// 500 stars: each 20 KB key costs more than one call's budget.
	pattern := strings.Repeat("*a", 500) + "*"
	var got []string
	calls := 0
	for cursor := uint64(0); ; {
		page, next, err := r.Scan(ctx, cursor, pattern, 100).Result()
		if err != nil {
			t.Fatal(err)
		}
		calls++
		got = append(got, page...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	if len(got) != 10 {
		t.Fatalf("SCAN MATCH (*a)x500* found %d keys, want 10", len(got))
	}
	if calls < 10 {
		t.Fatalf("SCAN answered %d keys of 20 KB against a 1000-byte pattern in %d calls: no budget", len(got), calls)
	}
	if err := r.Do(ctx, "SCAN", "0", "MATCH", strings.Repeat("*", 1025)).Err(); err == nil || !strings.Contains(err.Error(), "pattern too long") {
		t.Fatalf("SCAN with a 1025-byte pattern: %v", err)
	}
	args := []any{"CONFIG", "GET"}
	for i := 0; i < 1025; i++ {
		args = append(args, "x*")
	}
	if err := r.Do(ctx, args...).Err(); err == nil || !strings.Contains(err.Error(), "too many patterns") {
		t.Fatalf("CONFIG GET with 1025 patterns: %v", err)
	}
}

// TestFlushAllAllowed checks FLUSHALL when the config allows it.
func TestFlushAllAllowed(t *testing.T) {
	n := startNode(t, "allow_flush = true", "")
	ctx := ctxT(t)
	r := newRedis(t, n.addr)
	for i := 0; i < 100; i++ {
		r.Set(ctx, fmt.Sprint(i), "v", 0)
	}
	if n, err := r.DBSize(ctx).Result(); err != nil || n != 100 {
		t.Fatalf("DBSIZE after 100 SETs: %d %v", n, err)
	}
	if err := r.Do(ctx, "FLUSHALL", "BOGUS").Err(); err == nil || !strings.Contains(err.Error(), "syntax error") {
		t.Fatalf("FLUSHALL BOGUS: %v, want a syntax error", err)
	}
	if err := r.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	keys, _, err := r.Scan(ctx, 0, "", 1000).Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("after FLUSHALL: %d keys, %v", len(keys), err)
	}
	if n, err := r.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE after FLUSHALL: %d %v", n, err)
	}
}

// TestFlushAllIsABarrier pipelines FLUSHALL between writes and reads of
// one connection: it must act after every earlier command and before every
// later one, though the engine clears the keyspace by deleting what it finds.
func TestFlushAllIsABarrier(t *testing.T) {
	n := startNode(t, "allow_flush = true", "")
	ctx := ctxT(t)
	r := newRedis(t, n.addr)
	for i := 0; i < 20; i++ {
		before, after := fmt.Sprintf("before-%d", i), fmt.Sprintf("after-%d", i)
		if err := r.Set(ctx, after, "old", 0).Err(); err != nil {
			t.Fatal(err)
		}
		var getBefore, getAfter *redis.StringCmd
		_, err := r.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, before, "v", 0)
			p.FlushAll(ctx)
			getBefore = p.Get(ctx, before)
			p.Set(ctx, after, "new", 0)
			getAfter = p.Get(ctx, after)
			return nil
		})
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		if err := getBefore.Err(); err != redis.Nil {
			t.Fatalf("round %d: a write pipelined before FLUSHALL survived it: %q %v", i, getBefore.Val(), err)
		}
		if v, err := getAfter.Result(); err != nil || v != "new" {
			t.Fatalf("round %d: a write pipelined after FLUSHALL: %q %v, want new", i, v, err)
		}
		if v, err := r.Get(ctx, after).Result(); err != nil || v != "new" {
			t.Fatalf("round %d: later read of the write after FLUSHALL: %q %v", i, v, err)
		}
	}
}

// TestCrossProtocol writes with one protocol and reads with the other.
func TestCrossProtocol(t *testing.T) {
	n := startNode(t, "", "")
	ctx := ctxT(t)
	r := newRedis(t, n.addr)
	p := dialPipe(t, n.addr)
	if got := p.do(`PUT|from-pipe|a\|b`); got != "OK" {
		t.Fatal(got)
	}
	if v, err := r.Get(ctx, "from-pipe").Result(); err != nil || v != "a|b" {
		t.Fatalf("redis read of pipe write: %q %v", v, err)
	}
	if err := r.Set(ctx, "from-redis", "line1\nline2|x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := p.do("GET|from-redis"); got != `VALUE|line1\nline2\|x` {
		t.Fatalf("pipe read of redis write: %q", got)
	}
}

// TestAuth checks requirepass on both protocols.
func TestAuth(t *testing.T) {
	n := startNode(t, `requirepass = "s3cret"`, "")
	ctx := ctxT(t)
	p := dialPipe(t, n.addr)
	for _, s := range []struct{ req, want string }{
		{"PING", "PONG"},
		{"GET|k", "ERROR|NOAUTH authentication required"},
		{"PUT|k|v", "ERROR|NOAUTH authentication required"},
		{"CLUSTER_STATUS", "ERROR|NOAUTH authentication required"},
		{"AUTH|wrong", "ERROR|invalid password"},
		{"GET|k", "ERROR|NOAUTH authentication required"},
		{"AUTH|s3cret", "OK"},
		{"PUT|k|v", "OK"},
		{"GET|k", "VALUE|v"},
	} {
		if got := p.do(s.req); got != s.want {
			t.Errorf("%s: got %q want %q", s.req, got, s.want)
		}
	}
	bad := newRedis(t, n.addr)
	if err := bad.Get(ctx, "k").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("unauthenticated RESP GET: %v", err)
	}
	wrong := newRedis(t, n.addr, func(o *redis.Options) { o.Password = "nope" })
	if err := wrong.Get(ctx, "k").Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("wrong password: %v", err)
	}
	good := newRedis(t, n.addr, func(o *redis.Options) { o.Password = "s3cret" })
	if v, err := good.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("authenticated GET: %q %v", v, err)
	}
	// As Redis answers: tools read "" as "no password".
	if cfg, err := good.ConfigGet(ctx, "requirepass").Result(); err != nil || cfg["requirepass"] != "s3cret" {
		t.Fatalf("CONFIG GET requirepass: %v %v", cfg, err)
	}
	if err := bad.ConfigGet(ctx, "requirepass").Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("unauthenticated CONFIG GET: %v", err)
	}
}

// infoField returns field's value in INFO text.
func infoField(info, field string) (string, bool) {
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v, true
		}
	}
	return "", false
}
