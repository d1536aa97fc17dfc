// Package codec frames, decodes and encodes the two wire protocols of the
// server: the line-based pipe protocol and the RESP2 subset (PROTOCOL.md).
//
// Invariants:
//
//   - Decoders are incremental. Decode is handed every byte buffered so far,
//     starting at a frame boundary; it either consumes exactly one whole
//     request (n > 0) or reports that more bytes are needed (n == 0). A
//     decoder remembers how far it got in a partial frame as offsets, never
//     as slices, so the caller may hand it a different slice holding the same
//     bytes plus more (gnet's Peek copies or not as it likes). Need tells the
//     caller how many bytes must be buffered before another call can make
//     progress, so a large partial frame is never rescanned from its start.
//   - Decoders are zero-copy. Decoded fields alias the caller's buffer unless
//     an escape had to be undone, in which case they alias the decoder's
//     scratch buffer. Either way they are valid until the next Decode call or
//     until the caller's buffer changes; anything kept longer must be copied.
//     Steady-state decoding of escape-free frames allocates nothing.
//   - Decoders never panic on any input. Every length read from the wire is
//     checked against Limits before it sizes anything, and memory only grows
//     with bytes actually received.
//   - A decision made on a prefix of the input is final: feeding the same
//     bytes in any number of pieces yields the same requests and the same
//     error as feeding them at once.
//   - Encoders only append to the caller's buffer; they never allocate beyond
//     growing it.
package codec
