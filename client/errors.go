package client

import (
	"errors"
	"strings"
)

// ErrNotFound is returned by Get for a key with no value.
var ErrNotFound = errors.New("kv: not found")

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("kv: client closed")

// ErrOutcomeUnknown is matched (errors.Is) by the error of a request that
// may or may not have taken effect: the server said so ("timeout: outcome
// unknown", a cluster write that was proposed but not confirmed in time),
// or the exchange failed after the request was sent (I/O error, timeout,
// cancellation, a reply that does not fit). A write that fails with any
// other error was not applied: the server refused it, or it was never sent
// (no node could be reached).
var ErrOutcomeUnknown = errors.New("kv: outcome unknown")

// ServerError is an ERROR reply: the server understood the request and
// refused or failed it, so it had no effect unless errors.Is(err,
// ErrOutcomeUnknown) (PROTOCOL.md: "a write that reported ERROR was not
// applied unless the message says so"). The connection remains usable.
type ServerError struct {
	Msg string // the text after "ERROR|", e.g. "NOAUTH authentication required"
}

func (e *ServerError) Error() string { return "server error: " + e.Msg }

// Is makes errors.Is(err, ErrOutcomeUnknown) true for an error reply that
// says the outcome is unknown.
func (e *ServerError) Is(target error) bool {
	return target == ErrOutcomeUnknown && strings.Contains(e.Msg, "outcome unknown")
}

// ReplyError is a reply that does not fit the request, such as "OK" to a
// GET. The connection it came on is closed, since the reply stream can no
// longer be trusted to be in step.
type ReplyError struct {
	Cmd   string // the request's command
	Reply string // the reply line, fields joined with '|'
}

func (e *ReplyError) Error() string { return "unexpected reply to " + e.Cmd + ": " + e.Reply }
