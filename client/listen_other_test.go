//go:build !linux

package client

import (
	"net"
	"testing"
)

// stalledListener needs Linux's accept queue semantics (see the Linux
// version); elsewhere the tests that use it are skipped.
func stalledListener(t *testing.T) (net.Listener, func()) {
	t.Skip("needs a listener whose handshakes stall, made on Linux only")
	return nil, nil
}
