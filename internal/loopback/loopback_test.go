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
