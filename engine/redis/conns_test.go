package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/engine/enginetest"
	"github.com/herald-io/herald/internal/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// shardSubscribers returns, per client id, the number of shard channels
// each client of the Redis at addr has SSUBSCRIBEd to (CLIENT LIST's
// ssub field; clients with none are left out).
func shardSubscribers(t *testing.T, addr string) map[string]int {
	t.Helper()
	rc := goredis.NewClient(&goredis.Options{Addr: addr})
	defer rc.Close()
	list, err := rc.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(list, "\n") {
		var id string
		n := 0
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				id = v
			case "ssub":
				n, _ = strconv.Atoi(v)
			}
		}
		if id != "" && n > 0 {
			out[id] = n
		}
	}
	return out
}

// TestClusterPubSubConnections: a node subscribed to 600 channels spread
// over every slot of a cluster holds at most Options.Conns pub/sub
// connections to each primary (2 by default on a cluster), never one per
// channel or per slot, and between them those connections hold every
// channel's SSUBSCRIBE (600 plus the node's control channels), each
// on the primary that serves its slot.
func TestClusterPubSubConnections(t *testing.T) {
	c := redistest.SharedCluster(t)
	prims, err := c.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string]map[string]int{}
	for _, p := range prims {
		before[p] = shardSubscribers(t, p)
	}
	e := startEngine(t, clusterConfig(c.Addrs()), Options{}, enginetest.Nop{})
	const n = 600
	channels := channelsOnSlots(fmt.Sprintf("conn%d:", time.Now().UnixNano()), n)
	for _, ch := range channels {
		if err := e.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	// Subscribe returned: each SSUBSCRIBE was confirmed by Redis.
	want := map[string]int{} // per primary: the channels of its slots
	for _, ch := range channels {
		owner, err := c.SlotOwner(ctx, keySlot(e.key(ch, "s")))
		if err != nil {
			t.Fatal(err)
		}
		want[owner]++
	}
	total := 0
	for _, p := range prims {
		conns, held := 0, 0
		for id, k := range shardSubscribers(t, p) {
			if _, old := before[p][id]; old {
				continue
			}
			conns++
			held += k
		}
		t.Logf("%s: %d pub/sub connections holding %d shard channels (%d of the test's channels on its slots)", p, conns, held, want[p])
		if conns == 0 || conns > e.opts.Conns {
			t.Errorf("%s: %d pub/sub connections of this node, want 1..%d", p, conns, e.opts.Conns)
		}
		if held < want[p] {
			t.Errorf("%s: its connections hold %d shard channels, want at least the %d channels of its slots", p, held, want[p])
		}
		total += held
	}
	if total < n {
		t.Fatalf("%d shard channels subscribed over the cluster, want at least %d", total, n)
	}
}
