package service_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// liveHeap returns the live heap after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// streams returns the node's open gRPC subscriptions.
func (ts *testServer) streams(t testing.TB) uint32 {
	t.Helper()
	info, err := ts.client.Info(context.Background(), &heraldv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Streams
}

// publishPaced publishes n binary payloads to channel, never more than
// ahead of what got reports received, so that a reader that keeps up
// is never cut off however the goroutines are scheduled.
func (ts *testServer) publishPaced(t testing.TB, channel string, payload []byte, n int, ahead uint64, got func() uint64, failed <-chan error) {
	t.Helper()
	for i := uint64(1); i <= uint64(n); i++ {
		for i > got()+ahead {
			select {
			case err := <-failed:
				t.Fatalf("reader stopped: %v", err)
			default:
				time.Sleep(time.Millisecond)
			}
		}
		if _, err := ts.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: channel, Payload: &heraldv1.PublishRequest_Binary{Binary: payload}}); err != nil {
			t.Fatal(err)
		}
	}
}

// readAll reads n publications with consecutive offsets from 1 on stream,
// storing the count in *got, and sends the outcome on done.
func readAll[T interface{ GetPublication() *heraldv1.Publication }](n int, recv func() (T, error), got interface{ Store(uint64) }, done chan<- error) {
	for want := uint64(1); want <= uint64(n); {
		ev, err := recv()
		if err != nil {
			done <- err
			return
		}
		p := ev.GetPublication()
		if p == nil {
			continue
		}
		if p.Offset != want {
			done <- fmt.Errorf("offset %d, want %d", p.Offset, want)
			return
		}
		got.Store(want)
		want++
	}
	done <- nil
}

// TestStuckSubscriberCutOffByBytes is issue 9, item 11: a Subscribe stream
// whose client never reads is cut off by the bytes it holds
// (limits.subscriber_queue_bytes, 4 MiB by default), well before its 4,096
// events: with 60 KB payloads the server no longer holds ~240 MB for it,
// it ends the stream itself though the client never reads, the client gets
// RESOURCE_EXHAUSTED when it reads at last, and a bystander on the same
// channel gets every publication.
func TestStuckSubscriberCutOffByBytes(t *testing.T) {
	ts := startServer(t, testConfig(t, nil))
	const ch, n = "none:big", 2000 // no history: only queues hold publications
	payload := make([]byte, 60_000)
	baseline := liveHeap()
	stuck := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	bystander := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	var got atomic.Uint64
	done := make(chan error, 1)
	go readAll(n, bystander.stream.Recv, &got, done)
	ts.publishPaced(t, ch, payload, n, 32, got.Load, done)
	if err := <-done; err != nil {
		t.Fatalf("bystander: %v", err)
	}
	held := liveHeap() - baseline
	t.Logf("live heap %+d KiB after %d publications of 60 KB with a stuck subscriber", held>>10, n)
	if held > 40<<20 {
		t.Fatalf("%d MiB held after %d publications of 60 KB with a stuck subscriber, want < 40 MiB", held>>20, n)
	}
	// The server ended the stuck stream by itself: its client never read.
	waitFor(t, func() bool { return ts.streams(t) == 1 })
	received := 0
	for {
		ev, err := stuck.stream.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stuck subscriber ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			break
		}
		if ev.GetPublication() != nil {
			received++
		}
	}
	if received >= n/2 {
		t.Fatalf("stuck subscriber received %d of %d publications before its end", received, n)
	}
}

// TestStuckSubscribeManyCutOffByBytes: the same for a SubscribeMany
// stream, whose shared queue is bounded at 16 times the byte limit.
func TestStuckSubscribeManyCutOffByBytes(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.SubscriberQueueBytes = 256 << 10 }))
	const ch, n = "none:bigmany", 1000 // 60 MB through; the stuck stream may hold 4 MiB
	payload := make([]byte, 60_000)
	baseline := liveHeap()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stuck, err := dialAnother(t, ts).SubscribeMany(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subscribe := &heraldv1.SubscribeManyRequest{Id: 1, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channel: ch}}}
	if err := stuck.Send(subscribe); err != nil {
		t.Fatal(err)
	}
	bystander := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
	waitFor(t, func() bool { return ts.streams(t) == 2 })
	var got atomic.Uint64
	done := make(chan error, 1)
	go readAll(n, bystander.stream.Recv, &got, done)
	ts.publishPaced(t, ch, payload, n, 2, got.Load, done) // its queue takes 4 of them
	if err := <-done; err != nil {
		t.Fatalf("bystander: %v", err)
	}
	if held := liveHeap() - baseline; held > 30<<20 {
		t.Fatalf("%d MiB held after %d publications of 60 KB with a stuck SubscribeMany stream, want < 30 MiB", held>>20, n)
	}
	waitFor(t, func() bool { return ts.streams(t) == 1 })
	for {
		_, err := stuck.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stuck stream ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			break
		}
	}
}
