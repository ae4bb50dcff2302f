package wsbridge

import (
	"context"
	"hash/maphash"
	"sync"

	"github.com/herald-io/herald/config"
)

// hub holds the bridge's channels: per channel, one upstream subscription
// and the set of local subscribers (channel.go). State lives per channel
// and is sharded by channel name; a session holds only the channels it is
// subscribed to. Every channel's upstream subscription rides the bridge's
// one SubscribeMany stream (upstream.go).
type hub struct {
	b      *Bridge
	seed   maphash.Seed
	shards [32]hubShard
	up     upstream
}

type hubShard struct {
	mu    sync.Mutex
	chans map[string]*channel
}

func (h *hub) init(b *Bridge) {
	h.b = b
	h.seed = maphash.MakeSeed()
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*channel)
	}
	h.up.init(h)
	b.goFunc(h.up.run)
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)%uint64(len(h.shards))]
}

// join adds s to a channel's subscribers, subscribing upstream for the
// channel's first subscriber. The subscriber starts catching up (not
// live). ready is closed once the channel is up or failed (ch.err).
func (h *hub) join(name string, ns *config.Namespace, s *session) (ch *channel, sb *sub, ready <-chan struct{}) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch = sh.chans[name]
	if ch == nil {
		ch = &channel{h: h, name: name, ns: ns, ready: make(chan struct{})}
		sh.chans[name] = ch
		h.up.add(ch)
	}
	sb = &sub{}
	ch.mu.Lock()
	ch.addSubLocked(s, sb)
	ready = ch.ready
	if ready == nil {
		ready = closedChan
	}
	ch.mu.Unlock()
	h.b.nSubs.Add(1)
	metricSubs[s.t.kind][s.format].Add(1)
	return ch, sb, ready
}

// leave removes s from a channel; after the last subscriber, the upstream
// subscription is closed.
func (h *hub) leave(ch *channel, s *session) {
	sh := h.shard(ch.name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch.mu.Lock()
	if !ch.removeSubLocked(s) {
		ch.mu.Unlock()
		return
	}
	h.b.nSubs.Add(-1)
	metricSubs[s.t.kind][s.format].Add(-1)
	last := ch.empty() && !ch.closed
	if last {
		ch.closed = true
		if sh.chans[ch.name] == ch {
			delete(sh.chans, ch.name)
		}
		ch.failLocked(context.Canceled)
	}
	ch.mu.Unlock()
	if last {
		h.up.remove(ch)
	}
}

// each calls f for every channel, under its shard's lock: f must not
// block or take hub locks.
func (h *hub) each(f func(*channel)) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, ch := range sh.chans {
			f(ch)
		}
		sh.mu.Unlock()
	}
}
