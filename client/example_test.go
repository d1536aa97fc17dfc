package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/kvstore/kv/client"
)

func Example() {
	c, err := client.Dial("127.0.0.1:8080", client.Options{Timeout: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	if err := c.Put(ctx, []byte("user:1"), []byte("alice")); err != nil {
		log.Fatal(err)
	}
	v, err := c.Get(ctx, []byte("user:2"))
	switch {
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("no user:2")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("user:2 = %s\n", v)
	}

	// Every pair under "user:", a page at a time.
	start := []byte("user:")
	for {
		page, err := c.Range(ctx, start, []byte("user;"), 0)
		if err != nil {
			log.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, kv := range page {
			fmt.Printf("%s = %s\n", kv.Key, kv.Value)
		}
		start = append(page[len(page)-1].Key, 0)
	}

	// Many requests in one round trip; each has its own result.
	p := c.Pipeline()
	p.Put([]byte("a"), []byte("1"))
	p.Get([]byte("a"))
	res, err := p.Exec(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("a = %s\n", res[1].Value)
}

// A cluster: every node's address; connections are spread over the nodes,
// and a node that is down is passed over. A write that fails may still
// have been applied only when the error says the outcome is unknown.
func ExampleDial_cluster() {
	c, err := client.Dial("127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082", client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	err = c.Put(context.Background(), []byte("k"), []byte("v"))
	switch {
	case errors.Is(err, client.ErrOutcomeUnknown):
		// Applied or not: read it back, or make the write idempotent and
		// send it again.
	case err != nil:
		// Not applied.
		log.Print(err)
	}
}

// A cluster client that sends each key's requests straight to its shard's
// leader; the addresses are where it reads the leader map from, and where
// a request goes when its shard's leader is unknown or unreachable.
func ExampleDialCluster() {
	ctx := context.Background()
	c, err := client.DialCluster(ctx, []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"},
		client.ClusterOptions{Options: client.Options{Timeout: 2 * time.Second}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(ctx, []byte("user:1"), []byte("alice")); err != nil {
		log.Fatal(err) // errors.Is(err, client.ErrOutcomeUnknown) as for Client
	}
	v, err := c.Get(ctx, []byte("user:1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("user:1 = %s\n", v)
}
