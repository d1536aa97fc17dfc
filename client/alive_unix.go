//go:build unix

package client

import (
	"crypto/tls"
	"net"
	"syscall"
)

// alive probes an idle connection without blocking: a read that would
// block means open and quiet; end of file means the server closed it; data
// means the stream is out of step. Either of the latter makes it unusable.
func alive(nc net.Conn) bool {
	if tc, ok := nc.(*tls.Conn); ok {
		// Any bytes waiting under TLS (a close_notify, say) mean the
		// same as in the clear.
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		_, rerr := syscall.Read(int(fd), buf[:])
		open = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // never wait for readiness
	})
	return err == nil && open
}
