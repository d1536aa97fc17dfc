package client

import (
	"net"
	"os"
	"syscall"
	"testing"
)

// stalledListener returns a loopback listener whose accept queue is full:
// connections to it hang in the handshake until the dialer gives up, as
// behind a firewall that drops packets. It listens with a backlog of 0,
// which Linux takes as one queued connection, and has the caller queue
// that one (fill) when it is ready: Linux drops the handshakes that find
// the queue full.
func stalledListener(t *testing.T) (ln net.Listener, fill func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	defer f.Close() // FileListener holds its own copy
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	ln, err = net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fill = func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	return ln, fill
}
