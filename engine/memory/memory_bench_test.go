package memory

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// heapInUse returns the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// testClock is a clock for the memory engine that tests move by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Unix(1_700_000_000, 0)} }

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// BenchmarkOneMessageChannels measures the heap the memory engine holds per
// channel that received one small publication, at the default history size
// and at a large one (issue 9, item 9). heapB/channel is the live heap after
// GC, divided by the channels.
//
//	go test ./engine/memory -run '^$' -bench OneMessageChannels -benchtime 1x
func BenchmarkOneMessageChannels(b *testing.B) {
	for _, tc := range []struct{ size, channels int }{{100, 100_000}, {100_000, 200}} {
		b.Run(fmt.Sprintf("history_size=%d/channels=%d", tc.size, tc.channels), func(b *testing.B) {
			ctx := context.Background()
			payload := []byte(`{"n":1}`)
			for range b.N {
				e := newEngine(time.Now, Options{})
				before := heapInUse()
				for i := range tc.channels {
					pub := &heraldv1.Publication{Channel: "bench:" + strconv.Itoa(i), Payload: &heraldv1.Publication_RawJson{RawJson: payload}}
					if _, err := e.Publish(ctx, pub, engine.PublishOptions{HistorySize: tc.size, HistoryTTL: 5 * time.Minute}); err != nil {
						b.Fatal(err)
					}
				}
				held := heapInUse() - before
				b.ReportMetric(float64(held)/float64(tc.channels), "heapB/channel")
				b.ReportMetric(float64(held)/(1<<20), "heapMiB")
				runtime.KeepAlive(e)
			}
		})
	}
}

// BenchmarkIdempotencyKeys measures the heap held by 600,000 unique
// 128-byte idempotency keys (600 channels x 1,000, history off), and what
// is left once the 2-minute dedupe window and one sweep have passed (issue
// 9, item 10).
//
//	go test ./engine/memory -run '^$' -bench IdempotencyKeys -benchtime 1x
func BenchmarkIdempotencyKeys(b *testing.B) {
	ctx := context.Background()
	const channels, perChannel = 600, 1000
	window := 2 * time.Minute
	payload := []byte(`{"n":1}`)
	for range b.N {
		clock := newTestClock()
		e := newEngine(clock.now, Options{})
		before := heapInUse()
		for c := range channels {
			ch := "bench:" + strconv.Itoa(c)
			for k := range perChannel {
				key := fmt.Sprintf("%s-%d-", ch, k)
				key += strings.Repeat("k", 128-len(key))
				pub := &heraldv1.Publication{Channel: ch, Payload: &heraldv1.Publication_RawJson{RawJson: payload}, TimeUnixMs: time.Now().UnixMilli()}
				if _, err := e.Publish(ctx, pub, engine.PublishOptions{IdempotencyKey: key, DedupeWindow: window}); err != nil {
					b.Fatal(err)
				}
			}
		}
		held := heapInUse() - before
		clock.advance(window + 11*time.Second)
		e.sweep()
		after := heapInUse() - before
		b.ReportMetric(float64(held)/(1<<20), "heapMiB")
		b.ReportMetric(float64(held)/float64(channels*perChannel), "heapB/key")
		b.ReportMetric(float64(after)/(1<<20), "heapMiB-after-window")
		runtime.KeepAlive(e)
	}
}

// BenchmarkPublish measures Engine.Publish with history on, from 8
// publishers per CPU to 16 channels, each subscribed on this node (the
// memory side of engine/redis's BenchmarkPublish).
//
//	go test ./engine/memory -run '^$' -bench Publish -benchmem
func BenchmarkPublish(b *testing.B) {
	e := New(Options{})
	_ = e.Start(context.Background(), enginetest.Nop{})
	b.Cleanup(func() { _ = e.Close() })
	ctx := context.Background()
	for i := 0; i < 16; i++ {
		if err := e.Subscribe(ctx, fmt.Sprintf("bench:%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	opts := engine.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	payload := []byte(`{"text":"hello, world","n":42}`)
	var n sync.Mutex
	next := 0
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		n.Lock()
		ch := fmt.Sprintf("bench:%d", next%16)
		next++
		n.Unlock()
		for pb.Next() {
			pub := &heraldv1.Publication{Channel: ch, Payload: &heraldv1.Publication_RawJson{RawJson: payload}, TimeUnixMs: time.Now().UnixMilli()}
			if _, err := e.Publish(ctx, pub, opts); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRetainedHistory measures what a full history costs the
// process: 10,000 channels with 100 publications each of a 64-byte JSON
// payload (the notification workload's steady state at the default
// history_size; at 5,000 publications a second the default 5-minute TTL
// retains more). heapB/pub is the live heap per retained publication,
// objects/pub the heap objects per publication, and gc-ms the time of one
// full collection with the history live (the median of three).
//
//	go test ./engine/memory -run '^$' -bench RetainedHistory -benchtime 1x
func BenchmarkRetainedHistory(b *testing.B) {
	const channels, perChannel = 10_000, 100
	ctx := context.Background()
	payload := []byte(`{"type":"notification","id":1234567,"text":"hello there, 64 bytes"}`)
	opts := engine.PublishOptions{HistorySize: perChannel, HistoryTTL: 5 * time.Minute}
	for range b.N {
		e := newEngine(time.Now, Options{})
		before := heapInUse()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for range perChannel {
			for c := range channels {
				pub := &heraldv1.Publication{Channel: "user:bench-" + strconv.Itoa(c), Payload: &heraldv1.Publication_RawJson{RawJson: bytes.Clone(payload)}, TimeUnixMs: time.Now().UnixMilli()}
				if _, err := e.Publish(ctx, pub, opts); err != nil {
					b.Fatal(err)
				}
			}
		}
		held := heapInUse() - before
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		var gc []time.Duration
		for range 3 {
			start := time.Now()
			runtime.GC()
			gc = append(gc, time.Since(start))
		}
		slices.Sort(gc)
		b.ReportMetric(float64(held)/(channels*perChannel), "heapB/pub")
		b.ReportMetric(float64(m1.HeapObjects-m0.HeapObjects)/(channels*perChannel), "objects/pub")
		b.ReportMetric(float64(gc[1].Microseconds())/1000, "gc-ms")
		runtime.KeepAlive(e)
	}
}

// BenchmarkHistoryRead measures one history read of a full page (100
// publications) of a channel, as a recovering client makes.
//
//	go test ./engine/memory -run '^$' -bench HistoryRead -benchmem
func BenchmarkHistoryRead(b *testing.B) {
	e := New(Options{})
	ctx := context.Background()
	opts := engine.PublishOptions{HistorySize: 100, HistoryTTL: 5 * time.Minute}
	for range 100 {
		pub := &heraldv1.Publication{Channel: "bench:h", Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`{"type":"notification","id":1234567,"text":"hello there, 64 bytes"}`)}, TimeUnixMs: time.Now().UnixMilli()}
		if _, err := e.Publish(ctx, pub, opts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, err := e.History(ctx, "bench:h", engine.HistoryQuery{Limit: 100})
		if err != nil || len(res.Publications) != 100 {
			b.Fatal(err, len(res.Publications))
		}
	}
}

// BenchmarkChannels measures Channels among 100,000 channels with state: a
// page of 500 after a name in the middle (what the admin console asks for
// every 2 s, with a page token) and the whole list.
//
//	go test ./engine/memory -run '^$' -bench '^BenchmarkChannels$' -benchmem
func BenchmarkChannels(b *testing.B) {
	ctx := context.Background()
	e := newEngine(time.Now, Options{})
	for i := range 100_000 {
		pub := &heraldv1.Publication{Channel: fmt.Sprintf("bench:%06d", i), Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`1`)}}
		if _, err := e.Publish(ctx, pub, engine.PublishOptions{HistorySize: 1, HistoryTTL: time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		q    engine.ChannelsQuery
	}{
		{"page=500", engine.ChannelsQuery{After: "bench:050000", Limit: 500}},
		{"all", engine.ChannelsQuery{}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				states, _, err := e.Channels(ctx, tc.q)
				if err != nil || len(states) == 0 {
					b.Fatal(len(states), err)
				}
			}
		})
	}
}
