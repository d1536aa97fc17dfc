// Package bench generates load against a kvserver (or redis-server) and
// measures it: workloads, key and value generators, the closed- and
// open-loop drivers, HDR latency histograms and the reports kvbench prints.
//
// Invariants:
//
//   - Each client is one TCP connection driven by one goroutine, with up
//     to Pipeline requests in flight. Replies are matched to requests in
//     order (PROTOCOL.md §3), through a ring of slots.
//   - The hot path does not allocate: requests are encoded into a reused
//     buffer, keys formatted into it, values sliced from a shared pool,
//     replies decoded in place, latencies recorded into histograms the
//     client owns. Shared state is read-only or atomic.
//   - Latency is measured from the latency origin of a request: its send
//     time in closed loop, its scheduled time in open loop (Config.Rate), so
//     a server stall shows up in every request it delayed, not only in the
//     ones that happened to be in flight (no coordinated omission).
//   - Histograms have one geometry (1 ns to 1 h, 3 significant digits), so
//     per-client, per-operation and per-second histograms merge exactly.
//   - Requests that start during the warmup are sent but not measured;
//     their failures count in the run's total errors only.
//   - With Verify, every key has exactly one writer (the client whose index
//     it is congruent to), so a get is checked against the last value that
//     same connection wrote before sending it; read-your-writes on one
//     connection makes that exact, pipelined or not.
//   - The tool says when it is the bottleneck: if its own CPU time exceeds
//     90% of wall time × GOMAXPROCS, the result is marked client-bound.
package bench
