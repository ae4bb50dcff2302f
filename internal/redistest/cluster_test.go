package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/herald-io/herald/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The helper itself: a cluster that serves, survives a primary's kill -9
// (its replica is promoted, the keys it held are still there) and a slot
// migration.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer rc.Close()
	keys := []string{"a", "b", "c", "{x}1"}
	for _, k := range keys {
		if err := rc.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
	// WAIT: the replica has the key before its primary dies.
	slot := int(rc.ClusterKeySlot(ctx, "{x}1").Val())
	owner, err := c.SlotOwner(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Node(owner).Client(t).Wait(ctx, 1, time.Second).Result(); err != nil || n < 1 {
		t.Fatalf("WAIT on %s: %d %v", owner, n, err)
	}
	prims, err := c.Primaries(ctx)
	if err != nil || len(prims) != 3 {
		t.Fatalf("primaries %v, %v", prims, err)
	}
	c.Node(owner).Kill()
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	now, err := c.SlotOwner(ctx, slot)
	if err != nil || now == owner {
		t.Fatalf("slot %d still on %s after failover (%v)", slot, now, err)
	}
	// go-redis keeps routing to the dead primary (for about a minute, seen
	// here) until its slot map is reloaded: reload on errors.
	for {
		v, err := rc.Get(ctx, "{x}1").Result()
		if err == nil && v == "v" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("get after failover: %q %v", v, err)
		}
		rc.ReloadState(ctx)
		time.Sleep(50 * time.Millisecond)
	}
	c.Node(owner).Restart()
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	prims, _ = c.Primaries(ctx)
	if err := c.MoveSlots(prims[0], prims[1], 100); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v, err := rc.Get(ctx, k).Result(); err != nil || v != "v" {
			t.Fatalf("get %s after reshard: %q %v", k, v, err)
		}
	}
}

// MoveSlot moves one slot with its keys, and a client that follows
// redirects finds them at the new primary.
func TestMoveSlot(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{Replicas: -1})
	ctx := context.Background()
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	defer rc.Close()
	for i := range 30 {
		if err := rc.Set(ctx, "{m}"+string(rune('a'+i)), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	slot := int(rc.ClusterKeySlot(ctx, "{m}").Val())
	owner, _ := c.SlotOwner(ctx, slot)
	prims, _ := c.Primaries(ctx)
	to := prims[0]
	if to == owner {
		to = prims[1]
	}
	midway := false
	if err := c.MoveSlot(slot, to, func() { midway = true }); err != nil {
		t.Fatal(err)
	}
	if now, _ := c.SlotOwner(ctx, slot); now != to || !midway {
		t.Fatalf("slot %d on %s after the move to %s (midway %v)", slot, now, to, midway)
	}
	if n, err := c.Node(to).Client(t).ClusterCountKeysInSlot(ctx, slot).Result(); err != nil || n != 30 {
		t.Fatalf("%d keys in the slot at its new primary (%v), want 30", n, err)
	}
	if v, err := rc.Get(ctx, "{m}a").Result(); err != nil || v != "v" {
		t.Fatalf("get after the move: %q %v", v, err)
	}
}
