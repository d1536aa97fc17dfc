package conf

import (
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestDefaultValues(t *testing.T) {
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"server.listen", c.Server.Listen, "127.0.0.1:8080"},
		{"server.admin_listen", c.Server.AdminListen, "127.0.0.1:9080"},
		{"server.max_frame_bytes", c.Server.MaxFrameBytes, ByteSize(32 << 20)},
		{"server.max_key_bytes", c.Server.MaxKeyBytes, ByteSize(64 << 10)},
		{"server.max_args", c.Server.MaxArgs, 1048576},
		{"server.max_output_bytes", c.Server.MaxOutputBytes, ByteSize(64 << 20)},
		{"server.max_input_bytes", c.Server.MaxInputBytes, ByteSize(1 << 30)},
		{"server.max_total_output_bytes", c.Server.MaxTotalOutputBytes, ByteSize(1 << 30)},
		{"server.tls_listen", c.Server.TLSListen, ""},
		{"server.tls_ca_file", c.Server.TLSCAFile, ""},
		{"server.range_limit", c.Server.RangeLimit, 1000},
		{"server.max_connections", c.Server.MaxConnections, 10000},
		{"storage.dir", c.Storage.Dir, "./data"},
		{"storage.sync", c.Storage.Sync, "always"},
		{"storage.sync_interval", c.Storage.SyncInterval.D(), 100 * time.Millisecond},
		{"storage.block_cache_bytes", c.Storage.BlockCacheBytes, ByteSize(256 << 20)},
		{"storage.max_open_tables", c.Storage.MaxOpenTables, 1000},
		{"storage.compression", c.Storage.Compression, "s2"},
		{"cluster.enabled", c.Cluster.Enabled, false},
		{"cluster.shards", c.Cluster.Shards, 8},
		{"cluster.read_consistency", c.Cluster.ReadConsistency, "linearizable"},
		{"cluster.balance_leaders", c.Cluster.BalanceLeaders, true},
		{"cluster.request_timeout", c.Cluster.RequestTimeout.D(), 5 * time.Second},
		{"cluster.min_free_bytes", c.Cluster.MinFreeBytes, ByteSize(512 << 20)},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("default %s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

// The reference file must describe the defaults exactly, key for key.
func TestStandaloneFileIsDefault(t *testing.T) {
	c, err := Load("standalone.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("standalone.toml differs from Default():\n got %+v\nwant %+v", c, Default())
	}

	var raw map[string]any
	md, err := toml.DecodeFile("standalone.toml", &raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range leafKeys(reflect.TypeFor[Config](), nil) {
		if key[0] == "cluster" && key[1] == "members" {
			continue // an array of tables; shown commented out
		}
		if !md.IsDefined(key...) {
			t.Errorf("standalone.toml does not set %s", strings.Join(key, "."))
		}
	}
}

// leafKeys lists the dotted TOML keys of every non-table field of t.
func leafKeys(t reflect.Type, prefix []string) [][]string {
	var keys [][]string
	for i := range t.NumField() {
		f := t.Field(i)
		key := append(append([]string(nil), prefix...), f.Tag.Get("toml"))
		if f.Type.Kind() == reflect.Struct {
			keys = append(keys, leafKeys(f.Type, key)...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

func TestNodeFiles(t *testing.T) {
	members := []Member{
		{ID: 1, Raft: "127.0.0.1:7001", Client: "127.0.0.1:8080"},
		{ID: 2, Raft: "127.0.0.1:7002", Client: "127.0.0.1:8081"},
		{ID: 3, Raft: "127.0.0.1:7003", Client: "127.0.0.1:8082"},
	}
	for i, file := range []string{"node1.toml", "node2.toml", "node3.toml"} {
		c, err := Load(file)
		if err != nil {
			t.Fatal(err)
		}
		want := Default()
		want.Server.Listen = members[i].Client
		want.Server.AdminListen = []string{"127.0.0.1:9080", "127.0.0.1:9081", "127.0.0.1:9082"}[i]
		want.Server.EventLoops = 1
		want.Storage.Dir = []string{"./cluster-data/node1", "./cluster-data/node2", "./cluster-data/node3"}[i]
		want.Cluster.Enabled = true
		want.Cluster.NodeID = uint64(i + 1)
		want.Cluster.RaftAddress = members[i].Raft
		want.Cluster.Shards = 8
		want.Cluster.RTTMillis = 10
		want.Cluster.Members = members
		if !reflect.DeepEqual(c, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", file, c, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("does-not-exist.toml")
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "does-not-exist.toml") {
		t.Fatalf("Load(missing) = %v, want a not-exist error naming the file", err)
	}
}

func TestParseOverlaysDefaults(t *testing.T) {
	c, err := Parse([]byte(`
[server]
listen = "0.0.0.0:6379"
max_frame_bytes = 1048576
[storage]
sync = "batch"
sync_interval = "10ms"
memtable_bytes = "8MB"
[log]
format = "json"
`), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Server.Listen = "0.0.0.0:6379"
	want.Server.MaxFrameBytes = MiB
	want.Storage.Sync = "batch"
	want.Storage.SyncInterval = Duration(10 * time.Millisecond)
	want.Storage.MemtableBytes = 8 * MB
	want.Log.Format = "json"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // each must appear in the error
	}{
		{"unknown key", "[server]\nlisen = \"x\"\n", []string{"x.toml: unknown key server.lisen"}},
		{"unknown top-level key", "verbose = true\n", []string{"x.toml: unknown key verbose"}},
		{"unknown table reported once", "[metrics]\na = 1\nb = 2\n", []string{"x.toml: unknown key metrics"}},
		{"unknown member key", "[[cluster.members]]\nid = 1\nhost = \"h\"\n", []string{"x.toml: unknown key cluster.members.host"}},
		{"syntax error has line", "[server]\nlisten = \n", []string{"x.toml:2:"}},
		{"duplicate key", "[server]\nlisten = \"a:1\"\nlisten = \"b:2\"\n", []string{"x.toml:"}},
		{"string wanted", "[server]\nlisten = 8080\n", []string{"x.toml: server.listen: want a string, got integer 8080"}},
		{"integer wanted", "[server]\nrange_limit = \"many\"\n", []string{`x.toml: server.range_limit: want an integer, got string "many"`}},
		{"float for integer", "[storage]\nl0_stop_writes = 1.5\n", []string{"x.toml: storage.l0_stop_writes: want an integer, got float 1.5"}},
		{"boolean wanted", "[server]\nallow_flush = \"yes\"\n", []string{"x.toml: server.allow_flush: want a boolean"}},
		{"table wanted", "server = 1\n", []string{"x.toml: server: want a table"}},
		{"negative node id", "[cluster]\nnode_id = -1\n", []string{"x.toml: cluster.node_id: must not be negative"}},
		{"array wanted", "[cluster]\njoin = \"127.0.0.1:8080\"\n", []string{"x.toml: cluster.join: want an array"}},
		{"array element", "[cluster]\njoin = [\"a:1\", 2]\n", []string{"x.toml: cluster.join[1]: want a string, got integer 2"}},
		{"member field type", "[[cluster.members]]\nid = \"one\"\n", []string{"x.toml: cluster.members[0].id: want a non-negative integer"}},
		{"bad size unit", "[storage]\nmemtable_bytes = \"64M\"\n", []string{`x.toml: storage.memtable_bytes: invalid size "64M": unknown unit "M"`}},
		{"negative size", "[storage]\nmemtable_bytes = -1\n", []string{"x.toml: storage.memtable_bytes: invalid size -1"}},
		{"size of wrong type", "[storage]\nmemtable_bytes = true\n", []string{"x.toml: storage.memtable_bytes: want an integer number of bytes"}},
		{"bad duration", "[storage]\nsync_interval = \"soon\"\n", []string{`x.toml: storage.sync_interval: invalid duration "soon"`}},
		{"duration without unit", "[server]\nidle_timeout = 30\n", []string{"x.toml: server.idle_timeout: invalid duration 30"}},
		{"bad sync", "[storage]\nsync = \"sometimes\"\n", []string{`x.toml: storage.sync: must be "always", "batch" or "none", got "sometimes"`}},
		{"several problems", "[storage]\nsync = \"x\"\ncompression = \"lz4\"\n[log]\nlevel = \"loud\"\n",
			[]string{"x.toml: storage.sync:", "x.toml: storage.compression:", "x.toml: log.level:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml), "x.toml")
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseEmptyNameStillNamesSomething(t *testing.T) {
	_, err := Parse([]byte("bogus = 1\n"), "")
	if err == nil || !strings.HasPrefix(err.Error(), "config: unknown key bogus") {
		t.Fatalf("err = %v", err)
	}
}

// validCluster is a one-node cluster that passes validation; tests break
// one thing at a time.
func validCluster() Config {
	c := Default()
	c.Cluster.Enabled = true
	c.Cluster.NodeID = 1
	c.Cluster.RaftAddress = "127.0.0.1:7001"
	c.Cluster.Members = []Member{{ID: 1, Raft: "127.0.0.1:7001", Client: "127.0.0.1:8080"}}
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"default", func(*Config) {}, ""},
		{"listen without port", func(c *Config) { c.Server.Listen = "localhost" }, "server.listen: must be a host:port address"},
		{"listen bad port", func(c *Config) { c.Server.Listen = "127.0.0.1:http" }, "server.listen: must be a host:port address with a port number"},
		{"listen port too big", func(c *Config) { c.Server.Listen = "127.0.0.1:70000" }, "server.listen:"},
		{"listen all interfaces", func(c *Config) { c.Server.Listen = ":8080" }, ""},
		{"ephemeral port", func(c *Config) { c.Server.Listen = "127.0.0.1:0" }, ""},
		{"admin disabled", func(c *Config) { c.Server.AdminListen = "" }, ""},
		{"admin bad", func(c *Config) { c.Server.AdminListen = "nope" }, "server.admin_listen:"},
		{"event loops negative", func(c *Config) { c.Server.EventLoops = -1 }, "server.event_loops: must not be negative"},
		{"max connections zero", func(c *Config) { c.Server.MaxConnections = 0 }, "server.max_connections: must be greater than 0"},
		{"frame zero", func(c *Config) { c.Server.MaxFrameBytes = 0 }, "server.max_frame_bytes: must be greater than 0"},
		{"key zero", func(c *Config) { c.Server.MaxKeyBytes = 0 }, "server.max_key_bytes: must be greater than 0"},
		{"frame below key", func(c *Config) { c.Server.MaxFrameBytes = KiB }, "server.max_frame_bytes: must be at least server.max_key_bytes (64KiB), got 1KiB"},
		{"max args", func(c *Config) { c.Server.MaxArgs = 2 }, "server.max_args: must be at least 3"},
		{"output zero", func(c *Config) { c.Server.MaxOutputBytes = 0 }, "server.max_output_bytes:"},
		{"input zero", func(c *Config) { c.Server.MaxInputBytes = 0 }, "server.max_input_bytes:"},
		{"input below two frames", func(c *Config) { c.Server.MaxInputBytes = 48 * MiB }, "server.max_input_bytes: must be at least twice server.max_frame_bytes (32MiB), got 48MiB"},
		{"total output off", func(c *Config) { c.Server.MaxTotalOutputBytes = 0 }, ""},
		{"total output negative", func(c *Config) { c.Server.MaxTotalOutputBytes = -1 }, "server.max_total_output_bytes: must not be negative, got -1"},
		{"total output below one connection's", func(c *Config) { c.Server.MaxTotalOutputBytes = 32 * MiB }, "server.max_total_output_bytes: must be 0 or at least server.max_output_bytes (64MiB), got 32MiB"},
		{"client tls", func(c *Config) {
			c.Server.TLSListen, c.Server.TLSCertFile, c.Server.TLSKeyFile = "0.0.0.0:6380", "server.pem", "server-key.pem"
		}, ""},
		{"client tls with client certificates", func(c *Config) {
			c.Server.TLSListen, c.Server.TLSCertFile, c.Server.TLSKeyFile, c.Server.TLSCAFile = "0.0.0.0:6380", "server.pem", "server-key.pem", "ca.pem"
		}, ""},
		{"client tls without key", func(c *Config) { c.Server.TLSListen, c.Server.TLSCertFile = "0.0.0.0:6380", "server.pem" },
			"server.tls_key_file: must be set when server.tls_listen is set"},
		{"client tls bad address", func(c *Config) {
			c.Server.TLSListen, c.Server.TLSCertFile, c.Server.TLSKeyFile = "6380", "server.pem", "server-key.pem"
		}, "server.tls_listen: must be a host:port address"},
		{"client tls on the plain port", func(c *Config) {
			c.Server.TLSListen, c.Server.TLSCertFile, c.Server.TLSKeyFile = c.Server.Listen, "server.pem", "server-key.pem"
		}, "server.tls_listen: must differ from server.listen"},
		{"client certificate without the port", func(c *Config) { c.Server.TLSCertFile = "server.pem" },
			"server.tls_cert_file: is set but neither server.tls_listen nor server.admin_tls is"},
		{"admin tls", func(c *Config) {
			c.Server.AdminTLS, c.Server.TLSCertFile, c.Server.TLSKeyFile = true, "server.pem", "server-key.pem"
		}, ""},
		{"admin tls without a certificate", func(c *Config) { c.Server.AdminTLS = true },
			"server.tls_cert_file: must be set when server.admin_tls is set"},
		{"admin tls without the admin port", func(c *Config) {
			c.Server.AdminTLS, c.Server.AdminListen, c.Server.TLSCertFile, c.Server.TLSKeyFile = true, "", "server.pem", "server-key.pem"
		}, "server.admin_tls: is set but server.admin_listen is off"},
		{"total output equal to one connection's", func(c *Config) { c.Server.MaxTotalOutputBytes = 64 * MiB }, ""},
		{"range limit", func(c *Config) { c.Server.RangeLimit = 0 }, "server.range_limit:"},
		{"idle negative", func(c *Config) { c.Server.IdleTimeout = -1 }, "server.idle_timeout: must not be negative"},
		{"dir empty", func(c *Config) { c.Storage.Dir = "" }, "storage.dir: must not be empty"},
		{"sync", func(c *Config) { c.Storage.Sync = "fsync" }, `storage.sync: must be "always", "batch" or "none", got "fsync"`},
		{"batch needs interval", func(c *Config) { c.Storage.Sync = "batch"; c.Storage.SyncInterval = 0 }, "storage.sync_interval: must be greater than 0"},
		{"interval unused when always", func(c *Config) { c.Storage.SyncInterval = 0 }, ""},
		{"memtable", func(c *Config) { c.Storage.MemtableBytes = 0 }, "storage.memtable_bytes:"},
		{"cache", func(c *Config) { c.Storage.BlockCacheBytes = -5 }, "storage.block_cache_bytes: must be greater than 0, got -5"},
		{"huge cache", func(c *Config) { c.Storage.BlockCacheBytes = 8070450532247928832 }, "storage.block_cache_bytes: must be at most 1TiB, got 7340032TiB"},
		{"huge memtable", func(c *Config) { c.Storage.MemtableBytes = 2 * TiB }, "storage.memtable_bytes: must be at most 1TiB, got 2TiB"},
		{"block", func(c *Config) { c.Storage.BlockBytes = 0 }, "storage.block_bytes:"},
		{"block above memtable", func(c *Config) { c.Storage.BlockBytes = 128 * MiB }, "storage.block_bytes: must not exceed storage.memtable_bytes"},
		{"compression", func(c *Config) { c.Storage.Compression = "lz4" }, `storage.compression: must be "s2", "zstd" or "none", got "lz4"`},
		{"compression zstd", func(c *Config) { c.Storage.Compression = "zstd" }, ""},
		{"l0 trigger", func(c *Config) { c.Storage.L0CompactionTrigger = 0 }, "storage.l0_compaction_trigger:"},
		{"l0 stop", func(c *Config) { c.Storage.L0StopWrites = 4 }, "storage.l0_stop_writes: must be greater than storage.l0_compaction_trigger (4), got 4"},
		{"level base", func(c *Config) { c.Storage.LevelBaseBytes = 0 }, "storage.level_base_bytes:"},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, `log.level: must be "debug", "info", "warn" or "error", got "trace"`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: must be "text" or "json", got "xml"`},
		{"cluster ignored when disabled", func(c *Config) { c.Cluster.Shards = 0; c.Cluster.ReadConsistency = "x" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			checkValidate(t, c, tt.want)
		})
	}
}

func TestValidateCluster(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"node id", func(c *Config) { c.Cluster.NodeID = 0 }, "cluster.node_id: must be set"},
		{"raft address missing", func(c *Config) { c.Cluster.RaftAddress = "" }, "cluster.raft_address: must be a host:port address"},
		{"shards zero", func(c *Config) { c.Cluster.Shards = 0 }, "cluster.shards: must be between 1 and 1024, got 0"},
		{"shards too many", func(c *Config) { c.Cluster.Shards = 1025 }, "cluster.shards: must be between 1 and 1024"},
		{"shards max", func(c *Config) { c.Cluster.Shards = 1024 }, ""},
		{"rtt", func(c *Config) { c.Cluster.RTTMillis = 0 }, "cluster.rtt_ms: must be greater than 0"},
		{"heartbeat", func(c *Config) { c.Cluster.HeartbeatRTT = 0 }, "cluster.heartbeat_rtt: must be greater than 0"},
		{"election", func(c *Config) { c.Cluster.ElectionRTT = 2 }, "cluster.election_rtt: must be greater than 2 * cluster.heartbeat_rtt (2), got 2"},
		{"election just enough", func(c *Config) { c.Cluster.ElectionRTT = 3 }, ""},
		{"read consistency", func(c *Config) { c.Cluster.ReadConsistency = "eventual" }, `cluster.read_consistency: must be "linearizable" or "stale", got "eventual"`},
		{"stale", func(c *Config) { c.Cluster.ReadConsistency = "stale" }, ""},
		{"join address", func(c *Config) { c.Cluster.Join = []string{"127.0.0.1"} }, "cluster.join[0]: must be a host:port address"},
		{"snapshot entries", func(c *Config) { c.Cluster.SnapshotEntries = -1 }, "cluster.snapshot_entries: must not be negative"},
		{"raft log bound", func(c *Config) { c.Cluster.MaxRaftLogBytes = 1000 }, "cluster.max_raft_log_bytes: must be at least 1MiB"},
		{"request timeout", func(c *Config) { c.Cluster.RequestTimeout = 0 }, "cluster.request_timeout: must be greater than 0"},
		{"min free bytes", func(c *Config) { c.Cluster.MinFreeBytes = -1 }, "cluster.min_free_bytes: must not be negative"},
		{"min free bytes off", func(c *Config) { c.Cluster.MinFreeBytes = 0 }, ""},
		{"tls", func(c *Config) {
			c.Cluster.TLSCertFile, c.Cluster.TLSKeyFile, c.Cluster.TLSCAFile = "node1.pem", "node1-key.pem", "ca.pem"
		}, ""},
		{"tls without key", func(c *Config) { c.Cluster.TLSCertFile, c.Cluster.TLSCAFile = "node1.pem", "ca.pem" },
			"cluster.tls_key_file: must be set with the other cluster.tls_* keys"},
		{"member id zero", func(c *Config) {
			c.Cluster.Members = append(c.Cluster.Members, Member{Raft: "127.0.0.1:7002", Client: "127.0.0.1:8081"})
		}, "cluster.members[1].id: must be greater than 0"},
		{"duplicate id", func(c *Config) {
			c.Cluster.Members = append(c.Cluster.Members, Member{ID: 1, Raft: "127.0.0.1:7002", Client: "127.0.0.1:8081"})
		}, "cluster.members[1].id: duplicates cluster.members[0].id (1)"},
		{"duplicate raft", func(c *Config) {
			c.Cluster.Members = append(c.Cluster.Members, Member{ID: 2, Raft: "127.0.0.1:7001", Client: "127.0.0.1:8081"})
		}, `cluster.members[1].raft: duplicates cluster.members[0].raft ("127.0.0.1:7001")`},
		{"duplicate client", func(c *Config) {
			c.Cluster.Members = append(c.Cluster.Members, Member{ID: 2, Raft: "127.0.0.1:7002", Client: "127.0.0.1:8080"})
		}, `cluster.members[1].client: duplicates cluster.members[0].client`},
		{"member bad address", func(c *Config) { c.Cluster.Members[0].Client = "x" }, "cluster.members[0].client: must be a host:port address"},
		{"self raft mismatch", func(c *Config) { c.Cluster.RaftAddress = "127.0.0.1:7009" }, "cluster.members[0].raft: is this node (id 1) but differs from cluster.raft_address"},
		{"self missing", func(c *Config) { c.Cluster.NodeID = 2; c.Cluster.RaftAddress = "127.0.0.1:7002" }, "cluster.members: must include this node (cluster.node_id = 2)"},
		{"no members", func(c *Config) { c.Cluster.Members = nil }, "cluster.members: must list the initial members"},
		{"join instead of members", func(c *Config) {
			c.Cluster.Members = nil
			c.Cluster.NodeID = 4
			c.Cluster.Join = []string{"127.0.0.1:8080"}
		}, ""},
		{"join listening everywhere", func(c *Config) {
			c.Cluster.Members, c.Cluster.NodeID, c.Cluster.Join = nil, 4, []string{"127.0.0.1:8080"}
			c.Server.Listen = "0.0.0.0:8083"
		}, `cluster.client_address: must be set when cluster.join is set and server.listen ("0.0.0.0:8083") names no host clients can dial`},
		{"join listening on every IPv6 interface", func(c *Config) {
			c.Cluster.Members, c.Cluster.NodeID, c.Cluster.Join = nil, 4, []string{"127.0.0.1:8080"}
			c.Server.Listen = ":8083"
		}, "cluster.client_address: must be set"},
		{"join with client address", func(c *Config) {
			c.Cluster.Members, c.Cluster.NodeID, c.Cluster.Join = nil, 4, []string{"127.0.0.1:8080"}
			c.Server.Listen, c.Cluster.ClientAddress = "[::]:8083", "10.0.0.4:8083"
		}, ""},
		{"client address bad", func(c *Config) { c.Cluster.ClientAddress = "x" }, "cluster.client_address: must be a host:port address"},
		{"self client mismatch", func(c *Config) { c.Cluster.ClientAddress = "127.0.0.1:9999" }, `cluster.members[0].client: is this node (id 1) but differs from cluster.client_address ("127.0.0.1:9999")`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCluster()
			tt.mutate(&c)
			checkValidate(t, c, tt.want)
		})
	}
}

func checkValidate(t *testing.T, c Config, want string) {
	t.Helper()
	err := c.Validate()
	if want == "" {
		if err != nil {
			t.Fatalf("Validate() = %v, want nil", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Validate() = %v, want an error containing %q", err, want)
	}
}

// Validation errors found by Parse name the file too.
// server.max_total_output_bytes parses as a size, "0" turns the total
// limit off, and a value below max_output_bytes is refused naming the key
// and the file.
func TestParseMaxTotalOutputBytes(t *testing.T) {
	for _, tc := range []struct {
		toml string
		want ByteSize
	}{
		{`max_total_output_bytes = "2GiB"`, 2 * GiB},
		{`max_total_output_bytes = "0"`, 0},
		{`max_total_output_bytes = 67108864`, 64 * MiB},
	} {
		c, err := Parse([]byte("[server]\n"+tc.toml+"\n"), "x.toml")
		if err != nil {
			t.Fatalf("%s: %v", tc.toml, err)
		}
		if c.Server.MaxTotalOutputBytes != tc.want {
			t.Errorf("%s: got %s, want %s", tc.toml, c.Server.MaxTotalOutputBytes, tc.want)
		}
	}
	_, err := Parse([]byte("[server]\nmax_output_bytes = \"64MiB\"\nmax_total_output_bytes = \"16MiB\"\n"), "conf/x.toml")
	if want := "conf/x.toml: server.max_total_output_bytes: must be 0 or at least server.max_output_bytes (64MiB), got 16MiB"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
	if _, err := Parse([]byte("[server]\nmax_total_output_bytes = \"lots\"\n"), "x.toml"); err == nil || !strings.Contains(err.Error(), "server.max_total_output_bytes") {
		t.Fatalf("bad size: err = %v, want it to name server.max_total_output_bytes", err)
	}
}

func TestParseValidationNamesFile(t *testing.T) {
	_, err := Parse([]byte("[cluster]\nenabled = true\nnode_id = 1\nraft_address = \"127.0.0.1:7001\"\nshards = 0\n"), "conf/node1.toml")
	if err == nil || !strings.Contains(err.Error(), "conf/node1.toml: cluster.shards: must be between 1 and 1024, got 0") {
		t.Fatalf("err = %v", err)
	}
}

func TestEmptyArraysAreNil(t *testing.T) {
	c, err := Parse([]byte("[cluster]\njoin = []\nmembers = []\n"), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Join != nil || c.Cluster.Members != nil {
		t.Fatalf("join = %#v, members = %#v, want nil", c.Cluster.Join, c.Cluster.Members)
	}
}

func TestInlineMembers(t *testing.T) {
	c, err := Parse([]byte(`[cluster]
enabled = true
node_id = 1
raft_address = "127.0.0.1:7001"
members = [{id = 1, raft = "127.0.0.1:7001", client = "127.0.0.1:8080"}]
`), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Member{{1, "127.0.0.1:7001", "127.0.0.1:8080"}}; !reflect.DeepEqual(c.Cluster.Members, want) {
		t.Fatalf("members = %+v, want %+v", c.Cluster.Members, want)
	}
}

// TestOverridesBeforeValidation: command-line overrides apply before the
// file is validated, so a flag can replace a bad value, and a bad value a
// flag brings is reported with its key and the flag, not the file.
func TestOverridesBeforeValidation(t *testing.T) {
	file := []byte("[server]\nlisten = \"nonsense\"\n")
	if _, err := Parse(file, "kv.toml"); err == nil || !strings.Contains(err.Error(), "kv.toml: server.listen") {
		t.Fatalf("bad listen without override: %v", err)
	}
	listen := Override{Source: "-listen", Key: "server.listen", Set: func(c *Config) { c.Server.Listen = "127.0.0.1:9999" }}
	c, err := Parse(file, "kv.toml", listen)
	if err != nil || c.Server.Listen != "127.0.0.1:9999" {
		t.Fatalf("override of a bad value: %v, listen %q", err, c.Server.Listen)
	}
	sync := Override{Source: "-sync", Key: "storage.sync", Set: func(c *Config) { c.Storage.Sync = "sometimes" }}
	_, err = Parse(file, "kv.toml", sync)
	if err == nil || !strings.Contains(err.Error(), "storage.sync (from -sync): ") || strings.Contains(err.Error(), "kv.toml: storage.sync") ||
		!strings.Contains(err.Error(), "kv.toml: server.listen") {
		t.Fatalf("bad file value and bad override: %v", err)
	}
}
