package service_test

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/service"
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

// TestArgumentsRangeChecked is issue 9, item 8: numbers a client sends are
// range-checked before they reach an engine, on both engines. since.offset
// of 2^63 or more panicked the memory engine (INTERNAL); now every call
// that takes a position refuses it with INVALID_ARGUMENT naming the
// field, as it does an oversized epoch or an unknown payload_format, and
// the largest valid offset is an ordinary question with an ordinary answer.
func TestArgumentsRangeChecked(t *testing.T) {
	for _, tg := range newEngineTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			ctx := context.Background()
			epoch := tg.epochs["small:f"]
			bad := []struct {
				name   string
				since  *heraldv1.StreamPosition
				format heraldv1.PayloadFormat
				want   string
			}{
				{"offset 2^63", &heraldv1.StreamPosition{Offset: 1 << 63, Epoch: epoch}, 0, "since.offset"},
				{"offset 2^64-1", &heraldv1.StreamPosition{Offset: math.MaxUint64}, 0, "since.offset"},
				{"long epoch", &heraldv1.StreamPosition{Offset: 1, Epoch: strings.Repeat("e", 65)}, 0, "since.epoch"},
				{"unknown format", nil, 7, "payload_format"},
			}
			for _, tc := range bad {
				for _, reverse := range []bool{false, true} {
					_, err := tg.client.History(ctx, &heraldv1.HistoryRequest{Channel: "small:f", Since: tc.since, Limit: 10, Reverse: reverse, PayloadFormat: tc.format})
					if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
						t.Errorf("history %s (reverse %v): %v, want INVALID_ARGUMENT naming %s", tc.name, reverse, err, tc.want)
					}
				}
				stream, err := tg.client.Subscribe(ctx, &heraldv1.SubscribeRequest{Channel: "small:f", Since: tc.since, PayloadFormat: tc.format})
				if err == nil {
					_, err = stream.Recv()
				}
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
					t.Errorf("subscribe %s: %v, want INVALID_ARGUMENT naming %s", tc.name, err, tc.want)
				}
				m, err := tg.client.SubscribeMany(ctx)
				if err != nil {
					t.Fatal(err)
				}
				_ = m.Send(&heraldv1.SubscribeManyRequest{Id: 1, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channel: "small:f", Since: tc.since, PayloadFormat: tc.format}}})
				resp, err := m.Recv()
				if err != nil || resp.GetEnded().GetCode() != "invalid_argument" || !strings.Contains(resp.GetEnded().GetMessage(), tc.want) {
					t.Errorf("subscribe many %s: %v %v, want ended invalid_argument naming %s", tc.name, resp, err, tc.want)
				}
				_ = m.CloseSend()
			}
			// The largest offset: nothing after it, everything before it.
			maxPos := &heraldv1.StreamPosition{Offset: math.MaxInt64, Epoch: epoch}
			if r, err := tg.client.History(ctx, &heraldv1.HistoryRequest{Channel: "small:f", Since: maxPos, Limit: 10}); err != nil || len(r.Publications) != 0 {
				t.Errorf("history after 2^63-1: %v %v, want an empty page", r, err)
			}
			if r, err := tg.client.History(ctx, &heraldv1.HistoryRequest{Channel: "small:f", Since: maxPos, Limit: 10, Reverse: true}); err != nil || len(r.Publications) != 3 || r.Publications[0].Offset != 10 {
				t.Errorf("history before 2^63-1: %v %v, want offsets 10, 9, 8", r, err)
			}
			s := ts(tg).subscribe(t, &heraldv1.SubscribeRequest{Channel: "small:f", Since: maxPos})
			if s.subscribed.Recovered || s.subscribed.Position.Offset != 10 {
				t.Errorf("subscribe since 2^63-1: %v, want recovered false at offset 10", s.subscribed)
			}
		})
	}
}

func ts(tg *engineTarget) *testServer { return &testServer{client: tg.client} }

// TestDefaultHistoryPageWithinMaximum: a History without a limit asks for
// the default page (100), cut to limits.max_history_page when that is
// smaller, instead of being refused for a limit the client never sent.
func TestDefaultHistoryPageWithinMaximum(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.MaxHistoryPage = 10 }))
	for i := 1; i <= 20; i++ {
		ts.publish(t, "room:page", fmt.Sprint(i))
	}
	resp, err := ts.client.History(context.Background(), &heraldv1.HistoryRequest{Channel: "room:page"})
	if err != nil || len(resp.Publications) != 10 {
		t.Fatalf("history without a limit: %v %v, want a page of 10", resp, err)
	}
}

// panicky is an engine whose History panics for one channel.
type panicky struct{ service.Engine }

func (p panicky) History(ctx context.Context, channel string, q service.HistoryQuery) (service.HistoryResult, error) {
	if channel == "room:boom" {
		panic("boom")
	}
	return p.Engine.History(ctx, channel, q)
}

// TestPanicOutsideHandlersIsContained: a panic in the goroutines that serve
// a stream beside its handler (SubscribeMany's subscribe preparation, where
// a since.offset of 2^63 used to panic the memory engine) ends that stream
// with INTERNAL instead of killing the process; others go on.
func TestPanicOutsideHandlersIsContained(t *testing.T) {
	cfg := testConfig(t, nil)
	ts := startServerOn(t, cfg, panicky{service.NewMemoryEngine(service.MemoryOptionsFrom(cfg.Limits))})
	bystander := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:calm"})
	m, err := ts.client.SubscribeMany(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = m.Send(&heraldv1.SubscribeManyRequest{Id: 1, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: &heraldv1.SubscribeRequest{Channel: "room:boom"}}})
	if _, err := m.Recv(); status.Code(err) != codes.Internal {
		t.Fatalf("SubscribeMany of the panicking channel: %v, want INTERNAL", err)
	}
	stream, err := ts.client.Subscribe(context.Background(), &heraldv1.SubscribeRequest{Channel: "room:boom"})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Internal {
		t.Fatalf("Subscribe of the panicking channel: %v, want INTERNAL", err)
	}
	ts.publish(t, "room:calm", "1")
	if p := bystander.next(t); p.Offset != 1 {
		t.Fatalf("bystander got %v", p)
	}
}
