package server

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/panjf2000/gnet/v2"
)

// dumpState describes every connection, for failing tests.
func (s *Server) dumpState() string {
	s.loopsMu.Lock()
	loops := make([]*loop, 0)
	for _, l := range s.loops {
		loops = append(loops, l)
	}
	s.loopsMu.Unlock()
	var mu sync.Mutex
	var b strings.Builder
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		l := l
		l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			l.mu.Lock()
			fmt.Fprintf(&b, "loop mail=%d scheduled=%v\n", len(l.mail), l.scheduled)
			l.mu.Unlock()
			for cs := range l.conns {
				front := "-"
				if cs.q.len() > 0 {
					front = fmt.Sprint(cs.q.front().done, cs.q.front().class)
				}
				fmt.Fprintf(&b, "conn %d q=%d front=%s reads=%d writes=%d parked=%v closing=%v in=%d out=%d need=%d\n",
					cs.id, cs.q.len(), front, cs.reads, cs.writes, cs.parked, cs.closing, cs.c.InboundBuffered(), cs.c.OutboundBuffered(), cs.need())
			}
			return nil
		}))
	}
	wg.Wait()
	return b.String()
}
