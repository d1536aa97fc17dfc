package record

import (
	"errors"
	"fmt"
	"io"
)

const (
	// flushThreshold bounds the buffer: once this much is pending, Append
	// writes it out without waiting for Flush.
	flushThreshold = 256 << 10
	// directThreshold is the payload size from which Append writes the
	// payload straight to the file instead of copying it into the buffer.
	directThreshold = 64 << 10
)

type fsyncer interface{ Sync() error }

// Writer appends records to a log.
//
// Append copies records into a buffer; Flush hands the buffer to the
// underlying writer; Sync also makes it durable. Appending may write early
// (large payloads, or a full buffer), which is harmless: only Sync promises
// durability, and a reader treats whatever a crash leaves after the last
// synced record as a torn tail.
//
// Errors from the underlying file are sticky: after a failed write or sync
// the file holds an unknown prefix of the records (and after a failed fsync
// the page cache may have dropped them), so every later call returns the
// same error and the log must be abandoned. A Writer is not safe for
// concurrent use.
type Writer struct {
	w    io.Writer
	s    fsyncer
	buf  []byte
	size int64
	err  error
}

// NewWriter returns a Writer appending to f, an empty log. syncer is called
// by Sync; usually it is the same vfs.File as f. A nil syncer means f's own
// Sync method, if it has one.
func NewWriter(f io.Writer, syncer interface{ Sync() error }) *Writer {
	return NewWriterAt(f, syncer, 0)
}

// NewWriterAt returns a Writer appending to an existing log whose valid
// prefix ends at offset (Reader.Offset after recovery). The caller must have
// positioned f at offset, typically by truncating the file there and opening
// it for append: the Writer writes at f's current position and only uses
// offset to report Size.
func NewWriterAt(f io.Writer, syncer interface{ Sync() error }, offset int64) *Writer {
	if syncer == nil {
		syncer, _ = f.(fsyncer)
	}
	return &Writer{w: f, s: syncer, size: offset, buf: make([]byte, 0, 4096)}
}

// Append adds one record holding payload. The payload is copied (or
// written) before Append returns, so the caller may reuse it.
func (w *Writer) Append(payload []byte) error {
	if w.err != nil {
		return w.err
	}
	if len(payload) > MaxPayload {
		return fmt.Errorf("record: append %d-byte payload: %w", len(payload), ErrTooLarge)
	}
	w.buf = appendHeader(w.buf, payload)
	w.size += int64(HeaderLen + len(payload))
	if len(payload) >= directThreshold {
		// Skip the copy: write what is pending (ending with this header),
		// then the payload itself.
		if err := w.Flush(); err != nil {
			return err
		}
		if _, err := w.w.Write(payload); err != nil {
			w.err = fmt.Errorf("record: write %d-byte payload: %w", len(payload), err)
			return w.err
		}
		return nil
	}
	w.buf = append(w.buf, payload...)
	if len(w.buf) >= flushThreshold {
		return w.Flush()
	}
	return nil
}

// Flush writes every buffered record to the underlying writer.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.w.Write(w.buf); err != nil {
		w.err = fmt.Errorf("record: write %d bytes: %w", len(w.buf), err)
		return w.err
	}
	w.buf = w.buf[:0]
	return nil
}

// Sync flushes and then makes everything appended so far durable.
func (w *Writer) Sync() error {
	if err := w.Flush(); err != nil {
		return err
	}
	if w.s == nil {
		w.err = errors.New("record: sync: writer has no syncer")
		return w.err
	}
	if err := w.s.Sync(); err != nil {
		w.err = fmt.Errorf("record: sync: %w", err)
		return w.err
	}
	return nil
}

// Size returns the log's length once everything appended is written: the
// starting offset plus the bytes of every record appended, buffered or not.
func (w *Writer) Size() int64 { return w.size }
