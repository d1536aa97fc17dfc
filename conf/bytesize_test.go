package conf

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		err  string
	}{
		{"0", 0, ""},
		{"512", 512, ""},
		{"512B", 512, ""},
		{"4KiB", 4096, ""},
		{"64MiB", 64 << 20, ""},
		{"64mib", 64 << 20, ""},
		{"64 MiB", 64 << 20, ""},
		{" 1GiB ", 1 << 30, ""},
		{"2TiB", 2 << 40, ""},
		{"64MB", 64_000_000, ""},
		{"32mb", 32_000_000, ""},
		{"1KB", 1000, ""},
		{"3GB", 3_000_000_000, ""},
		{"1TB", 1_000_000_000_000, ""},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"", 0, "want a non-negative integer"},
		{"MiB", 0, "want a non-negative integer"},
		{"-1", 0, "want a non-negative integer"},
		{"1.5GiB", 0, `unknown unit ".5GiB"`},
		{"64M", 0, `unknown unit "M"`},
		{"64k", 0, `unknown unit "k"`},
		{"8EiB", 0, "unknown unit"},
		{"9223372036854775808", 0, "too large"},
		{"9000000TiB", 0, "too large"},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseByteSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0"},
		{1, "1"},
		{512, "512"},
		{1023, "1023"},
		{KiB, "1KiB"},
		{4 * KiB, "4KiB"},
		{1536 * KiB, "1536KiB"},
		{64 * MiB, "64MiB"},
		{GiB, "1GiB"},
		{3 * TiB, "3TiB"},
		{64 * MB, "64MB"},
		{1000, "1KB"},
		{1001, "1001"},
		{1000 * KiB, "1000KiB"},
		{-2048, "-2KiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		if tt.in < 0 {
			continue
		}
		back, err := ParseByteSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in.String(), back, err, int64(tt.in))
		}
	}
}

func TestByteSizeTOML(t *testing.T) {
	c, err := Parse([]byte("[server]\nmax_frame_bytes = 1048576\nmax_key_bytes = \"1KiB\"\nmax_output_bytes = \"2MB\"\n"), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.MaxFrameBytes != MiB || c.Server.MaxKeyBytes != KiB || c.Server.MaxOutputBytes != 2*MB {
		t.Fatalf("got %d %d %d", c.Server.MaxFrameBytes, c.Server.MaxKeyBytes, c.Server.MaxOutputBytes)
	}
}

// ByteSize and Duration also work as command-line flags (kvserver overrides).
func TestTextFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var b ByteSize
	var d Duration
	fs.TextVar(&b, "size", MiB, "")
	fs.TextVar(&d, "wait", Duration(time.Second), "")
	if b != MiB || d.D() != time.Second {
		t.Fatalf("defaults: %v %v", b, d)
	}
	if err := fs.Parse([]string{"-size", "4KiB", "-wait", "250ms"}); err != nil {
		t.Fatal(err)
	}
	if b != 4*KiB || d.D() != 250*time.Millisecond {
		t.Fatalf("got %v %v", b, d)
	}
	if err := fs.Parse([]string{"-size", "lots"}); err == nil {
		t.Fatal("bad size accepted")
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   any
		want time.Duration
		err  string
	}{
		{"100ms", 100 * time.Millisecond, ""},
		{"5s", 5 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{int64(0), 0, ""},
		{int64(5), 0, `invalid duration 5: write it as a string with a unit, like "5s"`},
		{"5", 0, `invalid duration "5"`},
		{"soon", 0, `invalid duration "soon"`},
		{"", 0, `invalid duration ""`},
		{true, 0, "want a duration string"},
		{1.5, 0, "want a duration string"},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalTOML(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("UnmarshalTOML(%#v) = %v, %v; want error containing %q", tt.in, d, err, tt.err)
			}
			continue
		}
		if err != nil || d.D() != tt.want {
			t.Errorf("UnmarshalTOML(%#v) = %v, %v; want %v", tt.in, d, err, tt.want)
		}
	}
	if s := Duration(1500 * time.Millisecond).String(); s != "1.5s" {
		t.Errorf("String() = %q", s)
	}
}
