package conf

import (
	"os"
	"testing"
)

// FuzzParse: any bytes give a Config or an error, never a panic, and a
// Config that Parse returns always validates.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"standalone.toml", "node1.toml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[server]\nmax_frame_bytes = \"1KiB\"\nmax_key_bytes = 2048\n"))
	f.Add([]byte("[[cluster.members]]\nid = -1\n[[cluster.members]]\nraft = 5\n"))
	f.Add([]byte("[cluster]\nmembers = [{id = 1}, 2]\njoin = [[\"a:1\"]]\n"))
	f.Add([]byte("server.listen = 1979-05-27T07:32:00Z\nstorage = []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.toml")
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse returned a Config that fails Validate: %v", err)
		}
	})
}
