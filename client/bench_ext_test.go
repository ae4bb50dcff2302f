package client_test

import (
	"context"
	"testing"

	"github.com/herald-io/herald/client"
)

// BenchmarkStreamPublish: publications through a Stream (window 256) to an
// in-process memory node over loopback gRPC, each with its generated
// idempotency key; b.N publications, waited for at the end.
func BenchmarkStreamPublish(b *testing.B) {
	c, err := client.Dial(nodeAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	s := c.PublishStream(ctx, client.StreamOptions{})
	msg := client.Message{Channel: "bench-stream", JSON: []byte(`{"n":1,"text":"a benchmark publication"}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Publish(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(ctx); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPublish: one unary Publish at a time, for comparison.
func BenchmarkPublish(b *testing.B) {
	c, err := client.Dial(nodeAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	msg := client.Message{Channel: "bench-unary", JSON: []byte(`{"n":1,"text":"a benchmark publication"}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Publish(ctx, msg); err != nil {
			b.Fatal(err)
		}
	}
}
