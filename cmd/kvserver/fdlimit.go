package main

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
)

// reservedFDs is kept free of client connections for everything else the
// process opens later: tables the engine writes, the admin listener and
// its clients, raft connections. (Files already open count separately.)
const reservedFDs = 256

// connectionBudget lowers max_connections to what the open-file limit
// allows, as Redis does with maxclients: with more connections than file
// descriptors, accept fails with EMFILE, and gnet stops its whole engine
// on that instead of refusing one client. Go raises the soft limit to the
// hard one at start-up, so the hard limit is what counts.
func connectionBudget(want int, log *slog.Logger) (int, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return want, nil // no limit to respect that we can see
	}
	open := 0
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		open = len(fds)
	}
	budget := int64(lim.Cur) - int64(open) - reservedFDs
	if int64(want) <= budget {
		return want, nil
	}
	if budget < 1 {
		return 0, fmt.Errorf("server.max_connections: the open-file limit (%d, %d already open) leaves no room for client connections; raise it (ulimit -n)", lim.Cur, open)
	}
	log.Warn("server.max_connections reduced to fit the open-file limit; raise the limit (ulimit -n) for more",
		"requested", want, "max_connections", budget, "open_file_limit", lim.Cur, "open_files", open, "reserved", reservedFDs)
	return int(budget), nil
}
