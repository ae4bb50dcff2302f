package service_test

import (
	"context"
	"sync"
	"testing"
	"time"

	redisengine "github.com/herald-io/herald/engine/redis"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/redis/go-redis/v9"
)

// presenceEvents records the join and leave events of a Subscribe stream.
type presenceEvents struct {
	mu     sync.Mutex
	joins  map[string]int
	leaves map[string]int
}

func watchPresenceEvents(t *testing.T, s *sub) *presenceEvents {
	pe := &presenceEvents{joins: map[string]int{}, leaves: map[string]int{}}
	go func() {
		for {
			ev, err := s.stream.Recv()
			if err != nil {
				return
			}
			pe.mu.Lock()
			if j := ev.GetJoin(); j != nil {
				pe.joins[j.GetClient().GetClient()]++
			}
			if l := ev.GetLeave(); l != nil {
				pe.leaves[l.GetClient().GetClient()]++
			}
			pe.mu.Unlock()
		}
	}()
	return pe
}

func (pe *presenceEvents) count(join bool, client string) int {
	pe.mu.Lock()
	defer pe.mu.Unlock()
	if join {
		return pe.joins[client]
	}
	return pe.leaves[client]
}

// TestRedisPresenceEventsOnLossAndExpiry: presence entries that Redis
// loses (FLUSHALL) are created again by their node's refresh with a join
// event, and entries of a node that stops refreshing (its engine closed,
// as if dead) are swept by the live nodes when they expire with exactly
// one leave event, seen once by subscribers on every live node. On main
// neither event existed: lists built from join/leave went stale.
func TestRedisPresenceEventsOnLossAndExpiry(t *testing.T) {
	restore := redisengine.SetTimingForTest(2*time.Second, 300*time.Millisecond)
	defer restore()
	c := startRedisCluster(t, 3)
	const ch = "room:converge"
	ctx := context.Background()
	w0 := watchPresenceEvents(t, c.server(0).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, PresenceEvents: true}))
	w1 := watchPresenceEvents(t, c.server(1).subscribe(t, &heraldv1.SubscribeRequest{Channel: ch, PresenceEvents: true}))
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bs, err := c.clients[2].BridgeSession(sctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: "bridge-c"}}})
	_ = bs.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: &heraldv1.PresenceUpdate{
		Joins: []*heraldv1.PresenceEvent{{Channel: ch, Client: &heraldv1.ClientInfo{Client: "c1", User: "carol"}}}}}})
	waitFor(t, func() bool { return w0.count(true, "c1") == 1 && w1.count(true, "c1") == 1 })

	// Redis loses everything: the owner's next refresh restores the entry
	// and announces it.
	rc := redis.NewClient(&redis.Options{Addr: c.redis.Addr})
	defer rc.Close()
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return w0.count(true, "c1") == 2 && w1.count(true, "c1") == 2 })
	if r, err := c.clients[0].Presence(ctx, &heraldv1.PresenceRequest{Channel: ch}); err != nil || len(r.Clients) != 1 {
		t.Fatalf("presence after the flush: %v %v", r, err)
	}

	// Node C dies: its entry expires and leaves, once.
	_ = c.nodes[2].Core().Engine().Close()
	dead := time.Now()
	waitFor(t, func() bool { return w0.count(false, "c1") >= 1 && w1.count(false, "c1") >= 1 })
	took := time.Since(dead)
	time.Sleep(time.Second) // three more sweeps on each node
	if a, b := w0.count(false, "c1"), w1.count(false, "c1"); a != 1 || b != 1 {
		t.Fatalf("leave events: %d on node A, %d on node B, want exactly 1 each", a, b)
	}
	if r, err := c.clients[0].Presence(ctx, &heraldv1.PresenceRequest{Channel: ch}); err != nil || len(r.Clients) != 0 {
		t.Fatalf("presence after the death: %v %v", r, err)
	}
	t.Logf("leave %v after the node died (TTL 2s, refresh 300ms)", took.Round(time.Millisecond))
}
