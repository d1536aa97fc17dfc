package codec

// Default limits, used when a Limits field is zero or negative.
const (
	DefaultMaxFrame = 32 << 20  // bytes of one request
	DefaultMaxArgs  = 1 << 20   // fields or elements of one request
	DefaultMaxBulk  = 512 << 20 // bytes of one RESP bulk string
)

const (
	// maxInline bounds a RESP inline command line, as Redis's
	// PROTO_INLINE_MAX_SIZE does.
	maxInline = 64 << 10

	// maxHeaderDigits bounds the number after a RESP type byte:
	// len("-9223372036854775808") == 20. A header line that has no CRLF
	// within that many bytes can never be valid, so the decoder stops
	// waiting for one.
	maxHeaderDigits = 20

	// maxRetainedScratch and maxRetainedFields bound what a decoder keeps
	// between frames, so one huge request does not pin its memory for the
	// life of the connection. A server keeps a decoder per connection, so
	// they are kept small: at 1 MiB and 64Ki fields (1.5 MiB of slice
	// headers, 1 MiB more of RESP offsets) 10,000 idle connections could
	// keep 35 GB; now at most ~110 KiB each. A bigger request allocates
	// its own, which costs little beside decoding that many bytes.
	maxRetainedScratch = 64 << 10
	maxRetainedFields  = 1 << 10
)

// Limits bounds what a decoder accepts. The zero value means the defaults.
type Limits struct {
	MaxFrame int // max bytes of one request (pipe line / RESP array incl. headers); 0 = 32 MiB
	MaxArgs  int // max fields/elements per request; 0 = 1048576
	MaxBulk  int // max RESP bulk length; 0 = 512 MiB (still bounded by MaxFrame)
}

// DefaultMaxReply is the bound ReplyLimits puts on one reply by default.
// Replies outgrow requests: a RANGE of server.range_limit pairs of large
// values passes DefaultMaxFrame, which only bounds what a server reads.
const DefaultMaxReply = 512 << 20

// ReplyLimits returns the limits of a client decoding replies of up to
// maxBytes bytes (DefaultMaxReply when maxBytes <= 0). Only the size is
// bounded: a reply may have as many fields or elements as fit in it.
func ReplyLimits(maxBytes int) Limits {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxReply
	}
	return Limits{MaxFrame: maxBytes, MaxArgs: maxBytes}
}

func (l Limits) maxFrame() int {
	if l.MaxFrame <= 0 {
		return DefaultMaxFrame
	}
	return l.MaxFrame
}

func (l Limits) maxArgs() int {
	if l.MaxArgs <= 0 {
		return DefaultMaxArgs
	}
	return l.MaxArgs
}

func (l Limits) maxBulk() int {
	if l.MaxBulk <= 0 {
		return DefaultMaxBulk
	}
	return l.MaxBulk
}
