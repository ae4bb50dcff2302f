package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

var prefixSeq atomic.Int64

// newPrefix returns a key prefix no other test uses.
func newPrefix() string {
	return fmt.Sprintf("t%d-%d", time.Now().UnixNano(), prefixSeq.Add(1))
}

// startEngine returns a started engine on cfg, closed at cleanup.
func startEngine(t testing.TB, cfg config.Redis, opts Options, h engine.Handler) *Engine {
	t.Helper()
	e, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// singleConfig and clusterConfig name one Redis and a cluster, with a
// fresh prefix.
func singleConfig(addr string) config.Redis {
	return config.Redis{Addrs: []string{addr}, Prefix: newPrefix()}
}

func clusterConfig(addrs []string) config.Redis {
	return config.Redis{Addrs: addrs, Cluster: true, Prefix: newPrefix()}
}

// follower is a Handler that follows channels as the core's hub does: it
// keeps each channel's deliveries in order, fills a gap (a delivery beyond
// the next offset, or a HandleReset) from History, and records a break
// when history cannot fill it (another epoch). Its engine is set after
// the engine is made.
type follower struct {
	mu    sync.Mutex
	e     engine.Engine
	chans map[string]*followed
}

type followed struct {
	epoch  string
	last   uint64
	got    []*heraldv1.Publication // in the order followed, epochs included
	resets int
	breaks int // gaps that history could not fill
	dups   int
}

func newFollower() *follower { return &follower{chans: map[string]*followed{}} }

func (f *follower) ch(name string) *followed {
	c := f.chans[name]
	if c == nil {
		c = &followed{}
		f.chans[name] = c
	}
	return c
}

// start sets the position a channel is followed from (as the hub does
// after its engine subscription is in place).
func (f *follower) start(t testing.TB, channel string) {
	t.Helper()
	res, err := f.e.History(context.Background(), channel, engine.HistoryQuery{})
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	c := f.ch(channel)
	c.epoch, c.last = res.Position.Epoch, res.Position.Offset
	f.mu.Unlock()
}

func (f *follower) HandlePublication(p *heraldv1.Publication) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ch(p.Channel)
	switch {
	case p.Epoch == c.epoch && p.Offset <= c.last:
		c.dups++
	case p.Epoch == c.epoch && p.Offset == c.last+1, c.last == 0 && p.Offset == 1:
		c.epoch, c.last = p.Epoch, p.Offset
		c.got = append(c.got, p)
	default:
		f.fillLocked(p.Channel, c)
		if p.Epoch == c.epoch && p.Offset == c.last+1 {
			c.last = p.Offset
			c.got = append(c.got, p)
		}
	}
}

func (f *follower) HandleReset(channel string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ch(channel)
	c.resets++
	f.fillLocked(channel, c)
}

// fillLocked reads what the channel missed since its last delivery.
func (f *follower) fillLocked(channel string, c *followed) {
	for {
		res, err := f.e.History(context.Background(), channel, engine.HistoryQuery{
			Since: &heraldv1.StreamPosition{Offset: c.last, Epoch: c.epoch}, Limit: 1000})
		if errors.Is(err, engine.ErrEpochMismatch) || err == nil && res.Position.Offset > c.last &&
			(res.Oldest == 0 || res.Oldest > c.last+1 || len(res.Publications) == 0) {
			c.breaks++
			if res.Position != nil {
				c.epoch, c.last = res.Position.Epoch, res.Position.Offset
			}
			return
		}
		if err != nil || len(res.Publications) == 0 {
			return
		}
		c.got = append(c.got, res.Publications...)
		c.last = res.Publications[len(res.Publications)-1].Offset
	}
}

func (f *follower) HandlePresence(*heraldv1.PresenceEvent, bool)  {}
func (f *follower) HandleCommand(*heraldv1.BridgeSessionResponse) {}

// state returns a copy of what was followed of channel.
func (f *follower) state(channel string) followed {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *f.ch(channel)
	c.got = append([]*heraldv1.Publication(nil), c.got...)
	return c
}
