package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kv/store"
)

// backupStore is a store whose Backup writes body, then fails with err.
type backupStore struct {
	*slowStore
	body    string
	err     error
	started chan struct{} // closed when a backup starts, if set
	release chan struct{} // a backup waits for it, if set
}

func (b *backupStore) Backup(w io.Writer) error {
	if b.started != nil {
		close(b.started)
		<-b.release
	}
	if _, err := io.WriteString(w, b.body); err != nil {
		return err
	}
	return b.err
}

func startTestAdmin(t *testing.T, password string, st store.Store) string {
	t.Helper()
	a, err := StartAdmin("127.0.0.1:0", password, st, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return "http://" + a.Addr() + "/backup"
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
