package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRedisEmptyEpoch: on the Redis engine, a channel without state reads
// as offset 0 of an empty epoch that is the same on every node and from
// one read to the next, and writes nothing; a position read from it
// resumes into the state its first publish begins, but not once Redis
// lost its data (FLUSHALL), so a client that saw the channel empty is
// never told it recovered across a life of the channel it did not see.
func TestRedisEmptyEpoch(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	a := testRedisEngine(t, srv.Addr, nopHandler{}).(*redisEngine)
	b, err := NewRedisEngine(redisConfig(srv.Addr, a.prefix), RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx, nopHandler{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	rc := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rc.Close()
	keys := func() int64 { n, _ := rc.DBSize(ctx).Result(); return n }
	// Start sets the era in the background.
	waitFor(t, "the era key", func() bool { return rc.Exists(ctx, a.eraKey()).Val() == 1 })
	empty := func(e Engine, ch string) *heraldv1.StreamPosition {
		t.Helper()
		res, err := e.History(ctx, ch, HistoryQuery{Limit: 10})
		if err != nil || res.Position.Offset != 0 || len(res.Publications) != 0 {
			t.Fatalf("history of %s: %+v %v", ch, res, err)
		}
		return res.Position
	}
	opts := PublishOptions{HistorySize: 10, HistoryTTL: time.Minute, IdempotencyKey: "k", DedupeWindow: time.Minute}

	n := keys()
	pos := empty(a, "c1")
	if again := empty(b, "c1"); again.Epoch != pos.Epoch {
		t.Fatalf("empty epoch %q on one node, %q on another", pos.Epoch, again.Epoch)
	}
	if keys() != n {
		t.Fatalf("reads wrote %d keys", keys()-n)
	}
	if _, err := a.Publish(ctx, pubOf("c1", "1"), opts); err != nil {
		t.Fatal(err)
	}
	if res, err := b.History(ctx, "c1", HistoryQuery{Since: pos, Limit: 10}); err != nil || len(res.Publications) != 1 || res.Position.Epoch == pos.Epoch {
		t.Fatalf("resume from the empty position: %+v %v, want offset 1 in a new epoch", res, err)
	}
	// The idempotency key expires on the window (Redis keeps no count).
	if ttl, err := rc.PTTL(ctx, a.key("c1", "d:k")).Result(); err != nil || ttl <= 0 || ttl > time.Minute {
		t.Fatalf("idempotency key TTL %v %v, want within the 1m window", ttl, err)
	}

	// Redis loses its data; the channel's next state is another life.
	pos = empty(a, "c2")
	if _, err := a.Publish(ctx, pubOf("c2", "1"), opts); err != nil {
		t.Fatal(err)
	}
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	lost := empty(a, "c2")
	if lost.Epoch == pos.Epoch {
		t.Fatalf("the empty epoch %q survived FLUSHALL", lost.Epoch)
	}
	if _, err := b.Publish(ctx, pubOf("c2", "again"), opts); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*heraldv1.StreamPosition{pos, lost} {
		if _, err := a.History(ctx, "c2", HistoryQuery{Since: p, Limit: 10}); !errors.Is(err, ErrEpochMismatch) {
			t.Fatalf("resume from %v after FLUSHALL: %v, want ErrEpochMismatch", p, err)
		}
	}
	// Once a publish set the era again, empty epochs are stable again.
	if e1, e2 := empty(a, "c3"), empty(b, "c3"); e1.Epoch != e2.Epoch {
		t.Fatalf("empty epochs %q and %q after the era came back", e1.Epoch, e2.Epoch)
	}
}

func redisConfig(addr, prefix string) config.Redis {
	return config.Redis{Addrs: []string{addr}, Prefix: prefix}
}
