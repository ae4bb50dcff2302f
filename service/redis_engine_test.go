package service

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// SetRedisTimingForTest shortens the Redis engine's presence timing for
// engines created afterwards; the returned function restores it.
func SetRedisTimingForTest(presenceTTL, refresh time.Duration) (restore func()) {
	old := redisDefaults
	redisDefaults.PresenceTTL = presenceTTL
	redisDefaults.PresenceRefresh = refresh
	return func() { redisDefaults = old }
}

// recorder is a Handler that records what it receives.
type recorder struct {
	mu     sync.Mutex
	pubs   []*heraldv1.Publication
	joins  []*heraldv1.PresenceEvent
	leaves []*heraldv1.PresenceEvent
	cmds   []*heraldv1.BridgeSessionResponse
}

func (r *recorder) HandlePublication(p *heraldv1.Publication) {
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
}

func (r *recorder) HandlePresence(ev *heraldv1.PresenceEvent, join bool) {
	r.mu.Lock()
	if join {
		r.joins = append(r.joins, ev)
	} else {
		r.leaves = append(r.leaves, ev)
	}
	r.mu.Unlock()
}

func (r *recorder) HandleCommand(c *heraldv1.BridgeSessionResponse) {
	r.mu.Lock()
	r.cmds = append(r.cmds, c)
	r.mu.Unlock()
}

func (r *recorder) HandleReset(string) {}

func (r *recorder) count(f func(*recorder) int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r)
}

// waitFor polls cond until it holds or a few seconds passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var testPrefixes sync.Map

// testRedisEngine returns a started Redis engine with a prefix of its own.
func testRedisEngine(t testing.TB, addr string, h Handler) Engine {
	t.Helper()
	prefix := fmt.Sprintf("t%d", time.Now().UnixNano())
	for _, loaded := testPrefixes.LoadOrStore(prefix, true); loaded; _, loaded = testPrefixes.LoadOrStore(prefix, true) {
		prefix += "x"
	}
	e, err := NewRedisEngine(config.Redis{Addrs: []string{addr}, Prefix: prefix}, RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

func pubOf(channel, text string) *heraldv1.Publication {
	return &heraldv1.Publication{Channel: channel, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(strconv.Quote(text))}}
}

// TestEngineContract runs the same assertions against every engine.
func TestEngineContract(t *testing.T) {
	engines := map[string]func(t *testing.T, h Handler) Engine{
		"memory": func(t *testing.T, h Handler) Engine {
			e := NewMemoryEngine(MemoryOptions{})
			if err := e.Start(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Close() })
			return e
		},
		"redis": func(t *testing.T, h Handler) Engine {
			return testRedisEngine(t, redistest.Start(t).Addr, h)
		},
	}
	for name, newEngine := range engines {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			rec := &recorder{}
			e := newEngine(t, rec)
			if e.Name() != name {
				t.Fatalf("Name() = %q", e.Name())
			}
			if err := e.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			const ch = "chat:contract"
			opts := PublishOptions{HistorySize: 3, HistoryTTL: time.Minute, DedupeWindow: time.Minute}

			// A channel without state reads as offset 0 of its empty
			// epoch, stable from one read to the next.
			before, err := e.History(ctx, ch, HistoryQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if again, err := e.History(ctx, ch, HistoryQuery{}); err != nil || again.Position.Epoch != before.Position.Epoch {
				t.Fatalf("empty channel position %v, then %v %v", before.Position, again.Position, err)
			}
			if before.Position.Offset != 0 || before.Position.Epoch == "" {
				t.Fatalf("empty channel position = %v", before.Position)
			}
			if err := e.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
			var epoch string
			for i := 1; i <= 5; i++ {
				p := pubOf(ch, fmt.Sprint(i))
				res, err := e.Publish(ctx, p, opts)
				if err != nil {
					t.Fatal(err)
				}
				if res.Position.Offset != uint64(i) || p.Offset != uint64(i) || res.Duplicate {
					t.Fatalf("publish %d: %v dup=%v pub.Offset=%d", i, res.Position, res.Duplicate, p.Offset)
				}
				if i > 1 && res.Position.Epoch != epoch || p.Epoch != res.Position.Epoch || epoch == before.Position.Epoch {
					t.Fatalf("publish %d: epoch %q, first %q, empty %q", i, res.Position.Epoch, epoch, before.Position.Epoch)
				}
				epoch = res.Position.Epoch
			}
			// The position read before the first publish still resumes:
			// its empty epoch is the one in which the state began.
			if res, err := e.History(ctx, ch, HistoryQuery{Since: before.Position, Limit: 10}); err != nil || len(res.Publications) != 3 || res.Publications[0].Offset != 3 { // history keeps 3
				t.Fatalf("history since the empty position: %+v, %v", res, err)
			}
			waitFor(t, "5 deliveries", func() bool { return rec.count(func(r *recorder) int { return len(r.pubs) }) == 5 })
			for i, p := range rec.pubs {
				if p.Offset != uint64(i+1) || p.Epoch != epoch || p.Channel != ch || string(p.GetRawJson()) != strconv.Quote(fmt.Sprint(i+1)) {
					t.Fatalf("delivery %d = %v", i, p)
				}
			}

			// Idempotency: same position, duplicate, nothing delivered.
			r1, err := e.Publish(ctx, pubOf(ch, "once"), PublishOptions{HistorySize: 3, HistoryTTL: time.Minute, IdempotencyKey: "k1", DedupeWindow: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			r2, err := e.Publish(ctx, pubOf(ch, "once"), PublishOptions{HistorySize: 3, HistoryTTL: time.Minute, IdempotencyKey: "k1", DedupeWindow: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if !r2.Duplicate || r2.Position.Offset != r1.Position.Offset || r2.Position.Epoch != r1.Position.Epoch {
				t.Fatalf("retry = %v dup=%v, first %v", r2.Position, r2.Duplicate, r1.Position)
			}

			// History: size 3 keeps offsets 4, 5, 6.
			cases := []struct {
				name string
				q    HistoryQuery
				want []uint64
			}{
				{"all", HistoryQuery{Limit: 10}, []uint64{4, 5, 6}},
				{"since 4", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 4, Epoch: epoch}, Limit: 10}, []uint64{5, 6}},
				{"since 4 limit 1", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 4, Epoch: epoch}, Limit: 1}, []uint64{5}},
				{"since top", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 6, Epoch: epoch}, Limit: 10}, nil},
				{"since beyond", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1 << 62, Epoch: epoch}, Limit: 10}, nil},
				// Offsets no channel has (the API refuses them) must not
				// overflow an engine's arithmetic either.
				{"since 2^63", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1 << 63, Epoch: epoch}, Limit: 10}, nil},
				{"since 2^64-1", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: math.MaxUint64, Epoch: epoch}, Limit: 10}, nil},
				{"reverse since 2^63", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1 << 63, Epoch: epoch}, Limit: 10, Reverse: true}, []uint64{6, 5, 4}},
				{"reverse since 2^64-1", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: math.MaxUint64, Epoch: epoch}, Limit: 2, Reverse: true}, []uint64{6, 5}},
				{"reverse", HistoryQuery{Limit: 2, Reverse: true}, []uint64{6, 5}},
				{"reverse since 6", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 6, Epoch: epoch}, Limit: 10, Reverse: true}, []uint64{5, 4}},
				{"reverse since 1", HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1, Epoch: epoch}, Limit: 10, Reverse: true}, nil},
				{"limit 0", HistoryQuery{}, nil},
			}
			for _, c := range cases {
				res, err := e.History(ctx, ch, c.q)
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				var got []uint64
				for _, p := range res.Publications {
					got = append(got, p.Offset)
				}
				if fmt.Sprint(got) != fmt.Sprint(c.want) || res.Oldest != 4 || res.Position.Offset != 6 || res.Position.Epoch != epoch {
					t.Fatalf("%s: got %v oldest %d pos %v, want %v oldest 4 pos 6", c.name, got, res.Oldest, res.Position, c.want)
				}
			}
			if _, err := e.History(ctx, ch, HistoryQuery{Since: &heraldv1.StreamPosition{Offset: 1, Epoch: "other"}, Limit: 10}); !errors.Is(err, ErrEpochMismatch) {
				t.Fatalf("other epoch: err = %v", err)
			}

			// Presence.
			alice := &heraldv1.ClientInfo{Client: "c1", User: "alice"}
			bob := &heraldv1.ClientInfo{Client: "c2", User: "bob"}
			for _, c := range []*heraldv1.ClientInfo{bob, alice} {
				if err := e.AddPresence(ctx, ch, c, true); err != nil {
					t.Fatal(err)
				}
			}
			got, err := e.Presence(ctx, ch)
			if err != nil || len(got) != 2 || got[0].Client != "c1" || got[1].User != "bob" {
				t.Fatalf("presence = %v, %v", got, err)
			}
			if err := e.RemovePresence(ctx, ch, bob, true); err != nil {
				t.Fatal(err)
			}
			got, _ = e.Presence(ctx, ch)
			if len(got) != 1 || got[0].Client != "c1" {
				t.Fatalf("presence after leave = %v", got)
			}
			waitFor(t, "join and leave events", func() bool {
				return rec.count(func(r *recorder) int { return len(r.joins)*10 + len(r.leaves) }) == 21
			})

			// Commands reach the handler.
			cmd := &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Disconnect{Disconnect: &heraldv1.DisconnectRequest{User: "alice"}}}
			if err := e.Command(ctx, cmd); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "command", func() bool { return rec.count(func(r *recorder) int { return len(r.cmds) }) == 1 })
			if rec.cmds[0].GetDisconnect().GetUser() != "alice" {
				t.Fatalf("command = %v", rec.cmds[0])
			}

			// Channels.
			states, err := e.Channels(ctx)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, st := range states {
				if st.Name == ch {
					found = true
					if st.Position.Offset != 6 || st.Position.Epoch != epoch || st.Clients != 1 {
						t.Fatalf("channel state = %+v", st)
					}
				}
			}
			if !found {
				t.Fatalf("Channels() = %v, missing %s", states, ch)
			}

			// No history: offsets still count, nothing retained.
			res, err := e.Publish(ctx, pubOf("nohist", "x"), PublishOptions{})
			if err != nil || res.Position.Offset != 1 {
				t.Fatalf("publish without history: %v %v", res.Position, err)
			}
			h, err := e.History(ctx, "nohist", HistoryQuery{Limit: 10})
			if err != nil || len(h.Publications) != 0 || h.Oldest != 0 || h.Position.Offset != 1 {
				t.Fatalf("history without history: %+v %v", h, err)
			}
			if err := e.Unsubscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRedisSubscribeRefcount checks that concurrent Subscribe and
// Unsubscribe of one channel never leave it unsubscribed while a Subscribe
// is not undone.
func TestRedisSubscribeRefcount(t *testing.T) {
	srv := redistest.Start(t)
	rec := &recorder{}
	e := testRedisEngine(t, srv.Addr, rec)
	ctx := context.Background()
	const ch = "refs"
	if err := e.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				if err := e.Subscribe(ctx, ch); err != nil {
					t.Error(err)
					return
				}
				_ = e.Unsubscribe(ctx, ch)
			}
		}()
	}
	// Many channels at once: batched.
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := e.Subscribe(ctx, fmt.Sprintf("many%d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Wait until every shard has sent what the churn asked for and Redis
	// holds the channel's subscription: a stray late UNSUBSCRIBE would then
	// already have taken it away.
	re := e.(*redisEngine)
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	waitFor(t, "the churn to settle", func() bool {
		for _, s := range re.shards {
			s.mu.Lock()
			busy := len(s.dirty) > 0 || len(s.pending) > 0
			s.mu.Unlock()
			if busy {
				return false
			}
		}
		n, err := rc.Do(ctx, "PUBSUB", "SHARDNUMSUB", re.key(ch, "s")).Slice()
		return err == nil && len(n) == 2 && n[1] == int64(1)
	})
	if _, err := e.Publish(ctx, pubOf(ch, "still here"), PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after churn", func() bool { return rec.count(func(r *recorder) int { return len(r.pubs) }) == 1 })
}

// TestRedisDown checks that calls fail quickly with ErrUnavailable while
// Redis is down, and work again once it is back.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	rec := &recorder{}
	e := testRedisEngine(t, srv.Addr, rec)
	ctx := context.Background()
	if err := e.Subscribe(ctx, "down"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	for _, call := range []func() error{
		func() error {
			_, err := e.Publish(ctx, pubOf("down", "x"), PublishOptions{HistorySize: 10, HistoryTTL: time.Minute})
			return err
		},
		func() error { _, err := e.History(ctx, "down", HistoryQuery{Limit: 10}); return err },
		func() error { _, err := e.Presence(ctx, "down"); return err },
		func() error { return e.Ping(ctx) },
		func() error { return e.Subscribe(ctx, "other") },
	} {
		if err := call(); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failing took %v", d)
	}
	srv.Start()
	waitFor(t, "Ping after restart", func() bool { return e.Ping(ctx) == nil })
	waitFor(t, "publish delivered after restart", func() bool {
		_, _ = e.Publish(ctx, pubOf("down", "y"), PublishOptions{})
		return rec.count(func(r *recorder) int { return len(r.pubs) }) > 0
	})
}

type nopHandler struct{}

func (nopHandler) HandlePublication(*heraldv1.Publication)       {}
func (nopHandler) HandlePresence(*heraldv1.PresenceEvent, bool)  {}
func (nopHandler) HandleCommand(*heraldv1.BridgeSessionResponse) {}
func (nopHandler) HandleReset(string)                            {}

// BenchmarkPublish measures Engine.Publish with history on, from 8
// publishers per CPU to 16 channels, each subscribed on this node (so Redis
// also delivers every publication back).
//
//	go test ./service -run '^$' -bench Publish -benchmem
func BenchmarkPublish(b *testing.B) {
	for _, name := range []string{"memory", "redis"} {
		b.Run(name, func(b *testing.B) {
			var e Engine
			if name == "memory" {
				e = NewMemoryEngine(MemoryOptions{})
				_ = e.Start(context.Background(), nopHandler{})
				b.Cleanup(func() { _ = e.Close() })
			} else {
				e = testRedisEngine(b, redistest.Start(b).Addr, nopHandler{})
			}
			ctx := context.Background()
			for i := 0; i < 16; i++ {
				if err := e.Subscribe(ctx, fmt.Sprintf("bench:%d", i)); err != nil {
					b.Fatal(err)
				}
			}
			opts := PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
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
					pub := &heraldv1.Publication{Channel: ch, Payload: &heraldv1.Publication_RawJson{RawJson: payload}}
					if _, err := e.Publish(ctx, pub, opts); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
