package bench

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := func() error { c := DefaultConfig(); return c.Validate() }(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error
	}{
		{"no address", func(c *Config) { c.Addrs = nil }, "no server address"},
		{"bad address", func(c *Config) { c.Addrs = []string{"localhost"} }, "host:port"},
		{"zero clients", func(c *Config) { c.Clients = 0 }, "clients"},
		{"zero pipeline", func(c *Config) { c.Pipeline = 0 }, "pipeline"},
		{"empty mix", func(c *Config) { c.Mix = Mix{} }, "mix"},
		{"endless", func(c *Config) { c.Total, c.Duration = 0, 0 }, "would not end"},
		{"no keys", func(c *Config) { c.Keys = 0 }, "keys"},
		{"zipf exponent", func(c *Config) { c.Dist, c.ZipfS = DistZipf, 0 }, "zipf"},
		{"value size", func(c *Config) { c.ValueSize = ValueSize{10, 5} }, "value size"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "rate"},
		{"rate too low to schedule", func(c *Config) { c.Rate = 1e-12 }, "years between requests"},
		{"endless duration", func(c *Config) { c.Duration, c.Warmup = math.MaxInt64-1, time.Hour }, "years"},
		{"no timeout", func(c *Config) { c.Timeout = 0 }, "timeout"},
		{"verify keys", func(c *Config) { c.Verify, c.Keys, c.Clients = true, 10, 20 }, "one key per client"},
		{"batch too big", func(c *Config) { c.Mix = mustMix(t, "batch"); c.BatchSize, c.Keys = 20, 10 }, "batch size"},
		{"verify tiny values", func(c *Config) { c.Verify, c.ValueSize = true, ValueSize{0, 100} }, "first 8 bytes"},
		{"verify too many keys", func(c *Config) { c.Verify, c.Keys = true, maxVerifyKeys+1 }, "4 bytes per key"},
		{"batch request too large", func(c *Config) {
			c.Mix = mustMix(t, "batch")
			c.BatchSize, c.ValueSize, c.Keys = 100, ValueSize{MaxValueSize, MaxValueSize}, 1000
		}, "for one request"},
		{"verify batch", func(c *Config) {
			c.Mix = mustMix(t, "batch")
			c.Verify, c.Keys, c.Clients, c.BatchSize = true, 100, 20, 10
		}, "keys per client"},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.change(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tt.name, err, tt.want)
		}
	}
}

func TestParseProto(t *testing.T) {
	for in, want := range map[string]Proto{"pipe": ProtoPipe, "RESP": ProtoRESP, "redis": ProtoRESP} {
		if got, err := ParseProto(in); err != nil || got != want {
			t.Errorf("ParseProto(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseProto("http"); err == nil {
		t.Error("ParseProto(http) succeeded")
	}
}
