// Package logtest records what code under test logs, for tests that check
// a message was logged (and how often).
package logtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Recorder is a slog handler that keeps every record as its message
// followed by " key=value" per attribute. It is safe for concurrent use.
type Recorder struct {
	mu      *sync.Mutex
	records *[]string
}

// New returns a logger that records into a new Recorder, and the Recorder.
func New() (*slog.Logger, Recorder) {
	r := Recorder{mu: new(sync.Mutex), records: new([]string)}
	return slog.New(r), r
}

// Records returns a copy of what was logged so far, in order.
func (h Recorder) Records() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), *h.records...)
}

// Matching returns the records whose message starts with msg.
func Matching(records []string, msg string) []string {
	var out []string
	for _, r := range records {
		if strings.HasPrefix(r, msg) {
			out = append(out, r)
		}
	}
	return out
}

// Enabled records every level.
func (h Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle records r.
func (h Recorder) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	*h.records = append(*h.records, b.String())
	h.mu.Unlock()
	return nil
}

// WithAttrs drops attrs: tests match on what the call itself logs.
func (h Recorder) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup ignores the group.
func (h Recorder) WithGroup(string) slog.Handler { return h }
