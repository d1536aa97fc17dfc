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
// many bytes in 32 KiB writes, then fails with err.
type backupStore struct {
	*slowStore
	mu      sync.Mutex // guards body and big
	body    string
	big     int
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
	a, err := StartAdmin("127.0.0.1:0", password, st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
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
	fmt.Fprintf(c, "GET /backup HTTP/1.1\r\nHost: x\r\n\r\n")
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
