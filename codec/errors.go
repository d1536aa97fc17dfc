package codec

// ProtocolError is every decoding error.
//
// Fatal means the input can no longer be framed, so the connection must be
// closed after replying. Otherwise the bad request was consumed (n > 0) and
// the connection can go on with the next one.
type ProtocolError struct {
	Msg   string
	Fatal bool
}

// Error returns Msg: it is written to the client as it stands.
func (e *ProtocolError) Error() string { return e.Msg }

// The fixed decoding errors. They are returned as shared pointers so that
// a stream of bad requests does not allocate; callers must not modify them.
var (
	errBadEscape     = &ProtocolError{Msg: "bad escape sequence"}
	errTooLarge      = &ProtocolError{Msg: "request too large", Fatal: true}
	errTooManyFields = &ProtocolError{Msg: "too many fields"}

	errMultibulkLen  = &ProtocolError{Msg: "Protocol error: invalid multibulk length", Fatal: true}
	errBulkLen       = &ProtocolError{Msg: "Protocol error: invalid bulk length", Fatal: true}
	errBulkCRLF      = &ProtocolError{Msg: "Protocol error: expected CRLF after bulk data", Fatal: true}
	errInlineTooBig  = &ProtocolError{Msg: "Protocol error: too big inline request", Fatal: true}
	errInlineQuotes  = &ProtocolError{Msg: "Protocol error: unbalanced quotes in request", Fatal: true}
	errInlineTooMany = &ProtocolError{Msg: "Protocol error: too many arguments in inline request", Fatal: true}
	errReplyLine     = &ProtocolError{Msg: "Protocol error: expected CRLF at end of line", Fatal: true}
	errReplyInt      = &ProtocolError{Msg: "Protocol error: invalid integer", Fatal: true}
	errReplyTooLarge = &ProtocolError{Msg: "Protocol error: reply too large", Fatal: true}
	errReplyTooDeep  = &ProtocolError{Msg: "Protocol error: reply nested too deeply", Fatal: true}
	errReplyTooMany  = &ProtocolError{Msg: "Protocol error: too many elements in reply", Fatal: true}
)

// expectedDollar is Redis's error for a multibulk element that is not a
// bulk string. Like Redis, it quotes the offending byte as it is.
func expectedDollar(got byte) *ProtocolError { return expected('$', got) }

// expected is the error for a value of type got where want was required.
func expected(want, got byte) *ProtocolError {
	return &ProtocolError{Msg: "Protocol error: expected '" + string([]byte{want}) + "', got '" + string([]byte{got}) + "'", Fatal: true}
}

func unexpectedReplyType(got byte) *ProtocolError {
	return &ProtocolError{Msg: "Protocol error: unexpected reply type '" + string([]byte{got}) + "'", Fatal: true}
}
