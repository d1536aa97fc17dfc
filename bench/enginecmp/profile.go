package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/google/pprof/profile"
)

// profiler records CPU profiles of our engine's timed phases only, one per
// phase, and merges them per workload, so a profile shows where our engine
// spends a workload's time and nothing of pebble or of the set-up.
type profiler struct {
	prefix string
	order  []string
	raw    map[string][][]byte // workload id -> one profile per run
	err    error
}

func newProfiler(prefix string) *profiler {
	return &profiler{prefix: prefix, raw: make(map[string][][]byte)}
}

// start begins profiling when k is our engine and returns the function that
// ends it. A nil profiler profiles nothing.
func (p *profiler) start(k engineKind, w workload) (stop func()) {
	if p == nil || k.name != ourKind.name {
		return func() {}
	}
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		p.err = fmt.Errorf("start CPU profile: %w", err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if _, ok := p.raw[w.id]; !ok {
			p.order = append(p.order, w.id)
		}
		p.raw[w.id] = append(p.raw[w.id], buf.Bytes())
	}
}

// write merges each workload's profiles into prefix.<workload>.pprof and
// returns the file names.
func (p *profiler) write() ([]string, error) {
	if p == nil {
		return nil, nil
	}
	if p.err != nil {
		return nil, p.err
	}
	var names []string
	for _, id := range p.order {
		var profs []*profile.Profile
		for i, raw := range p.raw[id] {
			pr, err := profile.ParseData(raw)
			if err != nil {
				return names, fmt.Errorf("parse CPU profile %s run %d: %w", id, i+1, err)
			}
			profs = append(profs, pr)
		}
		merged, err := profile.Merge(profs)
		if err != nil {
			return names, fmt.Errorf("merge CPU profiles of %s: %w", id, err)
		}
		name := fmt.Sprintf("%s.%s.pprof", p.prefix, id)
		f, err := os.Create(name)
		if err != nil {
			return names, err
		}
		err = merged.Write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return names, fmt.Errorf("write %s: %w", name, err)
		}
		names = append(names, name)
	}
	return names, nil
}
