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
//   - Read-your-writes: a read never runs while an earlier write of its
//     connection is pending. A single-key GET behind pending writes is
//     deferred in the reply queue and runs when it reaches the front; a write
//     is dispatched behind pending reads only if none of them reads a key it
//     writes; anything else that would break the order (multi-key or range
//     reads or DEL behind writes, a write conflicting with a pending read)
//     parks the connection: parsing stops until its queue moves. Pipelined
//     writes therefore still share group commits.
//   - Everything a connection buffers is bounded: a frame over
//     max_frame_bytes or unparsed input over twice that closes the
//     connection, so does unsent output over max_output_bytes; more than
//     maxPending pending replies park it. All connections together are
//     bounded too: unparsed input by max_input_bytes, unsent output by
//     max_total_output_bytes (past either the connection holding the most
//     is closed). No client, nor many, can grow memory.
//   - Per-connection state is touched only on the connection's own loop,
//     other goroutines reaching it through the loop's mailbox, with one
//     exception: a direct reply. While a connection has offered its only
//     pending request, the completing goroutine may write that reply to the
//     socket itself; the offer, the socket and the closed flag are then
//     guarded by the connection's direct-reply mutex (conn.go, tryDirect).
package server
