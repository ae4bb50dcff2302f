package service_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine/memory"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/service"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/metadata"
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
	// No history: only queues hold publications. 1,000 of 60 KB: without
	// the byte bound the stuck queue would hold all 60 MB (4,096 events
	// allowed), well past the 40 MiB checked below; 2,000 took more than
	// the streams' 30 s under -race on a loaded machine.
	const ch, n = "none:big", 1000
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
	held := liveHeap() - baseline
	t.Logf("live heap %+d KiB after %d publications of 60 KB with a stuck SubscribeMany stream", held>>10, n)
	if held > 30<<20 {
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
	ts := startServerOn(t, cfg, panicky{memory.New(memory.OptionsFrom(cfg.Limits))})
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

// metricValue returns the value of a metric of the default registry (0 if
// absent) whose labels include labels.
func metricValue(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// TestOneMessageChannelsAreSmall is issue 9, item 9: with history_size
// 100,000, a channel that received one publication held the whole ring
// (3.2 MB: 2,200 such channels made a 7 GB heap); it holds one entry.
func TestOneMessageChannelsAreSmall(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) {
		c.Namespaces = append(c.Namespaces, config.Namespace{Name: "huge", HistorySize: 100_000, HistoryTTL: config.Duration(time.Hour)})
	}))
	const channels = 100
	before := liveHeap()
	for i := range channels {
		ts.publish(t, fmt.Sprintf("huge:%d", i), "1")
	}
	per := (liveHeap() - before) / channels
	t.Logf("%d heap bytes per one-message channel with history_size 100000", per)
	if per > 16<<10 {
		t.Fatalf("%d heap bytes per one-message channel, want under 16 KiB", per)
	}
}

// TestChannelCap is issue 9, item 9: a publish that would start state for
// one channel more than limits.max_channels_per_node is refused with
// RESOURCE_EXHAUSTED naming the option, and counted; channels already
// held go on, and reads or subscriptions of new channels are not refused
// (they create no state).
func TestChannelCap(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) { c.Limits.MaxChannelsPerNode = 3 }))
	ctx := context.Background()
	refusals := metricValue(t, "herald_limit_refusals_total", "limit", "limits.max_channels_per_node")
	held := metricValue(t, "herald_engine_channels")
	for i := range 3 {
		ts.publish(t, fmt.Sprintf("room:cap%d", i), "1")
	}
	if got := metricValue(t, "herald_engine_channels") - held; got != 3 {
		t.Fatalf("herald_engine_channels rose by %v, want 3", got)
	}
	_, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: "room:cap3", Payload: jsonPayload("1")})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "limits.max_channels_per_node") {
		t.Fatalf("publish to a 4th channel: %v, want RESOURCE_EXHAUSTED naming limits.max_channels_per_node", err)
	}
	if got := metricValue(t, "herald_limit_refusals_total", "limit", "limits.max_channels_per_node") - refusals; got != 1 {
		t.Fatalf("refusals counted: %v, want 1", got)
	}
	ts.publish(t, "room:cap0", "2") // a channel held goes on
	if _, err := ts.client.History(ctx, &heraldv1.HistoryRequest{Channel: "room:cap4"}); err != nil {
		t.Fatalf("history of a new channel at the cap: %v", err)
	}
	s := ts.subscribe(t, &heraldv1.SubscribeRequest{Channel: "room:cap5"})
	s.cancel()
	if got := metricValue(t, "herald_engine_channels") - held; got != 3 {
		t.Fatalf("herald_engine_channels rose by %v after reads, want 3", got)
	}
}

// TestIdempotencyKeyCaps is issue 9, item 10: idempotency keys are capped
// per channel (limits.max_idempotency_keys_per_channel) and per node
// (limits.max_idempotency_keys). A publish with one key more goes on and
// the oldest key (of its channel, or the node's oldest of that channel at
// the node's cap) is forgotten before its window ends, counted in
// herald_idempotency_keys_evicted_total by the limit that evicted it (the
// Go client keys every publish, so refusing would stop every publisher at
// the cap); retries of keys still held are answered as duplicates, a
// forgotten key publishes again.
func TestIdempotencyKeyCaps(t *testing.T) {
	ts := startServer(t, testConfig(t, func(c *config.Config) {
		c.Limits.MaxIdempotencyKeysPerChannel = 3
		c.Limits.MaxIdempotencyKeys = 5
	}))
	ctx := context.Background()
	keys := metricValue(t, "herald_idempotency_keys")
	perChannel := metricValue(t, "herald_idempotency_keys_evicted_total", "limit", "limits.max_idempotency_keys_per_channel")
	perNode := metricValue(t, "herald_idempotency_keys_evicted_total", "limit", "limits.max_idempotency_keys")
	publish := func(ch, key string) *heraldv1.PublishResponse {
		t.Helper()
		resp, err := ts.client.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload("1"), IdempotencyKey: key})
		if err != nil {
			t.Fatalf("%s key %q: %v; over a key cap a publish goes on (the oldest key is forgotten)", ch, key, err)
		}
		return resp
	}
	// Over the channel's cap (3), room:k1's oldest key (a) is forgotten.
	for _, k := range []string{"a", "b", "c", "d"} {
		publish("room:k1", k)
	}
	if got := metricValue(t, "herald_idempotency_keys_evicted_total", "limit", "limits.max_idempotency_keys_per_channel") - perChannel; got != 1 {
		t.Fatalf("per-channel evictions rose by %v, want 1", got)
	}
	// Over the node's cap (5): room:k2's own oldest key goes.
	publish("room:k2", "a")
	publish("room:k2", "b") // 5 keys: b, c, d of k1; a, b of k2
	publish("room:k2", "c") // evicts k2's a
	// A channel holding no key at the node's cap publishes, unremembered.
	publish("room:k3", "a")
	if got := metricValue(t, "herald_idempotency_keys_evicted_total", "limit", "limits.max_idempotency_keys") - perNode; got != 2 {
		t.Fatalf("node-cap evictions rose by %v, want 2", got)
	}
	if got := metricValue(t, "herald_idempotency_keys") - keys; got != 5 {
		t.Fatalf("herald_idempotency_keys rose by %v, want 5 (the node's cap)", got)
	}
	for _, c := range []struct {
		ch, key string
		dup     bool
		offset  uint64
	}{
		{"room:k1", "b", true, 2}, {"room:k1", "d", true, 4}, {"room:k2", "c", true, 3},
		{"room:k1", "a", false, 5}, // forgotten: published again
		{"room:k3", "a", false, 2}, // never remembered
	} {
		if resp := publish(c.ch, c.key); resp.Duplicate != c.dup || resp.Position.Offset != c.offset {
			t.Fatalf("retry %s %s: duplicate %v offset %d, want %v %d", c.ch, c.key, resp.Duplicate, resp.Position.Offset, c.dup, c.offset)
		}
	}
}

// readEverything makes every kind of read of n never-used channels, with
// a few concurrent callers: History (forward and reverse, with and
// without since), Presence, PresenceStats, Channels, and Subscribe and
// SubscribeMany (whose hub reads the channel's position) for some.
func readEverything(t *testing.T, client heraldv1.HeraldServiceClient, n int) {
	t.Helper()
	ctx := context.Background()
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := w; i < n; i += 8 {
				ch := fmt.Sprintf("room:never-%d", i)
				since := &heraldv1.StreamPosition{Offset: uint64(i % 3)}
				if _, err := client.History(ctx, &heraldv1.HistoryRequest{Channel: ch, Since: since, Reverse: i%2 == 0}); err != nil {
					errs <- err
					return
				}
				if i%50 == 0 {
					if _, err := client.Presence(ctx, &heraldv1.PresenceRequest{Channel: ch}); err != nil {
						errs <- err
						return
					}
					if _, err := client.PresenceStats(ctx, &heraldv1.PresenceStatsRequest{Channel: ch}); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		ch := fmt.Sprintf("room:never-sub-%d", i)
		s := (&testServer{client: client}).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, Since: &heraldv1.StreamPosition{Offset: 0}})
		s.cancel()
	}
	m := (&testServer{client: client}).subscribeMany(t, nil)
	for i := range 100 {
		m.subscribe(t, uint64(i+1), &heraldv1.SubscribeRequest{Channel: fmt.Sprintf("room:never-many-%d", i)})
	}
	st := newMuxState()
	for len(st.subscribed) < 100 {
		st.apply(t, m.recv(t))
	}
	if _, err := client.Channels(ctx, &heraldv1.ChannelsRequest{}); err != nil {
		t.Fatal(err)
	}
}

// TestReadsCreateNoState is issue 9, item 12 (and item 9 for the memory
// engine): reading never-used channels writes nothing. On the Redis
// engine, 20,000 History calls wrote 20,000 keys living 24 h; now DBSIZE
// does not move. On the memory engine they created 20,000 channels' state
// for 10 minutes; now none.
func TestReadsCreateNoState(t *testing.T) {
	const n = 20_000
	t.Run("memory", func(t *testing.T) {
		ts := startServer(t, testConfig(t, nil))
		held := metricValue(t, "herald_engine_channels")
		readEverything(t, ts.client, n)
		if got := metricValue(t, "herald_engine_channels") - held; got != 0 {
			t.Fatalf("herald_engine_channels rose by %v after reads only", got)
		}
		resp, err := ts.client.Channels(context.Background(), &heraldv1.ChannelsRequest{Pattern: "room:never-*"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ci := range resp.Channels {
			if ci.Streams == 0 { // a live SubscribeMany subscription is listed by the hub
				t.Fatalf("Channels lists %v after reads only", ci)
			}
		}
	})
	t.Run("redis", func(t *testing.T) {
		c := startRedisCluster(t, 1)
		rc := redis.NewClient(&redis.Options{Addr: c.redis.Addr})
		defer rc.Close()
		ctx := context.Background()
		// The node sets its era key at start, in the background.
		waitFor(t, func() bool { return rc.Exists(ctx, c.prefix+":era").Val() == 1 })
		before, err := rc.DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		readEverything(t, c.clients[0], n)
		after, err := rc.DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			keys, _, _ := rc.Scan(ctx, 0, "*", 10).Result()
			t.Fatalf("DBSIZE %d before %d History reads of unused channels, %d after (some keys: %v)", before, n, after, keys)
		}
	})
}

// TestSubscribeBeforeFirstPublish: a channel without state reads as offset
// 0 of an empty epoch, and its first publish starts another epoch; a
// Subscribe stream or SubscribeMany subscription opened before it still
// gets that first publication and the following ones, and a position read
// before it resumes (recovered) into the new epoch. On both engines.
func TestSubscribeBeforeFirstPublish(t *testing.T) {
	for _, tg := range newEngineTargets(t) {
		t.Run(tg.name, func(t *testing.T) {
			srv := ts(tg)
			const ch = "room:first"
			s := srv.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch})
			empty := s.subscribed.Position
			if empty.Offset != 0 || empty.Epoch == "" || s.subscribed.Recovered {
				t.Fatalf("subscribed %v, want offset 0 of an empty epoch", s.subscribed)
			}
			m := srv.subscribeMany(t, nil)
			m.subscribe(t, 1, &heraldv1.SubscribeRequest{Channel: ch})
			st := newMuxState()
			for len(st.subscribed) < 1 {
				st.apply(t, m.recv(t))
			}
			var epoch string
			for i := 1; i <= 3; i++ {
				pos := srv.publish(t, ch, fmt.Sprint(i))
				if epoch = pos.Epoch; epoch == empty.Epoch {
					t.Fatalf("first publish kept the empty epoch %q", epoch)
				}
			}
			for want := uint64(1); want <= 3; want++ {
				if p := s.next(t); p.Offset != want || p.Epoch != epoch {
					t.Fatalf("Subscribe stream got %d/%s, want %d/%s", p.Offset, p.Epoch, want, epoch)
				}
				resp := m.recv(t)
				if p := resp.GetEvent().GetPublication(); p.GetOffset() != want || p.GetEpoch() != epoch {
					t.Fatalf("SubscribeMany got %v, want offset %d of %s", resp, want, epoch)
				}
			}
			// Resuming from the position read before the first publish.
			r := srv.subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, Since: empty})
			if !r.subscribed.Recovered || r.subscribed.Position.Offset != 3 || r.subscribed.Position.Epoch != epoch {
				t.Fatalf("resume from %v: %v, want recovered at 3 of %s", empty, r.subscribed, epoch)
			}
			for want := uint64(1); want <= 3; want++ {
				if p := r.next(t); p.Offset != want {
					t.Fatalf("replay got %d, want %d", p.Offset, want)
				}
			}
			// Live publications continue every stream.
			srv.publish(t, ch, "4")
			if s.next(t).Offset != 4 || r.next(t).Offset != 4 || m.recv(t).GetEvent().GetPublication().GetOffset() != 4 {
				t.Fatal("offset 4 missing")
			}
		})
	}
}

// panickyPublish is an engine whose Publish panics for one channel.
type panickyPublish struct{ service.Engine }

func (p panickyPublish) Publish(ctx context.Context, pub *heraldv1.Publication, opts service.PublishOptions) (service.PublishResult, error) {
	if pub.Channel == "room:boom" {
		panic("boom")
	}
	return p.Engine.Publish(ctx, pub, opts)
}

// TestUnaryInterceptor: the core's one unary interceptor checks the API
// key before anything else runs (a call without it never reaches the
// caller's inner interceptor), runs inner around the handler, and turns a
// panic in the handler into INTERNAL for that call only.
func TestUnaryInterceptor(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		c.APIKeys = []config.APIKey{{Name: "backend", Key: "backend-key-0123456789"}}
	})
	engine := panickyPublish{memory.New(memory.OptionsFrom(cfg.Limits))}
	core := service.New(cfg, engine, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := core.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var inner atomic.Int64
	gs := service.NewGRPCServer(cfg, core, health.NewServer(), func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		inner.Add(1)
		return h(ctx, req)
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { core.Close(); gs.Stop(); _ = engine.Close() })
	dial := func(opts ...grpc.DialOption) heraldv1.HeraldServiceClient {
		conn, err := grpc.NewClient(lis.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return heraldv1.NewHeraldServiceClient(conn)
	}
	anon := dial()
	keyed := dial(grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer backend-key-0123456789"), method, req, reply, cc, opts...)
	}))
	req := func(ch string) *heraldv1.PublishRequest {
		return &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(`{"n":1}`)}
	}
	if _, err := anon.Publish(ctx, req("room:calm")); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("publish without a key: %v, want UNAUTHENTICATED", err)
	}
	if n := inner.Load(); n != 0 {
		t.Fatalf("inner ran %d times for an unauthenticated call", n)
	}
	if _, err := keyed.Publish(ctx, req("room:boom")); status.Code(err) != codes.Internal {
		t.Fatalf("publish to the panicking channel: %v, want INTERNAL", err)
	}
	res, err := keyed.Publish(ctx, req("room:calm"))
	if err != nil || res.GetPosition().GetOffset() != 1 {
		t.Fatalf("publish after the panic: %v %v", res, err)
	}
	if n := inner.Load(); n != 2 {
		t.Fatalf("inner ran %d times, want 2", n)
	}
}

// TestPublicationsCountedByNamespace: herald_publications_total counts
// each accepted publication under its namespace, one per publish, for the
// configured namespaces (whose counters the server holds) and any other.
func TestPublicationsCountedByNamespace(t *testing.T) {
	// Namespaces of this test's own: the counters are process-wide.
	ts := startServer(t, testConfig(t, func(c *config.Config) {
		c.Namespaces = append(c.Namespaces, config.Namespace{Name: "counted"}, config.Namespace{Name: "tallied"})
	}))
	counted, tallied := metricValue(t, "herald_publications_total", "namespace", "counted"), metricValue(t, "herald_publications_total", "namespace", "tallied")
	ts.publish(t, "counted:a", "1")
	ts.publish(t, "counted:b", "2")
	ts.publish(t, "tallied:a", "3")
	if d := metricValue(t, "herald_publications_total", "namespace", "counted") - counted; d != 2 {
		t.Errorf("counted: %v publications, want 2", d)
	}
	if d := metricValue(t, "herald_publications_total", "namespace", "tallied") - tallied; d != 1 {
		t.Errorf("tallied: %v publications, want 1", d)
	}
}
