package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Proto is the wire protocol the generator speaks.
type Proto uint8

// The protocols of PROTOCOL.md.
const (
	ProtoPipe Proto = iota // PUT|key|value lines
	ProtoRESP              // RESP2 arrays, as redis-benchmark sends
)

// ParseProto reads "pipe" or "resp".
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "pipe":
		return ProtoPipe, nil
	case "resp", "redis":
		return ProtoRESP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want pipe or resp)", s)
}

func (p Proto) String() string {
	switch p {
	case ProtoPipe:
		return "pipe"
	case ProtoRESP:
		return "resp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Config describes one run. Start from DefaultConfig; Run validates it.
type Config struct {
	Addrs    []string // clients are spread round-robin over these
	Proto    Proto
	Password string // sent with AUTH on every connection when not empty
	// TLS, when set, makes every connection TLS with this configuration
	// (kvserver's tls_listen, redis-server's tls-port); an empty
	// ServerName is the host of the address dialled.
	TLS *tls.Config `json:"-"`

	Clients  int // TCP connections, each driven by one goroutine
	Pipeline int // requests in flight per connection

	// Route, with the pipe protocol and several addresses of one cluster,
	// sends every request to the leader of its key's shard, sparing the
	// hop a node makes to the leader of a shard it does not lead: each
	// client works on one shard (as many clients to a shard as its share
	// of the key distribution's draws), draws only that shard's keys and
	// connects to its leader, following it when it moves. The requests
	// fall on the keys as in an unrouted run; what changes is which
	// connection carries each. Otherwise (or when the servers do not say
	// who leads: standalone, Redis) each client uses one address and the
	// nodes forward what they do not lead.
	Route bool

	Mix Mix

	// The run measures Total requests, or for Duration, whichever comes
	// first; zero turns a limit off, and at least one must be set.
	Total    int64
	Duration time.Duration
	Warmup   time.Duration // runs before the measurement, excluded from results

	Keys      uint64
	Dist      Dist
	ZipfS     float64
	ValueSize ValueSize
	Prefill   bool // put every key once before the warmup
	Seed      uint64

	// Rate > 0 is open-loop mode: Rate requests per second across all
	// clients, each on a fixed schedule, latency measured from the
	// scheduled time. Zero is closed loop: each connection keeps Pipeline
	// requests in flight and sends the next one as soon as a reply arrives.
	Rate float64

	Timeout   time.Duration // per request; a late reply fails it and its connection
	MaxErrors int64         // the run stops when errors exceed this
	Verify    bool          // gets check the value against this run's last put

	BatchSize  int // pairs per batch request
	RangeLimit int // pairs asked for per range request

	// Progress receives one live line per second; nil means none.
	// ProgressTTY redraws the line in place instead of printing lines.
	Progress    io.Writer
	ProgressTTY bool

	Logger *slog.Logger // nil discards
	// ToolVersion is recorded in the report.
	ToolVersion string
}

// DefaultConfig returns the defaults of the kvbench flags.
func DefaultConfig() Config {
	mix, _ := ParseMix("put,get")
	return Config{
		Addrs:      []string{"127.0.0.1:8080"},
		Proto:      ProtoPipe,
		Route:      true,
		Clients:    50,
		Pipeline:   1,
		Mix:        mix,
		Duration:   10 * time.Second,
		Warmup:     time.Second,
		Keys:       100_000,
		Dist:       DistUniform,
		ZipfS:      0.99,
		ValueSize:  ValueSize{Min: 100, Max: 100},
		Seed:       1,
		Timeout:    5 * time.Second,
		BatchSize:  10,
		RangeLimit: 100,
	}
}

// Bounds that keep kvbench's own memory sane.
const (
	maxVerifyKeys   = 1 << 28   // -verify keeps 4 bytes per key
	maxRequestBytes = 256 << 20 // one BATCH request's values
)

// maxScheduleNs bounds the warmup, the duration and the open-loop spacing
// of one client's requests (about 73 years each), so that the schedule,
// kept in int64 nanoseconds, cannot overflow: their sum stays below 2^63.
// An overflowed end made the run endless; an overflowed spacing made
// every request due at once, so a tiny -rate flooded the server.
const (
	maxScheduleNs    = 1 << 61
	maxScheduleYears = 73
)

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(len(c.Addrs) > 0, "no server address")
	for _, a := range c.Addrs {
		_, _, err := net.SplitHostPort(a)
		check(err == nil, "address %q: want host:port", a)
	}
	check(c.Proto == ProtoPipe || c.Proto == ProtoRESP, "unknown protocol %v", c.Proto)
	check(c.Clients >= 1 && c.Clients <= 100_000, "clients %d: want 1 to 100000", c.Clients)
	check(c.Pipeline >= 1 && c.Pipeline <= 100_000, "pipeline %d: want 1 to 100000", c.Pipeline)
	check(!c.Mix.Empty(), "empty operation mix")
	check(c.Total >= 0, "total %d is negative", c.Total)
	check(c.Duration >= 0 && c.Warmup >= 0, "negative duration or warmup")
	check(c.Duration <= maxScheduleNs && c.Warmup <= maxScheduleNs, "duration or warmup over %d years", maxScheduleYears)
	check(c.Total > 0 || c.Duration > 0, "neither a request count nor a duration: the run would not end")
	check(c.Keys >= 1 && c.Keys <= MaxKeys, "keys %d: want 1 to %d", c.Keys, uint64(MaxKeys))
	check(c.Dist == DistUniform || c.Dist == DistZipf, "unknown key distribution %v", c.Dist)
	if c.Dist == DistZipf {
		check(c.ZipfS > 0 && c.ZipfS < 100, "zipf exponent %g: want 0 < s < 100", c.ZipfS)
	}
	if err := c.ValueSize.validate(); err != nil {
		errs = append(errs, err)
	}
	check(c.Rate >= 0 && c.Rate <= 1e9, "rate %g: want 0 (closed loop) to 1e9 ops/s", c.Rate)
	if minRate := float64(c.Clients) * 1e9 / maxScheduleNs; c.Rate > 0 && c.Rate < minRate {
		errs = append(errs, fmt.Errorf("rate %g ops/s: each of %d clients would wait over %d years between requests; want at least %.2g ops/s",
			c.Rate, c.Clients, maxScheduleYears, minRate))
	}
	check(c.Timeout > 0, "timeout must be positive")
	check(c.MaxErrors >= 0, "max errors %d is negative", c.MaxErrors)
	check(c.BatchSize >= 1 && c.BatchSize <= 100_000, "batch size %d: want 1 to 100000", c.BatchSize)
	check(c.RangeLimit >= 1, "range limit %d: want at least 1", c.RangeLimit)
	if c.Verify {
		check(c.Keys >= uint64(c.Clients),
			"verify needs at least one key per client (keys %d < clients %d): each key has one writer", c.Keys, c.Clients)
		check(c.ValueSize.Min >= stampLen,
			"verify stamps the version in the first %d bytes of each value: value size %v is too small (a lost write would go unseen)", stampLen, c.ValueSize)
		check(c.Keys <= maxVerifyKeys,
			"verify keeps 4 bytes per key: keys %d over the %d kvbench allows", c.Keys, uint64(maxVerifyKeys))
	}
	if c.Mix.Has(OpBatch) {
		check(uint64(c.BatchSize) <= c.Keys, "batch size %d exceeds the key space %d", c.BatchSize, c.Keys)
		check(int64(c.BatchSize)*int64(c.ValueSize.Max) <= maxRequestBytes,
			"a batch of %d values of up to %d bytes is over the %d MiB kvbench allows for one request (and far over a server's default max_frame_bytes, 32 MiB)",
			c.BatchSize, c.ValueSize.Max, maxRequestBytes>>20)
		if c.Verify && c.Clients > 0 {
			check(uint64(c.BatchSize) <= c.Keys/uint64(c.Clients),
				"verify with batch needs batch size %d <= keys per client %d", c.BatchSize, c.Keys/uint64(c.Clients))
		}
	}
	return errors.Join(errs...)
}
