// Command kvcli is the command-line client of kvserver: one-shot commands
// (`kvcli put k v`, `kvcli get k`) for scripts, and an interactive prompt
// with history and line editing when run without a command.
//
// Exit status: 0 on success, 1 when a key is not found, 2 on any error
// (the message goes to standard error).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/kvstore/kv/client"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses.
const (
	exitOK       = 0
	exitNotFound = 1
	exitError    = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole program, with its streams passed in so tests drive it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvcli", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host := fs.String("h", "127.0.0.1", "server host")
	port := fs.Int("p", 8080, "server port")
	addr := fs.String("addr", "", "server address host:port (overrides -h and -p)")
	password := fs.String("a", "", "password for AUTH")
	// Longer than the server's own bounds (cluster.request_timeout, 5 s,
	// and three of them for a membership change), so that kvcli reports
	// the server's answer rather than giving up on a change that may
	// still happen.
	timeout := fs.Duration("timeout", 20*time.Second, "timeout of each request")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvcli [-h host] [-p port] [-addr host:port] [-a password] [COMMAND ARGS...]\n\n")
		fmt.Fprintf(stderr, "Without a command, kvcli starts an interactive prompt.\n\nCommands:\n")
		writeHelp(stderr, false)
		fmt.Fprintf(stderr, "\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nExit status: 0 success, 1 not found, 2 error.\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitError
	}
	if *showVersion {
		fmt.Fprintf(stdout, "kvcli %s\n", version)
		return exitOK
	}
	target := *addr
	if target == "" {
		target = net.JoinHostPort(*host, strconv.Itoa(*port))
	}
	cmdArgs := fs.Args()
	if len(cmdArgs) == 1 && cmdArgs[0] == "help" {
		writeHelp(stdout, false)
		return exitOK
	}
	if len(cmdArgs) > 0 {
		// Check the command before connecting, so usage errors are reported
		// even when no server is running.
		if _, err := lookup(cmdArgs); err != nil {
			fmt.Fprintf(stderr, "kvcli: %v\n", err)
			return exitError
		}
	}

	c, err := client.Dial(target, client.Options{Password: *password, Timeout: *timeout, DialTimeout: min(*timeout, 5*time.Second), PoolSize: 1})
	if err != nil {
		fmt.Fprintf(stderr, "kvcli: %v\n", err)
		return exitError
	}
	defer c.Close()

	if len(cmdArgs) == 0 {
		return interactive(c, target, stdin, stdout, stderr)
	}
	err = execute(context.Background(), c, cmdArgs, stdout, false)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, client.ErrNotFound):
		fmt.Fprintln(stderr, "(not found)")
		return exitNotFound
	default:
		fmt.Fprintf(stderr, "kvcli: %v\n", err)
		return exitError
	}
}
