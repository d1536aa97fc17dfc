package main

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/kvstore/kv/cluster"
	"github.com/kvstore/kv/conf"
	"github.com/kvstore/kv/server"
)

// Descriptors kept free of client connections, besides the files already
// open when the budget is computed and the tables the engine will open
// (fdUse.tables):
const (
	// engineFDs: files the engine opens for a while: the next WAL before
	// the last one closes, flush and compaction outputs (a compaction's
	// new tables are open beside its inputs until those go), a new
	// manifest, directory syncs, the file a backup is streaming.
	engineFDs = 32
	// otherFDs: the raft transport (a connection each way per peer, plus
	// snapshot streams), the metrics' /proc reads, name resolution.
	otherFDs = 32
	// acceptFDs: the connection the server's accept loop holds (refusing
	// it over max_connections, or handing a duplicate of it to an event
	// loop: two descriptors for a moment), and the descriptor it keeps in
	// reserve to refuse connections when none is left (an accept that
	// fails with EMFILE: server/accept.go). The accept loop takes one at
	// a time; before it, gnet's acceptor left up to ~250 refused
	// connections open at once in a flood of 2000 connects, and its EMFILE
	// stopped the server.
	acceptFDs = 3
)

// refusingFDs: connections refused over max_connections, held while the
// accept loop learns their protocol to answer in it.
const refusingFDs = server.MaxRefusing

// fdUse is what the descriptor arithmetic behind max_connections counts.
type fdUse struct {
	limit  int  // RLIMIT_NOFILE, soft (Go raises it to the hard limit at start-up)
	open   int  // descriptors open now
	tables int  // table files the engines may still open (tablesToOpen)
	loops  int  // gnet event loops
	tls    bool // a TLS port too (server.tls_listen)
}

// tlsConnFDs is what a TLS client connection holds: its socket and the
// two ends of the socketpair that bridges it to an event loop.
const tlsConnFDs = 3

// reserve is how many descriptors the process may need beyond those open
// now and its client connections: the listener and one epoll and one
// eventfd per event loop, the admin listener and its connections, the
// tables, engine files, others, and the accept loop's.
//
// With a TLS port, its listener and accept loop count as much again.
func (u fdUse) reserve() int {
	loops := 1 + 2*u.loops
	admin := 1 + server.AdminMaxConns
	accept := acceptFDs + refusingFDs
	if u.tls {
		accept += 1 + acceptFDs + refusingFDs
	}
	return loops + admin + u.tables + engineFDs + otherFDs + accept
}

// budget is the most client connections that fit: limit less what is
// open and the reserve, each connection counted as a TLS one when there
// is a TLS port (the plain and TLS ports share max_connections).
func (u fdUse) budget() int {
	perConn := 1
	if u.tls {
		perConn = tlsConnFDs
	}
	return (u.limit - u.open - u.reserve()) / perConn
}

// connectionBudget lowers max_connections to what the open-file limit
// allows, as Redis does with maxclients: with more connections than file
// descriptors, accept fails with EMFILE, and clients wait in the listen
// queue instead of getting the max_connections refusal. Go raises the soft limit to the
// hard one at start-up, so the hard limit is what counts. It runs once the
// store is open, so its files count; the tables it may still open are
// those in the data directory, up to storage.max_open_tables in all.
func connectionBudget(want int, srv conf.Server, storage conf.Storage, clusterMode bool, log *slog.Logger) (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return want, nil // no limit to respect that we can see
	}
	u := fdUse{limit: int(min(lim.Cur, 1<<30)), loops: max(runtime.GOMAXPROCS(0), runtime.NumCPU()), tls: srv.TLSListen != ""}
	var held, unopened int
	skip := ""
	if clusterMode {
		skip = cluster.RaftDir
	}
	u.open, held, unopened = openFiles("/proc/self/fd", storage.Dir, skip)
	u.tables = tablesToOpen(held, unopened, storage.MaxOpenTables)
	budget := u.budget()
	if want <= budget {
		return want, nil
	}
	if budget < 1 {
		return 0, fmt.Errorf("server.max_connections: the open-file limit (%d; %d open, %d tables to open, %d more reserved) leaves no room for client connections; raise it (ulimit -n)",
			u.limit, u.open, u.tables, u.reserve()-u.tables)
	}
	log.Warn("server.max_connections reduced to fit the open-file limit; raise the limit (ulimit -n) for more",
		"requested", want, "max_connections", budget, "open_file_limit", u.limit, "open_files", u.open,
		"tables_to_open", u.tables, "reserved", u.reserve()-u.tables)
	return budget, nil
}

// tablesToOpen is how many more table files the engines may hold open:
// those not open yet, up to storage.max_open_tables in all (the engines
// open a table on its first read and keep it open within that bound).
func tablesToOpen(held, unopened, maxOpenTables int) int {
	return max(0, min(unopened, maxOpenTables-held))
}

// openFiles counts the descriptors listed in fdDir (/proc/self/fd), the
// table files (*.sst) among them, and the table files under dataDir that
// no descriptor holds yet, leaving out the directory skip (the raft log's
// own store in cluster mode, whose files are not the engines'). Without
// fdDir, all are 0.
func openFiles(fdDir, dataDir, skip string) (open, tables, unopened int) {
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return 0, 0, 0
	}
	held := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
		if err == nil && strings.HasSuffix(target, ".sst") {
			held[target] = true
		}
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return len(fds), len(held), 0
	}
	filepath.WalkDir(abs, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return nil // unreadable: count what can be read
		case d.IsDir() && skip != "" && path == filepath.Join(abs, skip):
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(path, ".sst") && !held[path]:
			unopened++
		}
		return nil
	})
	return len(fds), len(held), unopened
}
