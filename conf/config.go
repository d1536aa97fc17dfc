// Package conf turns a TOML file into a validated Config: the one place where
// configuration is read, defaulted and checked.
//
// Invariants:
//   - A Config returned by Load or Parse starts from Default(), has every key
//     of the file applied, and passes Validate; nothing else in the program
//     needs to re-check ranges or spell-check enumerations.
//   - Decoding is strict: a key the Config does not define, a value of the
//     wrong TOML type and a value out of range are all errors, and every
//     error message names the file and the dotted key
//     ("conf/node1.toml: storage.sync: must be ...").
//   - Sizes (ByteSize) are bytes; "MB" means 10^6 and "MiB" 2^20.
//     Durations are Go duration strings ("100ms", "5s").
package conf

import "time"

// Config is the whole configuration of a kvserver process.
type Config struct {
	Server  Server  `toml:"server"`
	Storage Storage `toml:"storage"`
	Cluster Cluster `toml:"cluster"`
	Log     Log     `toml:"log"`
}

// Server configures the network front end: listeners and per-connection limits.
type Server struct {
	Listen         string   `toml:"listen"`           // default "127.0.0.1:8080"
	AdminListen    string   `toml:"admin_listen"`     // default "127.0.0.1:9080"; "" disables admin HTTP
	EventLoops     int      `toml:"event_loops"`      // default 0 = runtime.NumCPU()
	MaxConnections int      `toml:"max_connections"`  // default 10000
	MaxFrameBytes  ByteSize `toml:"max_frame_bytes"`  // default 32 MiB
	MaxKeyBytes    ByteSize `toml:"max_key_bytes"`    // default 64 KiB
	MaxArgs        int      `toml:"max_args"`         // default 1048576
	MaxOutputBytes ByteSize `toml:"max_output_bytes"` // default 64 MiB
	MaxInputBytes  ByteSize `toml:"max_input_bytes"`  // default 1 GiB, all connections together
	RangeLimit     int      `toml:"range_limit"`      // default 1000
	IdleTimeout    Duration `toml:"idle_timeout"`     // default 0 = off
	RequirePass    string   `toml:"requirepass"`      // default ""
	AllowFlush     bool     `toml:"allow_flush"`      // default false

	// MaxTotalOutputBytes bounds the unsent replies of all connections
	// together, as MaxInputBytes bounds their unparsed input: default
	// 1 GiB, 0 = no total limit.
	MaxTotalOutputBytes ByteSize `toml:"max_total_output_bytes"`

	// TLS on a second client port: both protocols, as on Listen. Cert and
	// key are required with it; with CA set, clients must present a
	// certificate it signed.
	TLSListen   string `toml:"tls_listen"`    // default "" = no TLS port
	TLSCertFile string `toml:"tls_cert_file"` // the server's certificate (chain), PEM
	TLSKeyFile  string `toml:"tls_key_file"`  // its private key
	TLSCAFile   string `toml:"tls_ca_file"`   // default "": client certificates not asked for
	// AdminTLS serves admin_listen over HTTPS with the same certificate
	// (and, with TLSCAFile, the same client certificates).
	AdminTLS bool `toml:"admin_tls"` // default false
}

// Storage configures the LSM engine.
type Storage struct {
	Dir                 string   `toml:"dir"`                   // default "./data"
	Sync                string   `toml:"sync"`                  // "always" (default) | "batch" | "none"
	SyncInterval        Duration `toml:"sync_interval"`         // default 100ms
	MemtableBytes       ByteSize `toml:"memtable_bytes"`        // default 64 MiB
	BlockCacheBytes     ByteSize `toml:"block_cache_bytes"`     // default 256 MiB
	MaxOpenTables       int      `toml:"max_open_tables"`       // default 1000
	BlockBytes          ByteSize `toml:"block_bytes"`           // default 4 KiB
	Compression         string   `toml:"compression"`           // "s2" (default) | "zstd" | "none"
	L0CompactionTrigger int      `toml:"l0_compaction_trigger"` // default 4
	L0StopWrites        int      `toml:"l0_stop_writes"`        // default 12
	LevelBaseBytes      ByteSize `toml:"level_base_bytes"`      // default 64 MiB
}

// Cluster configures replication; it is ignored unless Enabled is set.
type Cluster struct {
	Enabled         bool     `toml:"enabled"` // default false
	NodeID          uint64   `toml:"node_id"`
	RaftAddress     string   `toml:"raft_address"`
	ClientAddress   string   `toml:"client_address"`     // default "": server.listen
	Shards          int      `toml:"shards"`             // default 8
	RTTMillis       int      `toml:"rtt_ms"`             // default 10
	ElectionRTT     int      `toml:"election_rtt"`       // default 10
	HeartbeatRTT    int      `toml:"heartbeat_rtt"`      // default 1
	ReadConsistency string   `toml:"read_consistency"`   // "linearizable" (default) | "stale"
	BalanceLeaders  bool     `toml:"balance_leaders"`    // default true
	Join            []string `toml:"join"`               // client addresses of members to join through
	SnapshotEntries int      `toml:"snapshot_entries"`   // default 10000
	MaxRaftLogBytes ByteSize `toml:"max_raft_log_bytes"` // default 512 MiB
	RequestTimeout  Duration `toml:"request_timeout"`    // default 5s
	Secret          string   `toml:"secret"`             // default "": raft connections unauthenticated
	MinFreeBytes    ByteSize `toml:"min_free_bytes"`     // default 512 MiB; 0 = no free-space guard
	// Mutual TLS on the raft port: PEM files, all three or none.
	TLSCertFile string   `toml:"tls_cert_file"` // this node's certificate (chain)
	TLSKeyFile  string   `toml:"tls_key_file"`  // its private key
	TLSCAFile   string   `toml:"tls_ca_file"`   // the CA that signed every member's certificate
	Members     []Member `toml:"members"`
}

// Member is one node of the initial cluster membership.
type Member struct {
	ID     uint64 `toml:"id"`
	Raft   string `toml:"raft"`
	Client string `toml:"client"`
}

// Log configures the process's structured logger.
type Log struct {
	Level  string `toml:"level"`  // "debug" | "info" (default) | "warn" | "error"
	Format string `toml:"format"` // "text" (default) | "json"
	File   string `toml:"file"`   // "" = stderr
}

// Default returns the configuration kvserver runs with when given no file:
// standalone, listening on 127.0.0.1:8080, data in ./data, fsync on every
// acknowledged write. conf/standalone.toml spells out the same values.
func Default() Config {
	return Config{
		Server: Server{
			Listen:         "127.0.0.1:8080",
			AdminListen:    "127.0.0.1:9080",
			EventLoops:     0,
			MaxConnections: 10000,
			MaxFrameBytes:  32 * MiB,
			MaxKeyBytes:    64 * KiB,
			MaxArgs:        1 << 20,
			MaxOutputBytes: 64 * MiB,
			MaxInputBytes:  GiB,
			RangeLimit:     1000,
			IdleTimeout:    0,

			MaxTotalOutputBytes: GiB,
		},
		Storage: Storage{
			Dir:                 "./data",
			Sync:                SyncAlways,
			SyncInterval:        Duration(100 * time.Millisecond),
			MemtableBytes:       64 * MiB,
			BlockCacheBytes:     256 * MiB,
			MaxOpenTables:       1000,
			BlockBytes:          4 * KiB,
			Compression:         CompressionS2,
			L0CompactionTrigger: 4,
			L0StopWrites:        12,
			LevelBaseBytes:      64 * MiB,
		},
		Cluster: Cluster{
			Shards:          8,
			RTTMillis:       10,
			ElectionRTT:     10,
			HeartbeatRTT:    1,
			ReadConsistency: ReadLinearizable,
			BalanceLeaders:  true,
			SnapshotEntries: 10000,
			MaxRaftLogBytes: 512 * MiB,
			RequestTimeout:  Duration(5 * time.Second),
			MinFreeBytes:    512 * MiB,
		},
		Log: Log{
			Level:  "info",
			Format: "text",
		},
	}
}

// The values the enumerated string keys accept.
const (
	SyncAlways = "always"
	SyncBatch  = "batch"
	SyncNone   = "none"

	CompressionS2   = "s2"
	CompressionZstd = "zstd"
	CompressionNone = "none"

	ReadLinearizable = "linearizable"
	ReadStale        = "stale"
)
