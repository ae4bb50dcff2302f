package redis

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// shardStats is what one primary holds and carries.
type shardStats struct {
	slots      int
	keys       int64 // keys of the test's prefix
	channels   int64 // channels whose state it holds (meta keys)
	evalsha    int64 // publish (and other) scripts run
	scriptUs   int64 // microseconds Redis spent running them
	spublish   int64 // SPUBLISH (from the scripts and commands)
	shardSubs  int64 // shard channels subscribed
	netOut     int64 // bytes sent
	controls   int   // control channels it serves
	registries int   // registry keys it serves
}

var statRe = regexp.MustCompile(`(\w+):calls=(\d+),usec=(\d+)`)

// commandCalls returns the calls per command of INFO commandstats, and
// (under "<command>.usec") the microseconds spent in them.
func commandCalls(t *testing.T, rc *goredis.Client) map[string]int64 {
	info, err := rc.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, m := range statRe.FindAllStringSubmatch(info, -1) {
		name := strings.TrimPrefix(m[1], "cmdstat_")
		n, _ := strconv.ParseInt(m[2], 10, 64)
		us, _ := strconv.ParseInt(m[3], 10, 64)
		out[name], out[name+".usec"] = n, us
	}
	return out
}

// infoInt returns a number field of INFO section.
func infoInt(t *testing.T, rc *goredis.Client, section, field string) int64 {
	info, err := rc.Info(ctx, section).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("INFO %s has no %s", section, field)
	return 0
}

// countKeys counts rc's keys that match pattern.
func countKeys(t *testing.T, rc *goredis.Client, pattern string) int64 {
	var n int64
	iter := rc.Scan(ctx, 0, pattern, 10000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestClusterDistribution subscribes one node to 10,000 channels and
// publishes one message to each, then reads from every primary the keys it
// holds, the scripts and SPUBLISHes it ran, its shard subscriptions and the
// bytes it sent, beside the slots it serves: each primary's share of
// channels, keys and pub/sub traffic must follow its share of slots
// (within 10%), and the keys every node uses (control channels, registry
// keys) must be spread over every primary, not one. The table is logged
// (BENCHMARKS.md, "Redis Cluster").
func TestClusterDistribution(t *testing.T) {
	c := redistest.SharedCluster(t)
	cfg := clusterConfig(c.Addrs())
	e := startEngine(t, cfg, Options{}, enginetest.Nop{})
	const n = 10000
	channels := make([]string, n)
	for i := range channels {
		channels[i] = fmt.Sprintf("chat:room-%d", i)
	}
	prims, err := c.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*goredis.Client{}
	for _, p := range prims {
		clients[p] = c.Node(p).Client(t)
	}
	before := map[string]map[string]int64{}
	subsBefore, outBefore := map[string]int64{}, map[string]int64{}
	for p, rc := range clients {
		before[p] = commandCalls(t, rc)
		subsBefore[p] = infoInt(t, rc, "stats", "pubsubshard_channels")
		outBefore[p] = infoInt(t, rc, "stats", "total_net_output_bytes")
	}

	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, ch := range channels {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := e.Subscribe(ctx, ch); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	subscribed := time.Since(start)
	opts := engine.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	start = time.Now()
	for i := 0; i < n; i += 256 {
		var pubs []*heraldv1.Publication
		var os []engine.PublishOptions
		for _, ch := range channels[i:min(i+256, n)] {
			pubs = append(pubs, enginetest.Pub(ch, "hello"))
			os = append(os, opts)
		}
		_, errs := e.PublishBatch(ctx, pubs, os)
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	published := time.Since(start)

	slots, err := c.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stats := map[string]*shardStats{}
	for _, p := range prims {
		stats[p] = &shardStats{}
	}
	for _, s := range slots {
		stats[s.Primary].slots += s.End - s.Start + 1
	}
	for p, rc := range clients {
		st := stats[p]
		st.keys = countKeys(t, rc, cfg.Prefix+":*")
		st.channels = countKeys(t, rc, cfg.Prefix+":{chat:room-*}:m")
		calls := commandCalls(t, rc)
		st.evalsha = calls["evalsha"] + calls["eval"] - before[p]["evalsha"] - before[p]["eval"]
		st.scriptUs = calls["evalsha.usec"] + calls["eval.usec"] - before[p]["evalsha.usec"] - before[p]["eval.usec"]
		st.spublish = calls["spublish"] - before[p]["spublish"]
		st.shardSubs = infoInt(t, rc, "stats", "pubsubshard_channels") - subsBefore[p]
		st.netOut = infoInt(t, rc, "stats", "total_net_output_bytes") - outBefore[p]
	}
	for _, name := range e.controls {
		owner, _ := c.SlotOwner(ctx, keySlot(name))
		stats[owner].controls++
	}
	for _, key := range e.registry {
		owner, _ := c.SlotOwner(ctx, keySlot(key))
		stats[owner].registries++
	}

	sort.Strings(prims)
	var b strings.Builder
	fmt.Fprintf(&b, "%d channels: subscribed in %v, one publication each in %v\n", n, subscribed.Round(time.Millisecond), published.Round(time.Millisecond))
	fmt.Fprintf(&b, "| primary | slots | channels | keys (all of the prefix) | scripts run | script time | SPUBLISH | shard subscriptions | bytes sent | control channels | registry keys |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	var total shardStats
	for _, p := range prims {
		st := stats[p]
		fmt.Fprintf(&b, "| %s | %d (%.1f%%) | %d (%.1f%%) | %d | %d | %d ms | %d | %d | %d | %d | %d |\n", p, st.slots, 100*float64(st.slots)/numSlots,
			st.channels, 100*float64(st.channels)/n, st.keys, st.evalsha, st.scriptUs/1000, st.spublish, st.shardSubs, st.netOut, st.controls, st.registries)
		total.channels += st.channels
		total.spublish += st.spublish
		total.shardSubs += st.shardSubs
	}
	t.Log("\n" + b.String())

	if total.channels != n {
		t.Fatalf("%d channels' state found on the primaries, want %d", total.channels, n)
	}
	within := func(what string, got int64, sum int64, share float64) {
		t.Helper()
		if want := share * float64(sum); float64(got) < 0.9*want || float64(got) > 1.1*want {
			t.Errorf("%s: %d of %d, want %.0f (its share of slots) within 10%%", what, got, sum, want)
		}
	}
	for _, p := range prims {
		st := stats[p]
		share := float64(st.slots) / numSlots
		within(p+" channels", st.channels, n, share)
		within(p+" SPUBLISH", st.spublish, total.spublish, share)
		within(p+" shard subscriptions", st.shardSubs, total.shardSubs, share)
		if st.controls == 0 || st.registries == 0 || st.controls > spread/2 || st.registries > spread/2 {
			t.Errorf("%s serves %d of %d control channels and %d of %d registry keys: want some, and not most", p, st.controls, spread, st.registries, spread)
		}
	}
	// Every channel was delivered to the node: its subscriptions work.
	if total.spublish < n {
		t.Fatalf("%d SPUBLISH for %d publications", total.spublish, n)
	}
}
