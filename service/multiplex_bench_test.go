package service

import (
	"context"
	"fmt"
	"testing"

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
			engine := NewMemoryEngine(MemoryOptions{})
			h := newHub(engine, 4096)
			ctx := context.Background()
			m := &muxStream{ctx: ctx, limit: 1 << 30, wake: make(chan struct{}, 1), done: make(chan struct{}), subs: map[uint64]*muxSub{}}
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
