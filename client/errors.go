package client

import "errors"

// ErrNotFound is returned by Get for a key with no value.
var ErrNotFound = errors.New("kv: not found")

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("kv: client closed")

// ServerError is an ERROR reply: the server understood the request and
// refused or failed it. The connection remains usable.
type ServerError struct {
	Msg string // the text after "ERROR|", e.g. "NOAUTH authentication required"
}

func (e *ServerError) Error() string { return "server error: " + e.Msg }

// ReplyError is a reply that does not fit the request, such as "OK" to a
// GET. The connection it came on is closed, since the reply stream can no
// longer be trusted to be in step.
type ReplyError struct {
	Cmd   string // the request's command
	Reply string // the reply line, fields joined with '|'
}

func (e *ReplyError) Error() string { return "unexpected reply to " + e.Cmd + ": " + e.Reply }
