// Package server is kvserver's network front end: a gnet event-loop TCP
// server that speaks the pipe protocol and RESP2 on one port (chosen per
// connection from its first byte) over a store.Store.
//
// Invariants:
//   - The event loop never waits on disk sync or consensus. Commands that
//     finish in memory reply on the loop; the rest complete later through the
//     loop's mailbox (one EventLoop.Execute per burst, not per reply).
//   - Replies leave in request order on each connection: a connection keeps a
//     FIFO of reply slots, and only its contiguous completed prefix is written.
//   - Read-your-writes: a command is dispatched while earlier ones are still
//     pending only when both are writes or both are reads; otherwise the
//     connection stops parsing ("parks") until its queue drains. Pipelined
//     writes therefore still share group commits.
//   - Everything a connection buffers is bounded: unparsed input by
//     max_frame_bytes, unsent output by max_output_bytes, pending replies by
//     maxPending; a client over a limit is closed, never allowed to grow memory.
//   - Per-connection state is touched only on the connection's own loop.
//     Other goroutines reach it only through the loop's mailbox.
package server
