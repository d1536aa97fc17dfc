package server

import (
	"bufio"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kv/conf"
)

// TestRandomCommandsNeverKillTheServer sends every command name of both
// tables with random argument counts and contents (including empty and
// binary arguments), and checks the server keeps answering. A panic in a
// handler would take the test process down.
func TestRandomCommandsNeverKillTheServer(t *testing.T) {
	addr := startTestServer(t, newSlowStore(), nil)
	s := New(confDefaultServer(), newSlowStore(), Info{}, nil, nil)
	var pipeNames, respNames []string
	for name := range s.pipeTable {
		pipeNames = append(pipeNames, name)
	}
	for name := range s.respTable {
		respNames = append(respNames, name)
	}
	words := []string{"", "0", "1", "-1", "GET", "AUTH", "COUNT", "MATCH", "*", "DOCS", "SETNAME", "ID", "2", "3",
		"x\x00y", "a b", "99999999999999999999", "EX", "NX", "default", "TYPE", "string"}
	rng := rand.New(rand.NewSource(1))
	arg := func() string {
		if rng.Intn(4) == 0 {
			b := make([]byte, rng.Intn(20))
			rng.Read(b)
			return string(b)
		}
		return words[rng.Intn(len(words))]
	}
	for round := 0; round < 2; round++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		var req strings.Builder
		n := 0
		for i := 0; i < 400; i++ {
			if round == 0 { // RESP
				args := []string{respNames[rng.Intn(len(respNames))]}
				for j := rng.Intn(6); j > 0; j-- {
					args = append(args, arg())
				}
				if args[0] == "QUIT" {
					continue
				}
				req.Write(appendRESP(nil, args...))
			} else { // pipe: fields must not hold raw newlines or stray escapes
				f := []string{pipeNames[rng.Intn(len(pipeNames))]}
				for j := rng.Intn(6); j > 0; j-- {
					f = append(f, strings.NewReplacer("\\", "", "\n", "", "\r", "", "|", "").Replace(words[rng.Intn(len(words))]))
				}
				if f[0] == "QUIT" || f[0] == "CLUSTER_JOIN" {
					continue
				}
				req.WriteString(strings.Join(f, "|") + "\n")
			}
			n++
		}
		if round == 0 {
			// DISCARD first: a MULTI left open refuses the PING unrun.
			req.WriteString("*1\r\n$7\r\nDISCARD\r\n*1\r\n$4\r\nPING\r\n")
		} else {
			req.WriteString("PING\n")
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write([]byte(req.String())); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("round %d: connection ended after %q: %v", round, last, err)
			}
			last = line
			if line == "+PONG\r\n" || line == "PONG\n" {
				break
			}
		}
		c.Close()
	}
}

func confDefaultServer() conf.Server { return conf.Default().Server }
