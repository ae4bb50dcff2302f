package service

import (
	"context"
	"fmt"
	"testing"

	"github.com/herald-io/herald/engine/memory"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// BenchmarkMuxDelivery measures the hub's delivery of one publication to
// N SubscribeMany subscriptions of one stream (the bridge's case: one
// subscription per channel, here all on one channel to count deliveries):
// a lock and an append to the stream's shared queue each, no allocation.
// allocs/op is per publication.
func BenchmarkMuxDelivery(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			engine := memory.New(memory.Options{})
			h := newHub(engine, 4096, 1<<30)
			ctx := context.Background()
			m := &muxStream{ctx: ctx, limit: 1 << 30, limitBytes: 1 << 62, wake: make(chan struct{}, 1), done: make(chan struct{}), subs: map[uint64]*muxSub{}}
			for i := range n {
				ms := &muxSub{id: uint64(i), m: m}
				ms.sub = subscriber{channel: "bench", mux: ms}
				if err := h.add(ctx, &ms.sub); err != nil {
					b.Fatal(err)
				}
			}
			pub := &heraldv1.Publication{Channel: "bench", Epoch: "e"}
			hc := h.shard("bench").chans["bench"]
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				hc.last.Store(nil) // the same publication again takes the fast path
				h.HandlePublication(pub)
				m.mu.Lock()
				m.queue = m.queue[:0]
				m.mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// BenchmarkSubscribeDelivery measures the hub's delivery of one
// publication to N Subscribe streams of one channel, and each stream's
// sender taking it from its queue: a lock and an append per stream, no
// allocation once the queues have grown. allocs/op is per publication.
//
//	go test ./service -run '^$' -bench SubscribeDelivery -benchmem
func BenchmarkSubscribeDelivery(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			engine := memory.New(memory.Options{})
			h := newHub(engine, 4096, 4<<20)
			ctx := context.Background()
			subs := make([]*subscriber, n)
			for i := range subs {
				subs[i] = benchStream(h, "bench")
				if err := h.add(ctx, subs[i]); err != nil {
					b.Fatal(err)
				}
			}
			pub := &heraldv1.Publication{Channel: "bench", Epoch: "e", Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"text":"hello, world","n":42}`)}}
			hc := h.shard("bench").chans["bench"]
			bufs := make([][]event, n)
			never := make(chan struct{})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				hc.last.Store(nil) // the same publication again takes the fast path
				h.HandlePublication(pub)
				for j, s := range subs {
					bufs[j] = benchTake(s, bufs[j], never)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

// benchStream is a Subscribe stream's subscriber, as Server.Subscribe
// makes it.
func benchStream(h *hub, channel string) *subscriber {
	return &subscriber{channel: channel, q: newSubQueue(h.queue, h.queueBytes), done: make(chan struct{})}
}

// benchTake takes what is queued for s, as its sender does.
func benchTake(s *subscriber, buf []event, never chan struct{}) []event {
	return s.q.take(buf, never, never)
}
