// Command kvbench load-tests a kvserver node or cluster, or redis-server,
// and reports throughput and latency percentiles from HDR histograms.
//
//	kvbench -clients 512 -ops put,get
//	kvbench -addr 127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082 -ops put=1,get=9 -prefill
//	kvbench -proto resp -addr 127.0.0.1:6379 -pipeline 16
//	kvbench -rate 50000 -duration 60s -report run.html
//
// It exits 1 with a one-line message when the run cannot start (a server
// unreachable, a password refused or missing, kvbench out of file
// descriptors), when the errors exceed -max-errors, when a server lost
// mid-run stays unreachable for -timeout with no -duration to end the run,
// when the run measured no request at all, or when it is interrupted; and
// 2 on bad flags.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kvstore/kv/bench"
	"github.com/kvstore/kv/certs"
)

// version is set at build time: -ldflags '-X main.version=...'.
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run is kvbench with its arguments and output streams; it returns the
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.DefaultConfig()
	var (
		addr      = fs.String("addr", strings.Join(def.Addrs, ","), "server `host:port`, or a comma-separated list (clients are spread over it)")
		proto     = fs.String("proto", def.Proto.String(), "protocol: pipe or resp (RESP2, e.g. against redis-server)")
		password  = fs.String("a", "", "`password` sent with AUTH on every connection")
		clients   = fs.Int("clients", def.Clients, "TCP connections, one goroutine each")
		pipeline  = fs.Int("pipeline", def.Pipeline, "requests in flight per connection")
		route     = fs.Bool("route", def.Route, "with several addresses of a cluster: send every key to its shard's leader (each client works on one shard and connects to its leader); false: clients spread over the addresses, nodes forward")
		ops       = fs.String("ops", "put,get", "operation mix: put,get (equal) or weighted put=1,get=9; also delete, range, batch, ping")
		total     = fs.Int64("n", 0, "measure this many requests (with no -duration given, run until done)")
		duration  = fs.Duration("duration", def.Duration, "measured run time")
		warmup    = fs.Duration("warmup", def.Warmup, "load before measuring, excluded from the results")
		keys      = fs.Uint64("keys", def.Keys, "key space: keys key:000000000000 to key:<N-1>")
		dist      = fs.String("dist", def.Dist.String(), "key distribution: uniform or zipf")
		zipfS     = fs.Float64("zipf-s", def.ZipfS, "zipf exponent s > 0 (P(rank k) ∝ 1/k^s)")
		valueSize = fs.String("value-size", def.ValueSize.String(), "value size in bytes, or a range MIN-MAX (uniform)")
		prefill   = fs.Bool("prefill", false, "put every key once before the warmup, so gets hit")
		seed      = fs.Uint64("seed", def.Seed, "random seed for keys, operations and values")
		rate      = fs.Float64("rate", 0, "open loop: send this many `ops/s` on a fixed schedule, latency from the scheduled time (0 = closed loop)")
		jsonPath  = fs.String("json", "", "write the machine-readable report to `FILE`")
		histPath  = fs.String("hist", "", "write the HDR percentile distribution to `FILE` (and FILE's name with .<op> for each operation)")
		report    = fs.String("report", "", "write a self-contained HTML report to `FILE.html`")
		timeout   = fs.Duration("timeout", def.Timeout, "per request; a late reply fails it")
		maxErrors = fs.Int64("max-errors", 0, "stop and exit 1 when errors exceed this")
		verify    = fs.Bool("verify", false, "check that gets return what this run last put (each key gets one writer)")
		batchSize = fs.Int("batch-size", def.BatchSize, "key-value pairs per batch request")
		rangeLim  = fs.Int("range-limit", def.RangeLimit, "pairs asked for per range request")
		showVer   = fs.Bool("version", false, "print the version and exit")
		useTLS    = fs.Bool("tls", false, "connect with TLS (kvserver's tls_listen, redis-server's tls-port)")
		caCert    = fs.String("cacert", "", "CA certificate `file` (PEM) to verify the server with (implies -tls)")
		insecure  = fs.Bool("insecure", false, "do not verify the server's certificate (implies -tls)")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: kvbench [flags]\n\nLoad-tests a kvserver (or redis-server with -proto resp) and reports throughput and latency.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVer {
		fmt.Fprintf(stdout, "kvbench %s\n", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvbench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := def
	cfg.ToolVersion = version
	cfg.Addrs = splitList(*addr)
	cfg.Password = *password
	cfg.Clients = *clients
	cfg.Pipeline = *pipeline
	cfg.Route = *route
	cfg.Total = *total
	cfg.Duration = *duration
	if *total > 0 && !set["duration"] {
		cfg.Duration = 0
	}
	cfg.Warmup = *warmup
	cfg.Keys = *keys
	cfg.ZipfS = *zipfS
	cfg.Prefill = *prefill
	cfg.Seed = *seed
	cfg.Rate = *rate
	cfg.Timeout = *timeout
	cfg.MaxErrors = *maxErrors
	cfg.Verify = *verify
	cfg.BatchSize = *batchSize
	cfg.RangeLimit = *rangeLim
	var err error
	if *useTLS || *caCert != "" || *insecure {
		cfg.TLS = &tls.Config{InsecureSkipVerify: *insecure}
		if *caCert != "" {
			if cfg.TLS.RootCAs, err = certs.LoadPool(*caCert); err != nil {
				return usageError(stderr, fmt.Errorf("-cacert: %w", err))
			}
		}
	}
	if cfg.Proto, err = bench.ParseProto(*proto); err != nil {
		return usageError(stderr, err)
	}
	if cfg.Mix, err = bench.ParseMix(*ops); err != nil {
		return usageError(stderr, err)
	}
	if cfg.Dist, err = bench.ParseDist(*dist); err != nil {
		return usageError(stderr, err)
	}
	if cfg.ValueSize, err = bench.ParseValueSize(*valueSize); err != nil {
		return usageError(stderr, err)
	}
	if err := cfg.Validate(); err != nil {
		return usageError(stderr, err)
	}
	cfg.Progress = stderr
	cfg.ProgressTTY = isTerminal(stderr)

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, runErr := bench.Run(ctx, cfg)
	if errors.Is(runErr, context.Canceled) {
		runErr = errors.New("interrupted") // before the run started too
	}
	if res == nil {
		fmt.Fprintf(stderr, "kvbench: %v\n", oneLine(runErr))
		return 1
	}
	status := 0
	if err := res.WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "kvbench: write report: %v\n", err)
		status = 1
	}
	if err := writeFiles(res, *jsonPath, *histPath, *report); err != nil {
		fmt.Fprintf(stderr, "kvbench: %v\n", err)
		status = 1
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "kvbench: %v\n", oneLine(runErr))
		status = 1
	}
	return status
}

func usageError(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "kvbench: %v\n", oneLine(err))
	return 2
}

// oneLine joins a multi-line error (errors.Join) into one line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// writeFiles writes the reports asked for; each is written whole to a
// temporary file and renamed, so a failed write leaves no torn report.
func writeFiles(res *bench.Result, jsonPath, histPath, htmlPath string) error {
	if jsonPath != "" {
		if err := writeFile(jsonPath, res.WriteJSON); err != nil {
			return err
		}
	}
	if histPath != "" {
		if err := writeFile(histPath, func(w io.Writer) error { return res.WriteHist(w, "all") }); err != nil {
			return err
		}
		if len(res.Ops) > 1 {
			for _, st := range res.Ops {
				if err := writeFile(opPath(histPath, st.Op), func(w io.Writer) error { return res.WriteHist(w, st.Op) }); err != nil {
					return err
				}
			}
		}
	}
	if htmlPath != "" {
		if err := writeFile(htmlPath, res.WriteHTML); err != nil {
			return err
		}
	}
	return nil
}

// opPath puts the operation before the extension: lat.hgrm -> lat.put.hgrm.
func opPath(path, op string) string {
	ext := filepath.Ext(path)
	return strings.TrimSuffix(path, ext) + "." + op + ext
}

func writeFile(path string, write func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := write(f); err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// isTerminal reports whether w is a character device, where the progress
// line is redrawn in place; elsewhere (a file, a pipe, CI) it prints lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
