package redis

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// killPubSub closes every pub/sub connection of a Redis (CLIENT KILL TYPE
// pubsub misses shard-channel subscribers in Redis 7.0).
func killPubSub(t *testing.T, rc *goredis.Client) int {
	t.Helper()
	list, err := rc.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		id, pubsub := "", false
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			switch {
			case k == "id":
				id = v
			case (k == "sub" || k == "ssub") && v != "0":
				pubsub = true
			}
		}
		if pubsub && rc.Do(ctx, "client", "kill", "id", id).Err() == nil {
			killed++
		}
	}
	return killed
}

// TestLostPublicationBeginsNewEpoch: when a channel's log no longer holds
// the last publication a node delivered (here Redis's state is set back by
// hand, as a failover to a replica that had not received it would), the
// node's delivery, once its connection is back, begins a new epoch: the
// follower (like the hub) cannot fill the gap and breaks (subscribers are
// told), what is left of history stays under the new epoch, and offsets go
// on from it instead of reusing the lost one. A reconnect without a loss
// changes nothing. On main the lost offset was reused in the same epoch,
// and the hub dropped the new publication as a duplicate.
func TestLostPublicationBeginsNewEpoch(t *testing.T) {
	srv := redistest.Start(t)
	rc := goredis.NewClient(&goredis.Options{Addr: srv.Addr})
	defer rc.Close()
	opts := engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, e *Engine, ch string, epoch string)
		lost bool
	}{
		{"no loss", func(*testing.T, *Engine, string, string) {}, false},
		{"log ends before", func(_ *testing.T, e *Engine, ch, _ string) {
			rc.XDel(ctx, e.key(ch, "h"), "5-0")
			rc.HSet(ctx, e.key(ch, "m"), "o", 4)
		}, true},
		{"another publication at its offset", func(t *testing.T, e *Engine, ch, epoch string) {
			// The stream again, with another publication at offset 5
			// (XADD refuses an ID at or below the stream's last one).
			other, _ := proto.Marshal(&heraldv1.Publication{Channel: ch, Offset: 5, Epoch: epoch, Payload: &heraldv1.Publication_RawJson{RawJson: []byte(`"other"`)}})
			entries, err := rc.XRange(ctx, e.key(ch, "h"), "-", "4-0").Result()
			if err != nil {
				t.Fatal(err)
			}
			rc.Del(ctx, e.key(ch, "h"))
			for _, x := range entries {
				rc.XAdd(ctx, &goredis.XAddArgs{Stream: e.key(ch, "h"), ID: x.ID, Values: []any{"d", x.Values["d"]}})
			}
			if err := rc.XAdd(ctx, &goredis.XAddArgs{Stream: e.key(ch, "h"), ID: "5-0", Values: []any{"d", other}}).Err(); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFollower()
			e := startEngine(t, singleConfig(srv.Addr), Options{}, f)
			f.e = e
			const ch = "lossy"
			if err := e.Subscribe(ctx, ch); err != nil {
				t.Fatal(err)
			}
			f.start(t, ch)
			var epoch string
			for i := 1; i <= 5; i++ {
				epoch = mustPublishOK(t, e, ch, fmt.Sprint(i), opts).Position.Epoch
			}
			enginetest.WaitFor(t, "5 deliveries", func() bool { return len(f.state(ch).got) == 5 })
			tc.lose(t, e, ch, epoch)
			if killPubSub(t, rc) == 0 {
				t.Fatal("no pub/sub connection killed")
			}
			enginetest.WaitFor(t, "the reset", func() bool { return f.state(ch).resets > 0 })
			st := f.state(ch)
			res, err := e.History(ctx, ch, engine.HistoryQuery{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.lost {
				if st.breaks != 0 || res.Position.Epoch != epoch || res.Position.Offset != 5 {
					t.Fatalf("a reconnect without a loss: %d breaks, position %v (epoch was %s)", st.breaks, res.Position, epoch)
				}
				return
			}
			if st.breaks != 1 || res.Position.Epoch == epoch || st.epoch != res.Position.Epoch {
				t.Fatalf("after the loss: %d breaks, follower epoch %s, position %v (epoch was %s)", st.breaks, st.epoch, res.Position, epoch)
			}
			// What was left stays, under the new epoch.
			if len(res.Publications) < 4 || res.Publications[0].Offset != 1 || res.Publications[0].Epoch != res.Position.Epoch ||
				string(res.Publications[0].GetRawJson()) != `"1"` {
				t.Fatalf("history after the new epoch: %v", res.Publications)
			}
			next := mustPublishOK(t, e, ch, "after", opts)
			if next.Position.Epoch != res.Position.Epoch || next.Position.Offset != res.Position.Offset+1 {
				t.Fatalf("publish after the new epoch: %v, want offset %d of %s", next.Position, res.Position.Offset+1, res.Position.Epoch)
			}
			enginetest.WaitFor(t, "the next delivery", func() bool {
				s := f.state(ch)
				return len(s.got) > 0 && s.got[len(s.got)-1].Offset == next.Position.Offset && s.got[len(s.got)-1].Epoch == next.Position.Epoch
			})
		})
	}
}

func mustPublishOK(t testing.TB, e engine.Engine, ch, text string, opts engine.PublishOptions) engine.PublishResult {
	t.Helper()
	res, err := e.Publish(ctx, enginetest.Pub(ch, text), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
