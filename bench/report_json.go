package bench

import (
	"encoding/json"
	"fmt"
	"io"
)

// WriteJSON writes the machine-readable report (schema kvbench/v1). Its
// array fields are arrays, empty ones too, never null: a run that stopped
// during the prefill has an empty timeline, not none.
func (r *Result) WriteJSON(w io.Writer) error {
	out := *r
	out.Run.Addrs = nonNil(out.Run.Addrs)
	out.Ops = nonNil(out.Ops)
	out.Timeline = nonNil(out.Timeline)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(&out)
}

// nonNil returns s, or an empty slice (which JSON encodes as []) for nil.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// ReadJSON reads a report written by WriteJSON, histograms included.
func ReadJSON(rd io.Reader) (*Result, error) {
	var r Result
	if err := json.NewDecoder(rd).Decode(&r); err != nil {
		return nil, fmt.Errorf("read kvbench report: %w", err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("read kvbench report: schema %q, want %q", r.Schema, Schema)
	}
	for i := range r.Ops {
		h, err := decodeHist(r.Ops[i].HDR)
		if err != nil {
			return nil, fmt.Errorf("read kvbench report: op %s: %w", r.Ops[i].Op, err)
		}
		r.Ops[i].Hist = h
	}
	h, err := decodeHist(r.All.HDR)
	if err != nil {
		return nil, fmt.Errorf("read kvbench report: all: %w", err)
	}
	r.All.Hist = h
	return &r, nil
}
