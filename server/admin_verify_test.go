package server

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvstore/kv/lsm"
	"github.com/kvstore/kv/store"
)

// TestAdminVerify: /verify reads a running standalone store's tables
// whole: 200 and "ok" while they are sound, 500 naming the table once a
// byte of it has flipped on disk (no read had met it), the password when
// one is set, 501 for a store that cannot verify.
func TestAdminVerify(t *testing.T) {
	dir := t.TempDir()
	db, err := lsm.Open(dir, lsm.Options{Compression: lsm.CompressionNone, BlockCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st := store.NewLocal(db, "127.0.0.1:0")
	defer st.Close()
	for i := range 100 {
		if err := db.Put(fmt.Appendf(nil, "k%03d", i), fmt.Appendf(nil, "value-%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	url := "http://" + startAdminFor(t, "s3cret", st).Addr() + "/verify"
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusUnauthorized {
		t.Fatalf("without the password: %+v", r)
	}
	if r := getBackup(t, http.MethodGet, url, "s3cret"); r.code != http.StatusOK || !strings.Contains(r.body, "standalone: 1 tables") || !strings.Contains(r.body, "100 entries: ok") {
		t.Fatalf("sound store: %+v", r)
	}

	tables, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(tables) != 1 {
		t.Fatalf("tables %v", tables)
	}
	data, err := os.ReadFile(tables[0])
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("value-050"))
	if i < 0 {
		t.Fatal("value not found in the table")
	}
	data[i+6] ^= 1
	// In place, as damage at rest: the open table reads the same file.
	f, err := os.OpenFile(tables[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[i+6:i+7], int64(i+6)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if r := getBackup(t, http.MethodGet, url, "s3cret"); r.code != http.StatusInternalServerError || !strings.Contains(r.body, "DAMAGED") || !strings.Contains(r.body, filepath.Base(tables[0])) {
		t.Fatalf("damaged store: %+v", r)
	}
	if err := db.Health(); err == nil {
		t.Fatal("Health does not report the damage verify found")
	}

	url = "http://" + startAdminFor(t, "", newSlowStore()).Addr() + "/verify"
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusNotImplemented {
		t.Fatalf("store without verify: %+v", r)
	}
}
