package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/store"
)

// backupStore is a store whose Backup writes body, or, with big set, that
// many bytes in 32 KiB writes (delay apart), then fails with err.
type backupStore struct {
	*slowStore
	mu      sync.Mutex // guards body and big
	body    string
	big     int
	delay   time.Duration
	err     error
	started chan struct{} // closed when a backup starts, if set
	release chan struct{} // a backup waits for it, if set
}

func (b *backupStore) Backup(w io.Writer) error {
	if b.started != nil {
		close(b.started)
		<-b.release
	}
	b.mu.Lock()
	body, big := b.body, b.big
	b.mu.Unlock()
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	chunk := make([]byte, 32<<10)
	for n := 0; n < big; n += len(chunk) {
		time.Sleep(b.delay)
		if _, err := w.Write(chunk); err != nil {
			return err
		}
	}
	return b.err
}

func startTestAdmin(t *testing.T, password string, st store.Store) string {
	t.Helper()
	return "http://" + startAdminFor(t, password, st).Addr() + "/backup"
}

func startAdminFor(t *testing.T, password string, st store.Store) *Admin {
	t.Helper()
	a, err := StartAdmin("127.0.0.1:0", password, nil, st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return a
}

type backupReply struct {
	code  int
	body  string
	err   error // reading the body
	ctype string
	disp  string
}

func getBackup(t *testing.T, method, url, password string) backupReply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if password != "" {
		req.SetBasicAuth("", password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return backupReply{resp.StatusCode, string(body), err, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition")}
}

// TestAdminBackup: /backup streams the store's archive with a file name,
// asks for the password when one is set, refuses other methods, stores
// without backups (cluster mode) and a second backup at once, reports a
// failure before the first byte as a 500 and cuts the connection after it.
func TestAdminBackup(t *testing.T) {
	st := &backupStore{slowStore: newSlowStore(), body: "archive"}
	url := startTestAdmin(t, "", st)
	r := getBackup(t, http.MethodGet, url, "")
	if r.code != http.StatusOK || r.body != "archive" || r.err != nil || r.ctype != "application/x-tar" ||
		!strings.HasPrefix(r.disp, `attachment; filename="kv-backup-`) {
		t.Fatalf("backup: %+v", r)
	}
	if r := getBackup(t, http.MethodPost, url, ""); r.code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %+v", r)
	}

	url = startTestAdmin(t, "s3cret", st)
	for _, pass := range []string{"", "wrong"} {
		if r := getBackup(t, http.MethodGet, url, pass); r.code != http.StatusUnauthorized || strings.Contains(r.body, "archive") {
			t.Fatalf("password %q: %+v", pass, r)
		}
	}
	if r := getBackup(t, http.MethodGet, url, "s3cret"); r.code != http.StatusOK || r.body != "archive" {
		t.Fatalf("with the password: %+v", r)
	}

	url = startTestAdmin(t, "", newSlowStore())
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusNotImplemented || !strings.Contains(r.body, "standalone") {
		t.Fatalf("store without backups: %+v", r)
	}

	url = startTestAdmin(t, "", &backupStore{slowStore: newSlowStore(), err: errors.New("disk full")})
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusInternalServerError || !strings.Contains(r.body, "disk full") || r.disp != "" {
		t.Fatalf("failure before the first byte: %+v", r)
	}
	url = startTestAdmin(t, "", &backupStore{slowStore: newSlowStore(), body: strings.Repeat("x", 1<<20), err: errors.New("disk full")})
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusOK || r.err == nil {
		t.Fatalf("failure after the first byte must cut the transfer: code %d, %d bytes, read error %v", r.code, len(r.body), r.err)
	}

	blocked := &backupStore{slowStore: newSlowStore(), body: "first", started: make(chan struct{}), release: make(chan struct{})}
	url = startTestAdmin(t, "", blocked)
	first := make(chan backupReply, 1)
	go func() { first <- getBackup(t, http.MethodGet, url, "") }()
	<-blocked.started
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusConflict {
		t.Fatalf("second backup at once: %+v", r)
	}
	close(blocked.release)
	if r := <-first; r.code != http.StatusOK || r.body != "first" {
		t.Fatalf("first backup: %+v", r)
	}
}

// TestAdminBackupStalledClient: a client that stops reading loses its
// backup once a write has waited backupStall; the lock is free again for
// the next one. An HTTP/1.0 client is refused: without chunked encoding a
// cut transfer would read as a whole one.
func TestAdminBackupStalledClient(t *testing.T) {
	st := &backupStore{slowStore: newSlowStore(), big: 256 << 20}
	a := startAdminFor(t, "", st)
	a.backupStall = 300 * time.Millisecond
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(c, "GET /backup HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("stalled client's status line: %q, %v", line, err)
	}
	// The client reads nothing more. Within a few stall periods the
	// backup gives up and a new one can start.
	st.mu.Lock()
	st.big, st.body = 0, "second"
	st.mu.Unlock()
	url := "http://" + a.Addr() + "/backup"
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := getBackup(t, http.MethodGet, url, "")
		if r.code == http.StatusOK && r.body == "second" {
			break
		}
		if r.code != http.StatusConflict || time.Now().After(deadline) {
			t.Fatalf("backup after a stalled one: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}

	h, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	fmt.Fprintf(h, "GET /backup HTTP/1.0\r\n\r\n")
	if line, err := bufio.NewReader(h).ReadString('\n'); err != nil || !strings.Contains(line, "505") {
		t.Fatalf("HTTP/1.0 backup: %q, %v", line, err)
	}
}

// startAdminLimits starts an admin endpoint with limits instead of the
// defaults.
func startAdminLimits(t *testing.T, password string, st store.Store, limits adminLimits) *Admin {
	t.Helper()
	a, err := startAdmin("127.0.0.1:0", password, nil, st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler), limits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return a
}

// rawGet sends a keep-alive GET for path on c and reads the response
// within wait.
func rawGet(c net.Conn, br *bufio.Reader, path string, wait time.Duration) (int, string, error) {
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// closedWithin reports whether the server closes c (EOF or reset) within
// wait, reading and dropping whatever it sends first.
func closedWithin(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestAdminDefaults: the admin server bounds its connections, the time a
// request may take to arrive and its response to leave, idle connections
// and header sizes.
func TestAdminDefaults(t *testing.T) {
	a := startAdminFor(t, "", newSlowStore())
	if a.limits != defaultAdminLimits || a.limits.maxConns != AdminMaxConns || AdminMaxConns < 1 {
		t.Fatalf("limits %+v", a.limits)
	}
	s := a.srv
	if s.ReadHeaderTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 || s.MaxHeaderBytes > 1<<20 ||
		s.WriteTimeout <= 0 || s.ReadTimeout <= 0 {
		t.Fatalf("http.Server: ReadHeaderTimeout %v IdleTimeout %v MaxHeaderBytes %d WriteTimeout %v ReadTimeout %v",
			s.ReadHeaderTimeout, s.IdleTimeout, s.MaxHeaderBytes, s.WriteTimeout, s.ReadTimeout)
	}
}

// TestAdminConnectionLimit: connections over the limit wait, unanswered,
// until one closes; they cost no descriptor meanwhile.
func TestAdminConnectionLimit(t *testing.T) {
	a := startAdminLimits(t, "", newSlowStore(), adminLimits{maxConns: 2, readHeader: 10 * time.Second, read: 10 * time.Second, write: 10 * time.Second, idle: 10 * time.Second})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", a.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if code, _, err := rawGet(c, bufio.NewReader(c), "/healthz", 5*time.Second); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: %d, %v", len(held), code, err)
		}
		held = append(held, c) // idle, kept alive
	}
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if line, err := br.ReadString('\n'); err == nil || line != "" {
		t.Fatalf("third connection answered over a limit of 2: %q, %v", line, err)
	}
	held[0].Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("third connection once a slot is free: %v, %v", resp, err)
	}
	resp.Body.Close()
}

// TestAdminClosesIdleConnections: a kept-alive connection that sends
// nothing more, and one that never sends headers, are closed, and their
// slots serve others.
func TestAdminClosesIdleConnections(t *testing.T) {
	a := startAdminLimits(t, "", newSlowStore(), adminLimits{maxConns: 1, readHeader: 200 * time.Millisecond, read: 200 * time.Millisecond, write: 5 * time.Second, idle: 200 * time.Millisecond})
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if code, _, err := rawGet(c, bufio.NewReader(c), "/healthz", 5*time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("first request: %d, %v", code, err)
	}
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("idle kept-alive connection not closed")
	}
	silent, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if !closedWithin(silent, 3*time.Second) {
		t.Fatal("connection that sends no headers not closed")
	}
	// A body that never comes holds no slot either.
	slow, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /debug/pprof/symbol HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n0x1")
	if !closedWithin(slow, 3*time.Second) {
		t.Fatal("connection whose body never arrives not closed")
	}
	last, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer last.Close()
	if code, _, err := rawGet(last, bufio.NewReader(last), "/healthz", 5*time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("request after the idle ones: %d, %v", code, err)
	}
}

// TestAdminLongRequestsOutliveTimeouts: a CPU profile and a backup that
// last longer than the read and write timeouts complete, and a kept-alive
// connection's next request gets a fresh write deadline.
func TestAdminLongRequestsOutliveTimeouts(t *testing.T) {
	st := &backupStore{slowStore: newSlowStore(), body: "archive", big: 4 << 15, delay: 250 * time.Millisecond}
	a := startAdminLimits(t, "", st, adminLimits{maxConns: 4, readHeader: 300 * time.Millisecond, read: 300 * time.Millisecond,
		write: 300 * time.Millisecond, idle: 2 * time.Second})
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	start := time.Now()
	code, body, err := rawGet(c, br, "/debug/pprof/profile?seconds=1", 10*time.Second)
	if err != nil || code != http.StatusOK || len(body) == 0 {
		t.Fatalf("1 s profile with 300 ms timeouts: %d, %d bytes, %v", code, len(body), err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("1 s profile ended after %v (its context canceled by a read deadline?)", d)
	}
	time.Sleep(500 * time.Millisecond) // past the profile's write deadline
	if code, _, err := rawGet(c, br, "/healthz", 5*time.Second); err != nil || code != http.StatusOK {
		t.Fatalf("next request on the connection: %d, %v", code, err)
	}
	start = time.Now()
	code, body, err = rawGet(c, br, "/backup", 10*time.Second)
	if err != nil || code != http.StatusOK || len(body) != len("archive")+4<<15 {
		t.Fatalf("1 s backup with 300 ms timeouts: %d, %d bytes, %v", code, len(body), err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("backup took %v, less than its writes' delays", d)
	}

	// A backup that fails after preparing for longer than the write
	// timeout still reports why.
	slow := &backupStore{slowStore: newSlowStore(), err: errors.New("disk full"), started: make(chan struct{}), release: make(chan struct{})}
	b := startAdminLimits(t, "", slow, adminLimits{maxConns: 4, readHeader: time.Second, read: time.Second, write: 300 * time.Millisecond, idle: time.Second})
	go func() {
		<-slow.started
		time.Sleep(600 * time.Millisecond)
		close(slow.release)
	}()
	if r := getBackup(t, http.MethodGet, "http://"+b.Addr()+"/backup", ""); r.code != http.StatusInternalServerError || !strings.Contains(r.body, "disk full") {
		t.Fatalf("backup failing after 600 ms with a 300 ms write timeout: %+v", r)
	}
}

// TestAdminRefusesForeignHost: a request naming another host (a DNS name
// rebound to 127.0.0.1 by a web page) is refused on every path; IP
// addresses, localhost and the admin_listen host are served.
func TestAdminRefusesForeignHost(t *testing.T) {
	st := &backupStore{slowStore: newSlowStore(), body: "archive"}
	a := startAdminFor(t, "", st)
	_, port, _ := net.SplitHostPort(a.Addr())
	get := func(host, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+a.Addr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, host := range []string{"attacker.example:" + port, "attacker.example", "localhost.attacker.example", "127.0.0.1.attacker.example:" + port} {
		for _, path := range []string{"/backup", "/metrics", "/healthz", "/debug/pprof/", "/debug/pprof/cmdline"} {
			if code, body := get(host, path); code != http.StatusMisdirectedRequest || strings.Contains(body, "archive") {
				t.Errorf("Host %s %s: %d %q", host, path, code, body)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "127.0.0.1", "localhost:" + port, "LocalHost", "localhost.", "[::1]:" + port, "[::1]", "10.1.2.3:" + port} {
		if code, body := get(host, "/backup"); code != http.StatusOK || body != "archive" {
			t.Errorf("Host %s: %d %q", host, code, body)
		}
	}

	named := &Admin{name: adminName("KV1.example.com.:9080")}
	for host, want := range map[string]bool{
		"kv1.example.com:9080": true, "KV1.Example.Com": true, "kv1.example.com.": true,
		"kv2.example.com:9080": false, "example.com": false, "": true,
	} {
		if got := named.hostAllowed(host); got != want {
			t.Errorf("admin_listen kv1.example.com, Host %q: allowed %v, want %v", host, got, want)
		}
	}
	if n := adminName("[::1]:9080"); n != "" {
		t.Errorf("adminName of an IP address: %q", n)
	}
}

// TestAdminPprofNeedsPassword: with requirepass, /debug/pprof/ asks for it
// as /backup does; /healthz and /metrics stay open (probes and Prometheus
// send no credentials). Without requirepass, pprof is open.
func TestAdminPprofNeedsPassword(t *testing.T) {
	st := &backupStore{slowStore: newSlowStore(), body: "archive"}
	base := "http://" + startAdminFor(t, "s3cret", st).Addr()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1", "/debug/pprof/goroutine?debug=2",
		"/debug/pprof/symbol", "/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=0.1", "/backup"} {
		for _, pass := range []string{"", "wrong"} {
			r := getBackup(t, http.MethodGet, base+path, pass)
			if r.code != http.StatusUnauthorized || !strings.Contains(r.body, "requirepass") {
				t.Errorf("%s with password %q: %d %.80q", path, pass, r.code, r.body)
			}
		}
	}
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap?debug=1"} {
		if r := getBackup(t, http.MethodGet, base+path, "s3cret"); r.code != http.StatusOK || r.body == "" {
			t.Errorf("%s with the password: %d %.80q", path, r.code, r.body)
		}
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		if r := getBackup(t, http.MethodGet, base+path, ""); r.code != http.StatusOK {
			t.Errorf("%s without the password: %d %.80q", path, r.code, r.body)
		}
	}

	open := "http://" + startAdminFor(t, "", st).Addr()
	if r := getBackup(t, http.MethodGet, open+"/debug/pprof/cmdline", ""); r.code != http.StatusOK {
		t.Errorf("pprof without requirepass: %d %.80q", r.code, r.body)
	}
}
