package inproc_test

import (
	"context"
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/inproc"
	"google.golang.org/grpc/metadata"
)

// fixed answers every Publish with one response, doing nothing else: what
// BenchmarkUnary measures is the channel's own cost per call.
type fixed struct {
	heraldv1.UnimplementedHeraldServiceServer
	resp *heraldv1.PublishResponse
}

func (f *fixed) Publish(context.Context, *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	return f.resp, nil
}

// BenchmarkUnary is one unary call as the REST gateway makes it: from a
// request's cancelable context, with outgoing metadata and the client's
// own (an API key), a 64-byte JSON payload. The answer goes through
// reflection here (node's link has a fast path for it, Options.HandOver).
// Before incoming stopped copying the metadata twice: 28 allocs, 2168 B a
// call; after: 25, 1752 B (time within the machine's noise, ~4.5 µs).
func BenchmarkUnary(b *testing.B) {
	c := inproc.New(inproc.Options{})
	heraldv1.RegisterHeraldServiceServer(c, &fixed{resp: &heraldv1.PublishResponse{Position: &heraldv1.StreamPosition{Offset: 1, Epoch: "e"}}})
	cl := heraldv1.NewHeraldServiceClient(c.Client(metadata.Pairs("authorization", "Bearer key")))
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	data := []byte(`{"t":1234567890123456789,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)
	b.ReportAllocs()
	for b.Loop() {
		{
			ctx := metadata.NewOutgoingContext(parent, metadata.Pairs("x-forwarded-for", "127.0.0.1"))
			req := &heraldv1.PublishRequest{Channel: "user:bench-1", Payload: &heraldv1.PublishRequest_RawJson{RawJson: data}}
			if _, err := cl.Publish(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	}
}
