// Package loopback finds free loopback ports for tests that must hand a
// port number to another process or library before it is bound (a
// kvserver child, dragonboat), where listening on ":0" is not an option.
//
// The ports come from below the kernel's ephemeral range: a port from that
// range (which ":0" hands out) can be taken as the source port of any
// outgoing connection on the machine between the check and the bind, and
// the server then fails with "address already in use".
package loopback

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowest port handed out.
const lowest = 10000

// handedOut holds every port FreePort returned in this process: a port is
// only bound some time after it is handed out (a child process starting,
// a cluster's addresses chosen before any node binds), so the check that
// nothing listens on it cannot see the earlier caller's claim. Ports are a
// process-wide resource, hence the package-level set.
var handedOut sync.Map

// FreePort returns a loopback port nothing listened on a moment ago and
// that it has not returned before in this process.
func FreePort() (int, error) {
	hi := ephemeralStart()
	if hi-lowest < 1000 {
		hi = lowest + 20000 // no room below the range: take the risk
	}
	for range 1000 {
		p := lowest + rand.IntN(hi-lowest)
		if _, taken := handedOut.Load(p); taken {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			if err := ln.Close(); err != nil {
				return 0, err
			}
			if _, taken := handedOut.LoadOrStore(p, struct{}{}); taken {
				continue // another goroutine got it meanwhile
			}
			return p, nil
		}
	}
	return 0, errors.New("loopback: no free port below the ephemeral range")
}

// ephemeralStart is the first port of the kernel's ephemeral range
// (Linux's default when it cannot be read).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}
