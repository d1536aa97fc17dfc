package server

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvstore/kv/internal/lsmtest"
	"github.com/kvstore/kv/store"
)

// TestAdminVerify: /verify reads a running standalone store's tables
// whole: 200 and "ok" while they are sound, 500 naming the table once a
// byte of it has flipped on disk (no read had met it), the password when
// one is set, 501 for a store that cannot verify.
func TestAdminVerify(t *testing.T) {
	db, table := lsmtest.OneTable(t, t.TempDir(), 100)
	st := store.NewLocal(db, "127.0.0.1:0")
	defer st.Close()
	url := "http://" + startAdminFor(t, "s3cret", st).Addr() + "/verify"
	if r := getBackup(t, http.MethodGet, url, ""); r.code != http.StatusUnauthorized {
		t.Fatalf("without the password: %+v", r)
	}
	if r := getBackup(t, http.MethodGet, url, "s3cret"); r.code != http.StatusOK || !strings.Contains(r.body, "standalone: 1 tables") || !strings.Contains(r.body, "100 entries: ok") {
		t.Fatalf("sound store: %+v", r)
	}

	lsmtest.FlipValue(t, table, "value-050")
	if r := getBackup(t, http.MethodGet, url, "s3cret"); r.code != http.StatusInternalServerError || !strings.Contains(r.body, "DAMAGED") || !strings.Contains(r.body, filepath.Base(table)) {
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
