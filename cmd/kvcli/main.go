// Command kvcli is the command-line client of kvserver: one-shot commands
// (`kvcli put k v`, `kvcli get k`) for scripts, and an interactive prompt
// with history and line editing when run without a command.
//
// Exit status: 0 on success, 1 when get finds no key, 2 on any error (the
// message goes to standard error). raw prints the server's reply as it is
// and exits 0 for any reply but ERROR, NOT_FOUND included.
//
// The password for AUTH comes from -a or, when -a is not given, from the
// environment variable KVCLI_AUTH, which other users cannot read in the
// process list as they can -a. At the prompt, auth PASSWORD sets it.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/kvstore/kv/certs"
	"github.com/kvstore/kv/client"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// envPassword names the environment variable read for the password when
// -a is not given, as redis-cli reads REDISCLI_AUTH.
const envPassword = "KVCLI_AUTH"

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
	addr := fs.String("addr", "", "server address host:port, or a cluster's nodes separated by commas (overrides -h and -p)")
	password := fs.String("a", "", "password for AUTH (visible to other users in ps: prefer $"+envPassword+")")
	// Longer than the server's own bounds (cluster.request_timeout, 5 s,
	// and three of them for a membership change), so that kvcli reports
	// the server's answer rather than giving up on a change that may
	// still happen.
	timeout := fs.Duration("timeout", 20*time.Second, "timeout of each request")
	showVersion := fs.Bool("version", false, "print the version and exit")
	var tf tlsFlags
	fs.BoolVar(&tf.on, "tls", false, "connect with TLS (the server's tls_listen port)")
	fs.StringVar(&tf.cacert, "cacert", "", "CA certificate file (PEM) to verify the server with, instead of the system's (implies -tls)")
	fs.StringVar(&tf.cert, "cert", "", "client certificate file (PEM), for a server with tls_ca_file (implies -tls)")
	fs.StringVar(&tf.key, "key", "", "private key file (PEM) of -cert")
	fs.StringVar(&tf.sni, "sni", "", "server name to verify the certificate against (default: the host dialled)")
	fs.BoolVar(&tf.insecure, "insecure", false, "do not verify the server's certificate (testing only; implies -tls)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: kvcli [-h host] [-p port] [-addr host:port] [-a password] [-tls [-cacert file]] [COMMAND ARGS...]\n\n")
		fmt.Fprintf(stderr, "Without a command, kvcli starts an interactive prompt.\n\nCommands:\n")
		writeHelp(stderr, false)
		fmt.Fprintf(stderr, "\nFlags:\n")
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nEnvironment:\n  %s\n    \tpassword for AUTH when -a is not given\n", envPassword)
		fmt.Fprintf(stderr, "\nExit status: 0 success, 1 not found (get), 2 error.\n")
		fmt.Fprintf(stderr, "raw prints the reply as is: exit 0 for any reply but ERROR, NOT_FOUND included.\n")
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

	pw := *password
	if !isFlagSet(fs, "a") {
		pw = os.Getenv(envPassword)
	}
	opts := client.Options{Password: pw, Timeout: *timeout, DialTimeout: min(*timeout, 5*time.Second), PoolSize: 1}
	var err error
	if opts.TLS, err = tf.config(); err != nil {
		fmt.Fprintf(stderr, "kvcli: %v\n", err)
		return exitError
	}

	if len(cmdArgs) == 0 {
		s := &session{addr: target, opts: opts}
		defer s.close()
		return interactive(s, stdin, stdout, stderr)
	}
	c, err := client.Dial(target, opts)
	if err != nil {
		fmt.Fprintf(stderr, "kvcli: %v\n", err)
		return exitError
	}
	defer c.Close()
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

// isFlagSet reports whether the flag name was given on the command line,
// even as an empty string.
func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// tlsFlags are the TLS flags, as redis-cli names them.
type tlsFlags struct {
	on                     bool
	cacert, cert, key, sni string
	insecure               bool
}

// config is the client's TLS configuration, or nil without TLS.
func (f tlsFlags) config() (*tls.Config, error) {
	if !f.on && f.cacert == "" && f.cert == "" && !f.insecure {
		if f.key != "" || f.sni != "" {
			return nil, errors.New("-key and -sni need -tls")
		}
		return nil, nil
	}
	cfg := &tls.Config{ServerName: f.sni, InsecureSkipVerify: f.insecure}
	if f.cacert != "" {
		pool, err := certs.LoadPool(f.cacert)
		if err != nil {
			return nil, fmt.Errorf("-cacert: %w", err)
		}
		cfg.RootCAs = pool
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("-cert and -key go together")
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("-cert, -key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
