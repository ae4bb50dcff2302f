package redis

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	"github.com/herald-io/herald/internal/redistest"
)

// load publishes to channels round-robin from its own goroutine until
// stopped, and records what was acknowledged and what failed.
type load struct {
	e        engine.Engine
	channels []string
	opts     engine.PublishOptions
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

	mu       sync.Mutex
	acked    map[string][]uint64 // channel -> acknowledged offsets, in order
	texts    map[string]string   // channel/offset -> the text acknowledged there
	epochs   map[string]string   // channel -> epoch of its last acknowledgement
	failures int
	first    error         // the first failure
	slowest  time.Duration // of the failed publishes
	bad      error         // a failure that is not ErrUnavailable
	lastOK   time.Time
}

func startLoad(e engine.Engine, channels []string, opts engine.PublishOptions, every time.Duration) *load {
	l := &load{e: e, channels: channels, opts: opts, stop: make(chan struct{}), done: make(chan struct{}),
		acked: map[string][]uint64{}, epochs: map[string]string{}, texts: map[string]string{}}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(every):
			}
			l.publish(channels[i%len(channels)], fmt.Sprint(i))
		}
	}()
	return l
}

// publish publishes text to ch and records the outcome.
func (l *load) publish(ch, text string) {
	start := time.Now()
	res, err := l.e.Publish(ctx, enginetest.Pub(ch, text), l.opts)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.acked[ch] = append(l.acked[ch], res.Position.Offset)
		l.epochs[ch] = res.Position.Epoch
		l.texts[fmt.Sprint(ch, "/", res.Position.Offset)] = text
		l.lastOK = time.Now()
	case errors.Is(err, engine.ErrUnavailable):
		if l.failures == 0 {
			l.first = err
		}
		l.failures++
		l.slowest = max(l.slowest, time.Since(start))
	default:
		if l.bad == nil {
			l.bad = err
		}
	}
}

func (l *load) halt() {
	l.once.Do(func() { close(l.stop) })
	<-l.done
}

// okSince reports whether a publish was acknowledged after t.
func (l *load) okSince(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastOK.After(t)
}

// checkFollowed checks that f followed channel exactly as acknowledged:
// every acknowledged offset in order, no gap, no break.
func checkFollowed(t *testing.T, f *follower, l *load, channel string) {
	t.Helper()
	l.mu.Lock()
	acked := append([]uint64(nil), l.acked[channel]...)
	epoch := l.epochs[channel]
	l.mu.Unlock()
	if len(acked) == 0 {
		t.Fatalf("%s: nothing acknowledged", channel)
	}
	last := acked[len(acked)-1]
	waitFollowed(t, f, nil, channel, epoch, last)
	st := f.state(channel)
	if st.breaks != 0 {
		t.Fatalf("%s: %d breaks", channel, st.breaks)
	}
	for i, p := range st.got {
		if p.Offset != uint64(i+1) || p.Epoch != epoch {
			t.Fatalf("%s: followed #%d is offset %d of %s", channel, i, p.Offset, p.Epoch)
		}
	}
	for i := 1; i < len(acked); i++ {
		if acked[i] <= acked[i-1] {
			t.Fatalf("%s: acknowledged offsets out of order: %v", channel, acked)
		}
	}
}

// waitFollowed waits until f followed channel to offset last of epoch, or
// to a later epoch (a new epoch began after the last acknowledgement),
// and tells where it is stuck otherwise.
func waitFollowed(t *testing.T, f *follower, e *Engine, channel, epoch string, last uint64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := f.state(channel)
		if st.epoch == epoch && st.last >= last {
			return
		}
		if e != nil && st.epoch != epoch && st.breaks > 0 {
			if res, err := e.History(ctx, channel, engine.HistoryQuery{}); err == nil && res.Position.Epoch == st.epoch && st.last >= res.Position.Offset {
				return // followed into the epoch that began after the loss
			}
		}
		if time.Now().After(deadline) {
			where := ""
			if e != nil {
				e.ps.mu.Lock()
				if r := e.ps.subs[channel]; r != nil {
					where = fmt.Sprintf("placed %v live %v asked %v stale %v", r.conn != nil, r.live, r.asked, r.stale)
					if r.conn != nil {
						where += fmt.Sprintf(" on %s (up %v broken %v)", r.conn.client.Options().Addr, r.conn.up, r.conn.broken)
					}
				}
				e.ps.mu.Unlock()
			}
			t.Fatalf("%s: followed to %d of %s (%d breaks, %d resets), want %d of %s; %s", channel, st.last, st.epoch, st.breaks, st.resets, last, epoch, where)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// channelsOnSlots returns n channels whose slots are all different.
func channelsOnSlots(prefix string, n int) []string {
	seen := map[int]bool{}
	var out []string
	for i := 0; len(out) < n; i++ {
		ch := fmt.Sprintf("%s%d", prefix, i)
		if s := keySlot("p:{" + ch + "}:m"); !seen[s] {
			seen[s] = true
			out = append(out, ch)
		}
	}
	return out
}

// TestClusterReshard moves the slots of channels to other primaries while
// they are published to (from another node) and followed: publishes fail
// fast with ErrUnavailable, if at all, and succeed again; the follower
// sees every acknowledged publication in order with no break (the
// subscription moves to the new primary when Redis unsubscribes it, and
// the gap is filled from history, which moved with the slot).
func TestClusterReshard(t *testing.T) {
	c := redistest.SharedCluster(t)
	cfg := clusterConfig(c.Addrs())
	f := newFollower()
	sub := startEngine(t, cfg, Options{}, f)
	f.e = sub
	pub := startEngine(t, cfg, Options{}, enginetest.Nop{})
	channels := channelsOnSlots("mv:", 6)
	for _, ch := range channels {
		if err := sub.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		f.start(t, ch)
	}
	l := startLoad(pub, channels, engine.PublishOptions{HistorySize: 1000, HistoryTTL: time.Minute}, 2*time.Millisecond)
	defer l.halt()
	time.Sleep(200 * time.Millisecond)
	prims, err := c.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved := channels[:3]
	for i, ch := range moved {
		slot := keySlot(sub.key(ch, "m"))
		owner, _ := c.SlotOwner(ctx, slot)
		to := prims[i%len(prims)]
		if to == owner {
			to = prims[(i+1)%len(prims)]
		}
		if err := c.MoveSlot(slot, to, func() { time.Sleep(100 * time.Millisecond) }); err != nil {
			t.Fatal(err)
		}
	}
	moveDone := time.Now()
	enginetest.WaitFor(t, "a publish after the moves", func() bool { return l.okSince(moveDone.Add(200 * time.Millisecond)) })
	time.Sleep(300 * time.Millisecond)
	l.halt()
	if l.bad != nil {
		t.Fatalf("a publish failed with %v, want ErrUnavailable or nothing", l.bad)
	}
	if l.slowest > 2*time.Second {
		t.Fatalf("a failed publish took %v", l.slowest)
	}
	t.Logf("%d publishes failed during the moves (slowest %v; first: %v)", l.failures, l.slowest, l.first)
	for _, ch := range channels {
		checkFollowed(t, f, l, ch)
	}
	for _, ch := range moved {
		if f.state(ch).resets == 0 {
			t.Errorf("%s moved without a reset", ch)
		}
		owner, _ := c.SlotOwner(ctx, keySlot(sub.key(ch, "m")))
		sub.ps.mu.Lock()
		r := sub.ps.subs[ch]
		at := ""
		if r != nil && r.conn != nil && r.live {
			at = r.conn.client.Options().Addr
		}
		sub.ps.mu.Unlock()
		if at != owner {
			t.Errorf("%s is delivered from %q, its slot is on %s", ch, at, owner)
		}
	}
}

// sortedKeys is for stable logs.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestClusterFailover kills (-9) a primary while its channels are published
// to and followed; its replica takes over. Before the kill the replica is
// paused for a moment while large publications go to the primary, so that
// the end of the replication stream has not left the primary when it dies
// (on loopback a replica is otherwise always caught up). Publishes fail
// fast with ErrUnavailable during the failover and succeed again after
// it. The follower sees every channel in order; a channel of the dead
// primary either continues without a gap or breaks (the engine found that
// the promoted replica lacks publications it had delivered, and began a
// new epoch), never a silent gap. With wait_replicas 1 every acknowledged
// publication is still in history afterwards; without it, acknowledged
// publications are lost, and the test logs how many (and requires that the
// follower was told).
func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterOptions{})
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("wait_replicas=%d", wait), func(t *testing.T) {
			testFailover(t, c, wait)
		})
	}
}

func testFailover(t *testing.T, c *redistest.Cluster, wait int) {
	cfg := clusterConfig(c.Addrs())
	cfg.WaitReplicas = wait
	f := newFollower()
	sub := startEngine(t, cfg, Options{}, f)
	f.e = sub
	pub := startEngine(t, cfg, Options{}, enginetest.Nop{})
	slots, err := c.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	victim := ""
	for _, s := range slots {
		if len(s.Replicas) > 0 {
			victim = s.Primary
			break
		}
	}
	if victim == "" {
		t.Fatal("no primary with a replica left")
	}
	// Channels on the victim and elsewhere.
	var onVictim, elsewhere []string
	for _, ch := range channelsOnSlots(fmt.Sprintf("fo%d:", wait), 200) {
		owner, _ := c.SlotOwner(ctx, keySlot(sub.key(ch, "m")))
		switch {
		case owner == victim && len(onVictim) < 4:
			onVictim = append(onVictim, ch)
		case owner != victim && len(elsewhere) < 4:
			elsewhere = append(elsewhere, ch)
		}
	}
	channels := append(append([]string(nil), onVictim...), elsewhere...)
	for _, ch := range channels {
		if err := sub.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		f.start(t, ch)
	}
	l := startLoad(pub, channels, engine.PublishOptions{HistorySize: 100000, HistoryTTL: time.Minute}, time.Millisecond)
	defer l.halt()
	time.Sleep(500 * time.Millisecond)
	var replica *redistest.ClusterNode
	for _, s := range slots {
		if s.Primary == victim {
			replica = c.Node(s.Replicas[0])
		}
	}
	replica.Pause()
	big := strings.Repeat("x", 60000)
	for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); {
		l.publish(onVictim[0], big)
	}
	killed := time.Now()
	c.Node(victim).Kill()
	replica.Resume()
	t.Cleanup(func() {
		// Back as a replica of its replica, for the next run.
		c.Node(victim).Restart()
		if err := c.WaitHealthy(30 * time.Second); err != nil {
			t.Error(err)
		}
	})
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	enginetest.WaitFor(t, "publishes acknowledged again on the failed-over shard", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.lastOK.After(promoted)
	})
	time.Sleep(500 * time.Millisecond)
	l.halt()
	t.Logf("failover took %v; %d publishes failed (slowest %v; first: %v)", promoted.Sub(killed).Round(time.Millisecond), l.failures, l.slowest, l.first)
	if l.bad != nil {
		t.Fatalf("a publish failed with %v, want ErrUnavailable or nothing", l.bad)
	}
	if l.slowest > 3*time.Second {
		t.Fatalf("a failed publish took %v", l.slowest)
	}
	for _, ch := range elsewhere {
		checkFollowed(t, f, l, ch)
	}
	lostTotal := 0
	for _, ch := range onVictim {
		l.mu.Lock()
		acked := append([]uint64(nil), l.acked[ch]...)
		epoch := l.epochs[ch]
		l.mu.Unlock()
		waitFollowed(t, f, sub, ch, epoch, acked[len(acked)-1])
		st := f.state(ch)
		// In order within each epoch, whatever the breaks.
		for i := 1; i < len(st.got); i++ {
			a, b := st.got[i-1], st.got[i]
			if a.Epoch == b.Epoch && b.Offset != a.Offset+1 {
				t.Fatalf("%s: offset %d after %d in epoch %s (a silent gap)", ch, b.Offset, a.Offset, a.Epoch)
			}
		}
		// Is every acknowledged publication in the channel's history, at
		// its offset?
		res, err := sub.History(ctx, ch, engine.HistoryQuery{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		kept := map[uint64]string{}
		for _, p := range res.Publications {
			kept[p.Offset] = string(p.GetRawJson())
		}
		lost := 0
		l.mu.Lock()
		for _, o := range acked {
			if kept[o] != strconv.Quote(l.texts[fmt.Sprint(ch, "/", o)]) {
				lost++
			}
		}
		l.mu.Unlock()
		lostTotal += lost
		t.Logf("%s: %d acknowledged, %d of them lost; followed %d, %d breaks, %d resets", ch, len(acked), lost, len(st.got), st.breaks, st.resets)
		if lost > 0 && st.breaks == 0 {
			t.Errorf("%s: %d acknowledged publications lost and the follower was not told", ch, lost)
		}
	}
	if wait > 0 && lostTotal > 0 {
		t.Fatalf("%d acknowledged publications lost with wait_replicas %d", lostTotal, wait)
	}
}
