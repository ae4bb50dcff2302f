package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc/codes"
)

// nodeAddr is the gRPC address of the node the examples talk to: one
// started by TestMain on 127.0.0.1:0; yours is 127.0.0.1:7400 after `herald
// serve`, or host:7400 with client.WithAPIKey and TLS.
var nodeAddr string

func TestMain(m *testing.M) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		log.Fatal(err)
	}
	nodeAddr = n.GRPCAddr.String()
	code := m.Run()
	stopNode(n)
	os.Exit(code)
}

func ExampleClient_Publish() {
	c, err := client.Dial(nodeAddr) // add client.WithAPIKey(key), client.WithCAFile(…) for a remote node
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// JSON goes as text and arrives exactly so. The key makes the publish
	// safe to retry: Publish retries by itself when the node is
	// unreachable, and an application that retries later with the same
	// key publishes nothing twice.
	msg := client.Message{Channel: "orders-example", JSON: []byte(`{"order":42,"status":"paid"}`), IdempotencyKey: "order-42-paid"}
	ack, err := c.Publish(ctx, msg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("offset", ack.Position.Offset, "duplicate", ack.Duplicate)

	ack, err = c.Publish(ctx, msg)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("offset", ack.Position.Offset, "duplicate", ack.Duplicate)
	// Output:
	// offset 1 duplicate false
	// offset 1 duplicate true
}

func ExampleClient_Subscribe() {
	c, err := client.Dial(nodeAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	sub := c.Subscribe(ctx, "prices-example", client.SubscribeOptions{})
	defer sub.Close()
	for {
		ev, err := sub.Recv() // resubscribes by itself when the stream ends
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case ev.Unrecovered():
			fmt.Println("missed publications: reload the state")
		case ev.GetSubscribed() != nil:
			// Subscribed: publish something to see it arrive.
			if _, err := c.Publish(ctx, client.Message{Channel: "prices-example", JSON: []byte(`{"sku":"a-1","price":12345678901234567890.10,"currency":"EUR"}`)}); err != nil {
				log.Fatal(err)
			}
		case ev.GetPublication() != nil:
			p := ev.GetPublication()
			fmt.Printf("%d %s\n", p.Offset, p.GetRawJson())
			return
		}
	}
	// Output:
	// 1 {"sku":"a-1","price":12345678901234567890.10,"currency":"EUR"}
}

func ExampleClient_PublishStream() {
	c, err := client.Dial(nodeAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// At most 64 publications unacknowledged; Publish waits for room.
	stream := c.PublishStream(ctx, client.StreamOptions{Window: 64})
	var results []*client.Result
	for i := 1; i <= 3; i++ {
		r, err := stream.Publish(ctx, client.Message{Channel: "metrics-example", JSON: []byte(fmt.Sprintf(`{"tick":%d}`, i))})
		if err != nil {
			log.Fatal(err)
		}
		results = append(results, r)
	}
	for _, r := range results {
		ack, err := r.Wait(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("acknowledged at offset", ack.Position.Offset)
	}
	if err := stream.Close(ctx); err != nil { // waits for what is unacknowledged
		log.Fatal(err)
	}
	// Output:
	// acknowledged at offset 1
	// acknowledged at offset 2
	// acknowledged at offset 3
}

func ExampleCodeOf() {
	c, err := client.Dial(nodeAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = c.Publish(ctx, client.Message{Channel: "nope:1", JSON: []byte(`1`)})
	switch client.CodeOf(err) {
	case codes.OK:
		fmt.Println("published")
	case codes.InvalidArgument:
		fmt.Println("refused:", err.(*client.Error).Message())
	case codes.Unavailable:
		fmt.Println("no node answered; try again later with the same idempotency key")
	default:
		fmt.Println(err)
	}
	// Output:
	// refused: channel "nope:1": unknown namespace "nope"
}

func ExampleEvent_Unrecovered() {
	c, err := client.Dial(nodeAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Resume after a position saved earlier, from an epoch this node no
	// longer has (its history was lost: a memory engine restarted).
	saved := client.Position{Offset: 7, Epoch: "0ld3p0c4"}
	sub := c.Subscribe(ctx, "inbox-example", client.SubscribeOptions{Since: &saved})
	defer sub.Close()
	ev, err := sub.Recv()
	if err != nil {
		log.Fatal(err)
	}
	if ev.Unrecovered() {
		fmt.Println("cannot replay what came after", saved, "- reload the inbox")
	}
	// Output:
	// cannot replay what came after 7@0ld3p0c4 - reload the inbox
}
