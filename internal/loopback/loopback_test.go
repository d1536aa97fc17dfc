package loopback

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePortIsBindableAndBelowTheEphemeralRange(t *testing.T) {
	for range 20 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < lowest || (ephemeralStart()-lowest >= 1000 && p >= ephemeralStart()) {
			t.Fatalf("port %d outside [%d, %d)", p, lowest, ephemeralStart())
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		ln.Close()
	}
}

// TestFreePortNeverRepeats: ports are bound some time after they are
// handed out, so one process must never get the same port twice (500
// random draws from ~22,000 ports would repeat one almost surely).
func TestFreePortNeverRepeats(t *testing.T) {
	seen := make(map[int]bool)
	for range 500 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
