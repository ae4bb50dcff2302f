package service

import (
	"context"
	"hash/maphash"
	"sync"
	"sync/atomic"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hub holds this node's Subscribe streams by channel and fans out what the
// engine delivers to them. It never blocks on a subscriber: each has a
// bounded queue, and one that is full is cut off.
//
// Lock order: shard.mu is taken inside engine channel locks (delivery runs
// under them) and never the other way round.
type hub struct {
	seed   maphash.Seed
	shards [64]hubShard
	engine Engine
	queue  int // capacity of each subscriber's queue

	streams atomic.Int64
}

type hubShard struct {
	mu    sync.RWMutex
	chans map[string]*hubChannel
}

// hubChannel is the set of local subscribers of one channel. subs is
// guarded by the shard's mu; ready is closed once the engine subscription
// is in place (err set before that if it failed).
type hubChannel struct {
	subs  map[*subscriber]struct{}
	ready chan struct{}
	err   error
}

// subscriber is one Subscribe stream.
type subscriber struct {
	channel        string
	presenceEvents bool
	queue          chan event
	done           chan struct{} // closed by stop
	once           sync.Once
	err            error // why the subscriber was stopped; set before done closes
}

// event is a publication or a presence event.
type event struct {
	pub      *heraldv1.Publication
	presence *heraldv1.PresenceEvent
	join     bool
}

func newHub(engine Engine, queue int) *hub {
	h := &hub{seed: maphash.MakeSeed(), engine: engine, queue: queue}
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*hubChannel)
	}
	return h
}

func (h *hub) shard(channel string) *hubShard {
	return &h.shards[maphash.String(h.seed, channel)%uint64(len(h.shards))]
}

// stop ends the subscriber with err (a gRPC status). Safe to call many
// times and from any goroutine; the first error wins.
func (s *subscriber) stop(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
	})
}

// add registers a subscriber and, for the channel's first local one, makes
// the engine deliver the channel to this node. It returns once events of the
// channel flow to the subscriber's queue.
func (h *hub) add(ctx context.Context, s *subscriber) error {
	sh := h.shard(s.channel)
	sh.mu.Lock()
	hc := sh.chans[s.channel]
	first := hc == nil
	if first {
		hc = &hubChannel{subs: make(map[*subscriber]struct{}), ready: make(chan struct{})}
		sh.chans[s.channel] = hc
	}
	hc.subs[s] = struct{}{}
	sh.mu.Unlock()
	h.streams.Add(1)
	if first {
		hc.err = h.engine.Subscribe(ctx, s.channel)
		close(hc.ready)
	}
	select {
	case <-hc.ready:
	case <-ctx.Done():
		h.remove(s)
		return ctx.Err()
	}
	if hc.err != nil {
		h.remove(s)
		return hc.err
	}
	return nil
}

// remove unregisters a subscriber; after the channel's last one, the engine
// stops delivering it here.
func (h *hub) remove(s *subscriber) {
	sh := h.shard(s.channel)
	sh.mu.Lock()
	hc := sh.chans[s.channel]
	if hc == nil {
		sh.mu.Unlock()
		return
	}
	if _, ok := hc.subs[s]; !ok {
		sh.mu.Unlock()
		return
	}
	delete(hc.subs, s)
	last := len(hc.subs) == 0
	if last {
		delete(sh.chans, s.channel)
	}
	sh.mu.Unlock()
	h.streams.Add(-1)
	if last {
		<-hc.ready
		if hc.err == nil {
			_ = h.engine.Unsubscribe(context.Background(), s.channel)
		}
	}
}

var errSlowSubscriber = status.Error(codes.ResourceExhausted, "subscriber too slow: its queue of pending events is full; resubscribe from the last position you received")

// HandlePublication fans a publication out to the channel's subscribers.
func (h *hub) HandlePublication(pub *heraldv1.Publication) {
	h.fanout(pub.Channel, event{pub: pub}, false)
}

// HandlePresence fans a join or leave out to subscribers that want them.
func (h *hub) HandlePresence(ev *heraldv1.PresenceEvent, join bool) {
	h.fanout(ev.Channel, event{presence: ev, join: join}, true)
}

func (h *hub) fanout(channel string, ev event, presence bool) {
	sh := h.shard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	hc := sh.chans[channel]
	if hc == nil {
		return
	}
	for s := range hc.subs {
		if presence && !s.presenceEvents {
			continue
		}
		select {
		case s.queue <- ev:
		default:
			s.stop(errSlowSubscriber)
		}
	}
}

var errReset = status.Error(codes.Aborted, "the node lost continuity of this channel; resubscribe from the last position you received")

// HandleReset ends the subscribers of a channel (all channels for ""), who
// resume from their last position and learn whether anything was lost.
func (h *hub) HandleReset(channel string) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for name, hc := range sh.chans {
			if channel != "" && name != channel {
				continue
			}
			for s := range hc.subs {
				s.stop(errReset)
			}
		}
		sh.mu.RUnlock()
	}
}

// stopAll ends every subscriber with err (shutdown).
func (h *hub) stopAll(err error) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, hc := range sh.chans {
			for s := range hc.subs {
				s.stop(err)
			}
		}
		sh.mu.RUnlock()
	}
}

// channelStreams returns the number of local streams per channel.
func (h *hub) channelStreams() map[string]int {
	out := make(map[string]int)
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for name, hc := range sh.chans {
			out[name] = len(hc.subs)
		}
		sh.mu.RUnlock()
	}
	return out
}
