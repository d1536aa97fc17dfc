package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBackupAndRestore: the README's procedure. A backup taken from the
// admin port while the server runs, extracted with tar into an empty
// directory, is a data directory a second kvserver starts on, holding
// every write acknowledged before the backup (flushed or not, deletes
// included) and none after it. The backup asks for requirepass.
func TestBackupAndRestore(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		t.Skip("no tar on this machine")
	}
	n := startNode(t, `requirepass = "pw"`, "")
	p := dialPipe(t, n.addr)
	if got := p.do("AUTH|pw"); got != "OK" {
		t.Fatal(got)
	}
	pad := strings.Repeat("x", 1000)
	value := func(i int) string { return fmt.Sprintf("%d-%s", i, pad) }
	for i := range 6000 { // 6 MB: over the 4 MiB memtable, so in tables and in the memtable
		p.send(fmt.Sprintf("PUT|k%05d|%s\n", i, value(i)))
	}
	for range 6000 {
		if got := p.recv(); got != "OK" {
			t.Fatal(got)
		}
	}
	if got := p.do("DELETE|k00000"); got != "OK" {
		t.Fatal(got)
	}

	url := "http://" + n.admin + "/backup"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("backup without the password: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth("", "pw")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "backup.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, resp.Body)
	resp.Body.Close()
	f.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %s, %v", resp.Status, err)
	}
	if got := p.do("PUT|after|backup"); got != "OK" {
		t.Fatal(got)
	}

	r := startNode(t, "", "")
	if err := r.terminate(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(r.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tarBin, "-xf", archive, "-C", r.dir).CombinedOutput(); err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	r.start()
	q := dialPipe(t, r.addr)
	for i := 1; i < 6000; i += 599 {
		k := fmt.Sprintf("k%05d", i)
		if got := q.do("GET|" + k); got != "VALUE|"+value(i) {
			t.Fatalf("restored %s: %.40q..., want %.40q...", k, got, "VALUE|"+value(i))
		}
	}
	for _, k := range []string{"k00000", "after"} {
		if got := q.do("GET|" + k); got != "NOT_FOUND" {
			t.Fatalf("restored %s: %q, want NOT_FOUND", k, got)
		}
	}
}
