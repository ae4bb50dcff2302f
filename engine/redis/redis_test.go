package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	goredis "github.com/redis/go-redis/v9"
)

var ctx = context.Background()

// TestRedisDown checks that calls fail quickly with ErrUnavailable while
// Redis is down, and work again once it is back.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	rec := &enginetest.Recorder{}
	e := startEngine(t, singleConfig(srv.Addr), Options{}, rec)
	if err := e.Subscribe(ctx, "down"); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	for _, call := range []func() error{
		func() error {
			_, err := e.Publish(ctx, enginetest.Pub("down", "x"), engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute})
			return err
		},
		func() error { _, err := e.History(ctx, "down", engine.HistoryQuery{Limit: 10}); return err },
		func() error { _, err := e.Presence(ctx, "down"); return err },
		func() error { return e.Ping(ctx) },
		func() error { return e.Subscribe(ctx, "other") },
	} {
		if err := call(); !errors.Is(err, engine.ErrUnavailable) {
			t.Fatalf("err = %v, want ErrUnavailable", err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failing took %v", d)
	}
	srv.Start()
	enginetest.WaitFor(t, "Ping after restart", func() bool { return e.Ping(ctx) == nil })
	enginetest.WaitFor(t, "publish delivered after restart", func() bool {
		_, _ = e.Publish(ctx, enginetest.Pub("down", "y"), engine.PublishOptions{})
		return len(rec.Pubs("down")) > 0
	})
}

// TestEmptyEpoch: a channel without state reads as offset 0 of an empty
// epoch that is the same on every node and from one read to the next, and
// writes nothing; a position read from it resumes into the state its
// first publish begins, but not once Redis lost its data (FLUSHALL), so a
// client that saw the channel empty is never told it recovered across a
// life of the channel it did not see. On one Redis and on a cluster, where
// the era is per slot: a shard that loses its data loses its eras.
func TestEmptyEpoch(t *testing.T) {
	t.Run("one Redis", func(t *testing.T) {
		srv := redistest.Start(t)
		cfg := singleConfig(srv.Addr)
		rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
		defer rc.Close()
		testEmptyEpoch(t, cfg, func() int64 { n, _ := rc.DBSize(ctx).Result(); return n }, func() error { return rc.FlushAll(ctx).Err() })
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.SharedCluster(t)
		cfg := clusterConfig(c.Addrs())
		rc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()})
		defer rc.Close()
		keys := func() int64 {
			var n int64
			var mu sync.Mutex
			_ = rc.ForEachMaster(ctx, func(ctx context.Context, m *goredis.Client) error {
				k, err := m.DBSize(ctx).Result()
				mu.Lock()
				n += k
				mu.Unlock()
				return err
			})
			return n
		}
		// Only the shard of c2 loses its data.
		flush := func() error {
			m, err := rc.MasterForKey(ctx, "{c2}")
			if err != nil {
				return err
			}
			return m.FlushAll(ctx).Err()
		}
		testEmptyEpoch(t, cfg, keys, flush)
	})
}

func testEmptyEpoch(t *testing.T, cfg config.Redis, keys func() int64, flush func() error) {
	a := startEngine(t, cfg, Options{}, enginetest.Nop{})
	b := startEngine(t, cfg, Options{}, enginetest.Nop{})
	empty := func(e *Engine, ch string) *heraldv1.StreamPosition {
		t.Helper()
		res, err := e.History(ctx, ch, engine.HistoryQuery{Limit: 10})
		if err != nil || res.Position.Offset != 0 || len(res.Publications) != 0 {
			t.Fatalf("history of %s: %+v %v", ch, res, err)
		}
		return res.Position
	}
	opts := engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute, IdempotencyKey: "k", DedupeWindow: time.Minute}

	n := keys()
	pos := empty(a, "c1")
	if again := empty(b, "c1"); again.Epoch != pos.Epoch {
		t.Fatalf("empty epoch %q on one node, %q on another", pos.Epoch, again.Epoch)
	}
	if keys() != n {
		t.Fatalf("reads wrote %d keys", keys()-n)
	}
	if _, err := a.Publish(ctx, enginetest.Pub("c1", "1"), opts); err != nil {
		t.Fatal(err)
	}
	if res, err := b.History(ctx, "c1", engine.HistoryQuery{Since: pos, Limit: 10}); err != nil || len(res.Publications) != 1 || res.Position.Epoch == pos.Epoch {
		t.Fatalf("resume from the empty position: %+v %v, want offset 1 in a new epoch", res, err)
	}
	// The idempotency key expires on the window (Redis keeps no count).
	if ttl, err := a.client.PTTL(ctx, a.key("c1", "d:k")).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("idempotency key TTL %v %v, want within the 1m window", ttl, err)
	}

	// Redis loses its data; the channel's next state is another life.
	pos = empty(a, "c2")
	if _, err := a.Publish(ctx, enginetest.Pub("c2", "1"), opts); err != nil {
		t.Fatal(err)
	}
	if err := flush(); err != nil {
		t.Fatal(err)
	}
	lost := empty(a, "c2")
	if lost.Epoch == pos.Epoch {
		t.Fatalf("the empty epoch %q survived the loss of the data", lost.Epoch)
	}
	if _, err := b.Publish(ctx, enginetest.Pub("c2", "again"), opts); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*heraldv1.StreamPosition{pos, lost} {
		if _, err := a.History(ctx, "c2", engine.HistoryQuery{Since: p, Limit: 10}); !errors.Is(err, engine.ErrEpochMismatch) {
			t.Fatalf("resume from %v after the loss: %v, want ErrEpochMismatch", p, err)
		}
	}
	// Once a publish set the era again, empty epochs are stable again.
	sibling := sameSlot("c2")
	if e1, e2 := empty(a, sibling), empty(b, sibling); e1.Epoch != e2.Epoch || e1.Epoch == lost.Epoch {
		t.Fatalf("empty epochs %q and %q after the era came back", e1.Epoch, e2.Epoch)
	}
}

// sameSlot returns another channel whose keys are in channel's slot.
func sameSlot(channel string) string {
	for i := 0; ; i++ {
		other := fmt.Sprintf("%s-%d", channel, i)
		if keySlot(other) == keySlot(channel) {
			return other
		}
	}
}

// BenchmarkPublish measures Engine.Publish with history on, from 8
// publishers per CPU to 16 channels, each subscribed on this node (so Redis
// also delivers every publication back).
//
//	go test ./engine/redis -run '^$' -bench Publish -benchmem
func BenchmarkPublish(b *testing.B) {
	for _, name := range []string{"one Redis", "cluster"} {
		b.Run(name, func(b *testing.B) {
			var cfg config.Redis
			if name == "cluster" {
				cfg = clusterConfig(redistest.SharedCluster(b).Addrs())
			} else {
				cfg = singleConfig(redistest.Start(b).Addr)
			}
			e := startEngine(b, cfg, Options{}, enginetest.Nop{})
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

// TestChannelsBounds: past maxChannelsListed an answer in one piece stops
// there and says more follow, and pages go on past it; pages read the
// name indexes a chunk at a time, so no bound on the registry's size.
func TestChannelsBounds(t *testing.T) {
	srv := redistest.Start(t)
	e := startEngine(t, singleConfig(srv.Addr), Options{}, enginetest.Nop{})
	for i := range 6 {
		if _, err := e.Publish(ctx, enginetest.Pub(fmt.Sprintf("chat:b-%d", i), "x"), engine.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	listed := maxChannelsListed
	t.Cleanup(func() { maxChannelsListed = listed })
	maxChannelsListed = 4
	states, more, err := e.Channels(ctx, engine.ChannelsQuery{})
	if err != nil || len(states) != 4 || !more || states[3].Name != "chat:b-3" {
		t.Fatalf("all of 6 with at most 4 listed: %d states, more %v, %v", len(states), more, err)
	}
	if states, more, err := e.Channels(ctx, engine.ChannelsQuery{After: "chat:b-3", Limit: 4}); err != nil || len(states) != 2 || more {
		t.Fatalf("the page after chat:b-3: %d states, more %v, %v", len(states), more, err)
	}
}

// TestChannelsNameIndex: a registry written without its name index (by an
// earlier version) is indexed before Channels first lists it; a name left
// in the index after its channel's state and registry entry went is
// skipped, the page still full, and dropped from the index; the sweep
// takes expired entries out of both.
func TestChannelsNameIndex(t *testing.T) {
	srv := redistest.Start(t)
	cfg := singleConfig(srv.Addr)
	rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rc.Close()
	e := startEngine(t, cfg, Options{}, enginetest.Nop{})
	for i := range 5 {
		if _, err := e.Publish(ctx, enginetest.Pub(fmt.Sprintf("chat:n-%d", i), "x"), engine.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	reg := e.registry[0]
	if n, err := rc.ZCard(ctx, namesKey(reg)).Result(); err != nil || n != 5 {
		t.Fatalf("the index after 5 publishes: %d names, %v", n, err)
	}
	// As an earlier version left it: no index. A second engine (a node
	// that starts) indexes the registry before it lists.
	if err := rc.Del(ctx, namesKey(reg)).Err(); err != nil {
		t.Fatal(err)
	}
	cfg.Prefix = e.prefix
	e2 := startEngine(t, cfg, Options{}, enginetest.Nop{})
	if got := channelNames(t, e2, engine.ChannelsQuery{Limit: 3}); got != "chat:n-0 chat:n-1 chat:n-2" {
		t.Fatalf("the first page of 3 from a registry without index: %q", got)
	}
	// A stale name: its state and registry entry gone, its name not.
	if err := rc.Del(ctx, e.key("chat:n-1", "m")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.ZRem(ctx, reg, "chat:n-1").Err(); err != nil {
		t.Fatal(err)
	}
	if got := channelNames(t, e, engine.ChannelsQuery{Limit: 3}); got != "chat:n-0 chat:n-2 chat:n-3" {
		t.Fatalf("the first page of 3 past a stale name: %q", got)
	}
	if s, err := rc.ZScore(ctx, namesKey(reg), "chat:n-1").Result(); !errors.Is(err, goredis.Nil) {
		t.Fatalf("the stale name is still indexed: %v, %v", s, err)
	}
	// Expired in the registry: the sweep takes it out of both.
	if err := rc.ZAdd(ctx, reg, goredis.Z{Score: 1, Member: "chat:n-4"}).Err(); err != nil {
		t.Fatal(err)
	}
	e.sweepRegistry(ctx)
	for _, key := range []string{reg, namesKey(reg)} {
		if _, err := rc.ZScore(ctx, key, "chat:n-4").Result(); !errors.Is(err, goredis.Nil) {
			t.Fatalf("chat:n-4 is still in %s after the sweep: %v", key, err)
		}
	}
}

// channelNames lists what e.Channels lists for q.
func channelNames(t *testing.T, e *Engine, q engine.ChannelsQuery) string {
	t.Helper()
	names, _ := enginetest.ChannelNames(t, e, q)
	return strings.Join(names, " ")
}

// BenchmarkChannels measures Channels on one Redis whose registry lists
// 200,000 channels with state: a page of 500 after a name in the middle
// (what the admin console asks for), and how long Redis spends on it
// (its busiest command's microseconds, from INFO commandstats).
//
//	go test ./engine/redis -run '^$' -bench '^BenchmarkChannels$' -benchmem
func BenchmarkChannels(b *testing.B) {
	srv := redistest.Start(b)
	e := startEngine(b, singleConfig(srv.Addr), Options{}, enginetest.Nop{})
	rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rc.Close()
	const n = 200_000
	until := float64(time.Now().Add(time.Hour).UnixMilli())
	for at := 0; at < n; at += 5000 {
		if _, err := rc.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i := at; i < at+5000; i++ {
				name := fmt.Sprintf("bench:%06d", i)
				p.ZAdd(ctx, e.registry[0], goredis.Z{Score: until, Member: name})
				p.ZAdd(ctx, namesKey(e.registry[0]), goredis.Z{Member: name})
				p.HSet(ctx, e.key(name, "m"), "e", "epoch", "o", 1)
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	q := engine.ChannelsQuery{After: "bench:100000", Limit: 500}
	if err := rc.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		states, more, err := e.Channels(ctx, q)
		if err != nil || len(states) != 500 || !more || states[0].Name != "bench:100001" {
			b.Fatalf("%d states, more %v, %v", len(states), more, err)
		}
	}
	stats, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var worst float64
	for _, line := range strings.Split(stats, "\n") {
		if i := strings.Index(line, "usec_per_call="); i >= 0 {
			var v float64
			_, _ = fmt.Sscanf(line[i+len("usec_per_call="):], "%g", &v)
			worst = max(worst, v)
		}
	}
	b.ReportMetric(worst, "redis-worst-usec/call")
}

// TestChannelsAcrossReads: with every index read one name at a time, pages
// come out the same as one sorted list, on one Redis and on a cluster
// (where the names spread over 16 indexes, merged): each read goes on
// after the last name read, an index ends when a read comes back short
// or past the prefix.
func TestChannelsAcrossReads(t *testing.T) {
	least := minNamesRead
	t.Cleanup(func() { minNamesRead = least })
	minNamesRead = 1
	for name, cfg := range map[string]func() config.Redis{
		"one Redis": func() config.Redis { return singleConfig(redistest.Start(t).Addr) },
		"cluster":   func() config.Redis { return clusterConfig(redistest.SharedCluster(t).Addrs()) },
	} {
		t.Run(name, func(t *testing.T) {
			e := startEngine(t, cfg(), Options{}, enginetest.Nop{})
			var all []string
			for i := range 30 {
				ch := fmt.Sprintf("%s:x-%02d", []string{"chat", "news"}[i%2], i)
				if _, err := e.Publish(ctx, enginetest.Pub(ch, "x"), engine.PublishOptions{HistorySize: 1, HistoryTTL: time.Minute}); err != nil {
					t.Fatal(err)
				}
				all = append(all, ch)
			}
			slices.Sort(all)
			odd := func(n string) bool { return n[len(n)-1]%2 == 1 }
			for _, q := range []engine.ChannelsQuery{{Limit: 4}, {Prefix: "news:", Limit: 3}, {Prefix: "chat:", Keep: odd, Limit: 2}, {}} {
				var want []string
				for _, n := range all {
					if q.Selects(n) {
						want = append(want, n)
					}
				}
				var got []string
				for pages := 0; ; pages++ {
					if pages > 40 {
						t.Fatal("more than 40 pages")
					}
					names, more := enginetest.ChannelNames(t, e, q)
					got = append(got, names...)
					if !more || len(names) == 0 {
						break
					}
					q.After = names[len(names)-1]
				}
				if !slices.Equal(got, want) {
					t.Fatalf("prefix %q, keep %v, limit %d: pages listed\n%v\nwant\n%v", q.Prefix, q.Keep != nil, q.Limit, got, want)
				}
			}
		})
	}
}
