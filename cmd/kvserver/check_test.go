package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/internal/lsmtest"
)

// TestCheckStandalone: -check passes a sound directory and names the
// table of a flipped byte that no read has met, with exit status 1.
func TestCheckStandalone(t *testing.T) {
	dir := t.TempDir()
	db, table := lsmtest.OneTable(t, dir, 100)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := conf.Default()
	cfg.Storage.Dir = dir
	var out bytes.Buffer
	if err := checkData(context.Background(), cfg, &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("check of a sound directory: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "1 tables") || !strings.Contains(out.String(), "100 entries: ok") {
		t.Fatalf("report:\n%s", out.String())
	}

	lsmtest.FlipValue(t, table, "value-050")
	out.Reset()
	err := checkData(context.Background(), cfg, &out, slog.New(slog.DiscardHandler))
	if !errors.Is(err, errDamage) || !strings.Contains(out.String(), "DAMAGED") || !strings.Contains(out.String(), filepath.Base(table)) {
		t.Fatalf("check of a damaged table: %v\n%s", err, out.String())
	}
}

// TestCheckClusterNode: -check reads every shard of a stopped cluster
// node with the node's configuration, and refuses a running one.
func TestCheckClusterNode(t *testing.T) {
	cfgFile, client := oneNodeCluster(t, "")
	dir := filepath.Join(t.TempDir(), "data")
	c := startChild(t, "-c", cfgFile, "-admin", "off", "-listen", client, "-dir", dir)
	c.waitStarted()
	conn, err := net.DialTimeout("tcp", client, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	for i := range 50 {
		fmt.Fprintf(conn, "PUT|k%02d|v\n", i)
		if line, err := r.ReadString('\n'); err != nil || line != "OK\n" {
			t.Fatalf("PUT: %q %v", line, err)
		}
	}
	conn.Close()
	cfg, err := conf.Load(cfgFile, conf.Override{Source: "-dir", Key: "storage.dir", Set: func(c *conf.Config) { c.Storage.Dir = dir }})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := checkData(context.Background(), cfg, &out, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "lock") {
		t.Errorf("check of a running node: %v\n%s", err, out.String())
	}
	c.signal(syscall.SIGTERM)
	if err := c.wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, c.out)
	}
	out.Reset()
	if err := checkData(context.Background(), cfg, &out, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("check of a stopped node: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "shard 1 ") || !strings.Contains(out.String(), ": ok") || !strings.Contains(out.String(), "replicas, ") ||
		strings.Contains(out.String(), " 0 entries held") {
		t.Fatalf("report:\n%s", out.String())
	}

	// A record damaged in the newest segment reads as a write a crash cut
	// short (the next start drops it); once a newer segment exists, the
	// same damage is reported.
	raftDir, _, err := cluster.RaftLog(dir)
	if err != nil || raftDir == "" {
		t.Fatalf("raft log: %q %v", raftDir, err)
	}
	segs, _ := filepath.Glob(filepath.Join(raftDir, "*.log"))
	newest := segs[len(segs)-1]
	data, err := os.ReadFile(newest)
	if err != nil || len(data) < 200 {
		t.Fatalf("newest segment: %d bytes, %v", len(data), err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(newest, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := checkData(context.Background(), cfg, &out, slog.New(slog.DiscardHandler)); err != nil || !strings.Contains(out.String(), "unfinished write") {
		t.Fatalf("check with a damaged newest segment: %v\n%s", err, out.String())
	}
	next := filepath.Join(raftDir, fmt.Sprintf("%016d.log", len(segs)+100))
	if err := os.WriteFile(next, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := checkData(context.Background(), cfg, &out, slog.New(slog.DiscardHandler)); !errors.Is(err, errDamage) || !strings.Contains(out.String(), "raft log") || !strings.Contains(out.String(), "DAMAGED") {
		t.Fatalf("check with a damaged older segment: %v\n%s", err, out.String())
	}
}
