package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/kvstore/kv/store"
)

// rollingStore is a cluster node as the stop and start paths see it.
type rollingStore struct {
	store.Store
	transferred chan time.Duration // TransferLeadership's deadline, from the call
	caughtUp    chan struct{}      // WaitCaughtUp returns when closed
	waitErr     error
}

func (s *rollingStore) TransferLeadership(ctx context.Context) error {
	d, _ := ctx.Deadline()
	s.transferred <- time.Until(d)
	return errors.New("no peer")
}

func (s *rollingStore) WaitCaughtUp(ctx context.Context) error {
	select {
	case <-s.caughtUp:
		return s.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestHandOffLeadershipOnStop: a graceful stop asks a cluster node to hand
// its shards over, bounded, and goes on when that fails.
func TestHandOffLeadershipOnStop(t *testing.T) {
	s := &rollingStore{transferred: make(chan time.Duration, 1)}
	handOffLeadership(s, slog.New(slog.DiscardHandler))
	select {
	case left := <-s.transferred:
		if left <= 0 || left > handOffTimeout {
			t.Fatalf("hand-off bounded by %v, want (0, %v]", left, handOffTimeout)
		}
	default:
		t.Fatal("TransferLeadership was not called")
	}
}

// TestWaitCaughtUpBeforeServing: the client port waits for the node to
// catch up, serves anyway once the bound passes, and a signal meanwhile
// stops the node.
func TestWaitCaughtUpBeforeServing(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	s := &rollingStore{caughtUp: make(chan struct{})}
	sigs := make(chan os.Signal, 1)
	done := make(chan bool, 1)
	go func() {
		_, stopped := waitCaughtUp(s, sigs, time.Minute, log)
		done <- stopped
	}()
	select {
	case <-done:
		t.Fatal("returned before the node caught up")
	case <-time.After(50 * time.Millisecond):
	}
	close(s.caughtUp)
	if stopped := <-done; stopped {
		t.Fatal("caught up, yet reported a stop")
	}

	// Never catches up: the bound ends the wait.
	s = &rollingStore{caughtUp: make(chan struct{})}
	if _, stopped := waitCaughtUp(s, sigs, 20*time.Millisecond, log); stopped {
		t.Fatal("timed out, yet reported a stop")
	}

	// A SIGTERM during the wait.
	sigs <- syscall.SIGTERM
	if sig, stopped := waitCaughtUp(s, sigs, time.Minute, log); !stopped || sig != syscall.SIGTERM {
		t.Fatalf("signal during the wait: %v, %v", sig, stopped)
	}
}
