package cluster

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/kvstore/kv/store"
)

type regInput struct {
	put   bool
	key   string
	value string
}

type regOutput struct {
	value string // "" = not found
}

// registerModel is a map of registers, checked one key at a time.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		var parts [][]porcupine.Operation
		for _, ops := range byKey {
			parts = append(parts, ops)
		}
		return parts
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(regInput)
		if in.put {
			return true, in.value
		}
		return output.(regOutput).value == state.(string), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in := input.(regInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output.(regOutput).value)
	},
}

// TestLinearizable runs concurrent clients against every node while the
// leader of one shard is stopped part way, and checks the history with
// porcupine. A write that failed with "outcome unknown" may take effect at
// any later time; any other failed write must not have taken effect (the
// protocol's promise); failed reads are dropped.
func TestLinearizable(t *testing.T) {
	tc := newTestCluster(t, clusterOpts{shards: 2})
	keys := []string{"a", "b", "c", "d", "e", "f"}
	base := time.Now()
	now := func() int64 { return int64(time.Since(base)) }

	var (
		mu      sync.Mutex
		history []porcupine.Operation
		unknown int
		failed  = map[string]int{}
	)
	record := func(op porcupine.Operation) {
		mu.Lock()
		history = append(history, op)
		mu.Unlock()
	}
	stopAt := time.Now().Add(600 * time.Millisecond)
	done := make(chan struct{})
	victim := tc.leaderOf(tc.nodes[0], 1)
	nodes := append([]*Cluster(nil), tc.nodes...)

	var wg sync.WaitGroup
	for c := range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[c%3]
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			for seq := 0; ; seq++ {
				select {
				case <-done:
					return
				default:
				}
				if c%3 == victim && time.Now().After(stopAt) {
					return // its node is gone
				}
				key := keys[rng.IntN(len(keys))]
				if rng.IntN(2) == 0 {
					val := fmt.Sprintf("c%d-%d", c, seq)
					call := now()
					err := put(n, key, val)
					ret := now()
					switch {
					case err == nil:
					case errors.Is(err, store.ErrTimeout):
						ret = math.MaxInt64
						mu.Lock()
						unknown++
						mu.Unlock()
					default:
						mu.Lock()
						failed[err.Error()]++
						mu.Unlock()
						continue // definitely not applied
					}
					record(porcupine.Operation{ClientId: c, Input: regInput{put: true, key: key, value: val}, Call: call, Output: regOutput{}, Return: ret})
					continue
				}
				call := now()
				v, err := get(n, key)
				ret := now()
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					mu.Lock()
					failed[err.Error()]++
					mu.Unlock()
					continue
				}
				record(porcupine.Operation{ClientId: c, Input: regInput{key: key}, Call: call, Output: regOutput{value: v}, Return: ret})
			}
		}()
	}
	time.Sleep(time.Until(stopAt))
	tc.stop(victim)
	// Run for at least a second more and until enough operations are in
	// (a loaded machine is slower), within reason.
	minEnd, maxEnd := time.Now().Add(time.Second), time.Now().Add(8*time.Second)
	for {
		mu.Lock()
		n := len(history)
		mu.Unlock()
		if now := time.Now(); now.After(maxEnd) || now.After(minEnd) && n >= 600 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(done)
	wg.Wait()

	t.Logf("%d operations, %d with unknown outcome, failures: %v", len(history), unknown, failed)
	if len(history) < 100 {
		t.Fatalf("only %d operations completed", len(history))
	}
	res := porcupine.CheckOperationsTimeout(registerModel, history, 60*time.Second)
	switch res {
	case porcupine.Illegal:
		t.Fatal("history is not linearizable")
	case porcupine.Unknown:
		t.Log("linearizability check timed out (inconclusive)")
	}
}
