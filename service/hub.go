package service

import (
	"context"
	"errors"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/recovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// hub holds this node's Subscribe streams by channel and fans out what the
// engine delivers to them. It never blocks on a subscriber: each has a
// bounded queue, and one that is full is cut off.
//
// Lock order: shard.mu is taken inside engine channel locks (delivery runs
// under them) and never the other way round. The hub calls into the engine
// (Subscribe, Unsubscribe, History) only without holding shard.mu.
//
// Continuity: per channel the hub remembers the last publication it fanned
// out. When the engine delivers a publication after a gap (its offset is
// beyond last+1 in the same epoch), or tells HandleReset after losing its
// connection, the hub reads what it missed from History and fans it out in
// order first, so streams continue without a seam. Only when the epoch
// changed or history no longer reaches back does it end the channel's
// streams with ABORTED (they resume with since and learn recovered=false).
type hub struct {
	seed       maphash.Seed
	shards     [64]hubShard
	engine     Engine
	queue      int // events each Subscribe stream may have pending
	queueBytes int // bytes of them (see eventSize)

	streams atomic.Int64

	// empty is the start position of a channel with no publication (an
	// epoch's offset 0), shared by every such channel in that epoch: most
	// channels are personal channels nobody published to yet, and a
	// position of their own would cost ~100 bytes each. Only its Offset
	// and Epoch are read (see hubChannel.last).
	empty atomic.Pointer[heraldv1.Publication]
}

type hubShard struct {
	mu    sync.RWMutex
	chans map[string]*hubChannel
}

// hubChannel is the set of local subscribers of one channel. subs is
// guarded by the shard's mu; ready is closed once the engine subscription
// is in place (err set before that if it failed).
type hubChannel struct {
	// The subscribers: one (s1) inline, the others in subs, made on the
	// second one (most channels are personal channels with a single
	// subscriber, and a map costs ~130 bytes).
	s1   *subscriber
	subs map[*subscriber]struct{}
	// up is set (under the shard's mu) once the engine subscription is in
	// place or failed (err set before). ready is made only for a
	// subscriber that has to wait for that, and closed then.
	up    bool
	ready chan struct{}
	err   error

	// last is the last publication fanned out, or the channel's position
	// when its engine subscription began (a Publication with only Offset
	// and Epoch set, shared by the empty channels of an epoch: see
	// hub.empty); nil while unknown. Never modified, only replaced. Only the engine's delivery
	// of this channel stores into it (deliveries of one channel are
	// sequential by the Engine contract), apart from add's one
	// CompareAndSwap from nil.
	last atomic.Pointer[heraldv1.Publication]
}

// subscriber is one Subscribe stream, or one subscription of a
// SubscribeMany stream (mux set). A Subscribe stream has its own queue and
// done channel; a SubscribeMany subscription has neither, and its events
// and its end go to its stream's shared queue (see multiplex.go).
type subscriber struct {
	channel        string
	q              *subQueue     // a Subscribe stream's (SubscribeMany's subscriptions share their stream's queue)
	done           chan struct{} // closed by stop
	err            error         // why the subscriber was stopped; set before done closes
	mux            *muxSub       // set for a SubscribeMany subscription
	once           sync.Once
	presenceEvents bool // beside once: the two share a word
}

// event is a publication or a presence event.
type event struct {
	pub      *heraldv1.Publication
	presence *heraldv1.PresenceEvent
	size     int32 // eventSize, set once per fan-out (int32 keeps event at 24 bytes)
	join     bool
}

// eventSize is what a queued event is counted as against a queue's byte
// bound: its payload and metadata, which the queue keeps alive (the
// publication itself is shared by every queue and by history), and a
// fixed cost per event.
func eventSize(ev event) int {
	const perEvent = 64
	if ev.pub == nil {
		return perEvent + proto.Size(ev.presence)
	}
	p := ev.pub
	n := perEvent + len(p.Channel) + len(p.Epoch)
	switch x := p.Payload.(type) {
	case nil:
	case *heraldv1.Publication_RawJson:
		n += len(x.RawJson)
	case *heraldv1.Publication_Binary:
		n += len(x.Binary)
	default: // any other member of the payload oneof
		m := p.ProtoReflect()
		if fd := m.WhichOneof(payloadOneof); fd != nil {
			switch v := m.Get(fd); fd.Kind() {
			case protoreflect.StringKind:
				n += len(v.String())
			case protoreflect.BytesKind:
				n += len(v.Bytes())
			case protoreflect.MessageKind:
				n += proto.Size(v.Message().Interface())
			}
		}
	}
	for k, v := range p.Tags {
		n += len(k) + len(v)
	}
	if p.Publisher != nil {
		n += proto.Size(p.Publisher)
	}
	return n
}

var payloadOneof = (&heraldv1.Publication{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")

// subQueue is a Subscribe stream's pending events: appended by the hub
// (under its shard lock: no blocking, no allocation once grown), taken in
// batches by the stream's sender. Its memory follows what is pending, not
// its bounds; once closed it holds nothing.
type subQueue struct {
	mu        sync.Mutex
	events    []event
	bytes     int
	closed    bool
	wake      chan struct{} // capacity 1: the queue went from empty to not empty
	maxEvents int           // the bounds of the queue
	maxBytes  int           //
}

func newSubQueue(maxEvents, maxBytes int) *subQueue {
	return &subQueue{wake: make(chan struct{}, 1), maxEvents: maxEvents, maxBytes: maxBytes}
}

// push appends ev unless that would take the queue beyond its maxEvents
// or maxBytes (an event alone in the queue is always taken), and reports
// whether it did; a queue that refuses an event is closed. A closed queue
// drops events and reports true.
func (q *subQueue) push(ev event) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true
	}
	if len(q.events) > 0 && (len(q.events) >= q.maxEvents || q.bytes+int(ev.size) > q.maxBytes) {
		q.closeLocked()
		return false
	}
	q.events = append(q.events, ev)
	q.bytes += int(ev.size)
	if len(q.events) == 1 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// take returns the pending events, leaving buf (emptied) as the queue,
// and waits for some if there are none; nil once the queue is closed or
// stop1 or stop2 is. Only one goroutine (the stream's sender) takes.
func (q *subQueue) take(buf []event, stop1, stop2 <-chan struct{}) []event {
	for {
		q.mu.Lock()
		switch {
		case q.closed:
			q.mu.Unlock()
			return nil
		case len(q.events) > 0:
			out := q.events
			q.events, q.bytes = buf[:0], 0
			q.mu.Unlock()
			return out
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-stop1:
			return nil
		case <-stop2:
			return nil
		}
	}
}

// close drops what is pending and every later event.
func (q *subQueue) close() {
	q.mu.Lock()
	q.closeLocked()
	q.mu.Unlock()
}

func (q *subQueue) closeLocked() { q.closed, q.events, q.bytes = true, nil, 0 }

func newHub(engine Engine, queue, queueBytes int) *hub {
	h := &hub{seed: maphash.MakeSeed(), engine: engine, queue: queue, queueBytes: queueBytes}
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
		if s.mux != nil {
			s.mux.stopped()
			return
		}
		s.q.close()
		close(s.done)
	})
}

// deliver queues ev without blocking; a subscriber that cannot take it is
// cut off (Subscribe) or ends its whole stream (SubscribeMany).
func (s *subscriber) deliver(ev event) {
	if s.mux != nil {
		s.mux.deliver(ev)
		return
	}
	if !s.q.push(ev) {
		s.stop(errSlowSubscriber)
	}
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
		hc = &hubChannel{}
		sh.chans[s.channel] = hc
	}
	hc.addLocked(s)
	var wait chan struct{}
	if !first {
		wait = hc.waitLocked()
	}
	sh.mu.Unlock()
	h.streams.Add(1)
	if first {
		h.up(ctx, s, hc)
	} else if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			h.remove(s)
			return ctx.Err()
		}
	}
	if hc.err != nil {
		h.remove(s)
		return hc.err
	}
	return nil
}

// errEngineFailed fails the subscribers of a channel whose engine
// subscription panicked.
var errEngineFailed = status.Error(codes.Internal, "internal error")

// up makes the engine deliver the channel of s, its first local
// subscriber, and tells those waiting for that. If the engine panics, the
// subscription fails (and s leaves the hub) before the panic goes on, so
// that no subscriber waits for it forever and the channel can be
// subscribed again.
func (h *hub) up(ctx context.Context, s *subscriber, hc *hubChannel) {
	sh := h.shard(s.channel)
	subscribed, done := false, false
	defer func() {
		if !done {
			hc.err = errEngineFailed
			if subscribed {
				_ = h.engine.Unsubscribe(context.Background(), s.channel)
			}
		}
		sh.mu.Lock()
		hc.up = true
		if hc.ready != nil {
			close(hc.ready)
			hc.ready = nil
		}
		sh.mu.Unlock()
		if !done {
			h.remove(s)
		}
	}()
	err := h.engine.Subscribe(ctx, s.channel)
	subscribed = err == nil
	if err == nil {
		// The position after the subscription is in place: what the
		// engine delivers next continues from it, and every subscriber
		// reads its own position after this, so none is behind it.
		if res, err := h.engine.History(ctx, s.channel, HistoryQuery{}); err == nil && res.Position != nil {
			hc.last.CompareAndSwap(nil, h.startPosition(res.Position))
		}
	}
	hc.err, done = err, true
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
	if !hc.removeLocked(s) {
		sh.mu.Unlock()
		return
	}
	last := hc.len() == 0
	var wait chan struct{}
	if last {
		delete(sh.chans, s.channel)
		wait = hc.waitLocked()
	}
	sh.mu.Unlock()
	h.streams.Add(-1)
	if last {
		if wait != nil {
			<-wait
		}
		if hc.err == nil {
			_ = h.engine.Unsubscribe(context.Background(), s.channel)
		}
	}
}

// addLocked adds a subscriber. The shard's mu must be held.
func (hc *hubChannel) addLocked(s *subscriber) {
	if hc.s1 == nil && len(hc.subs) == 0 {
		hc.s1 = s
		return
	}
	if hc.subs == nil {
		hc.subs = make(map[*subscriber]struct{})
	}
	hc.subs[s] = struct{}{}
}

// removeLocked removes a subscriber, reporting whether it was there. The
// shard's mu must be held.
func (hc *hubChannel) removeLocked(s *subscriber) bool {
	if hc.s1 == s {
		hc.s1 = nil
		return true
	}
	if _, ok := hc.subs[s]; !ok {
		return false
	}
	delete(hc.subs, s)
	if len(hc.subs) == 0 {
		hc.subs = nil
	}
	return true
}

// waitLocked returns a channel closed once the engine subscription is
// in place (or failed), or nil if it is already. The shard's mu must be
// held; the first subscriber, which subscribes, must not wait.
func (hc *hubChannel) waitLocked() chan struct{} {
	if hc.up {
		return nil
	}
	if hc.ready == nil {
		hc.ready = make(chan struct{})
	}
	return hc.ready
}

// len returns the number of subscribers. The shard's mu must be held.
func (hc *hubChannel) len() int {
	n := len(hc.subs)
	if hc.s1 != nil {
		n++
	}
	return n
}

// stopAll stops every subscriber with err. The shard's mu must be held.
func (hc *hubChannel) stopAll(err error) {
	if hc.s1 != nil {
		hc.s1.stop(err)
	}
	for s := range hc.subs {
		s.stop(err)
	}
}

var errSlowSubscriber = status.Error(codes.ResourceExhausted, "subscriber too slow: its queue of pending events is full (limits.subscriber_queue, limits.subscriber_queue_bytes); resubscribe from the last position you received")

// startPosition is the position a channel's engine subscription began at,
// as hubChannel.last holds it.
func (h *hub) startPosition(pos *heraldv1.StreamPosition) *heraldv1.Publication {
	if pos.Offset != 0 {
		return positionPub("", pos)
	}
	if e := h.empty.Load(); e != nil && e.Epoch == pos.Epoch {
		return e
	}
	e := positionPub("", pos)
	h.empty.Store(e)
	return e
}

// positionPub stands for a position where the hub remembers the last
// publication of a channel.
func positionPub(channel string, pos *heraldv1.StreamPosition) *heraldv1.Publication {
	return &heraldv1.Publication{Channel: channel, Offset: pos.Offset, Epoch: pos.Epoch}
}

// HandlePublication fans a publication out to the channel's subscribers.
// The next publication of the last one fanned out takes the fast path: one
// compare, no lock beyond the shard's read lock, no allocation. Anything
// else is a duplicate (dropped) or follows a gap (see catchUp).
func (h *hub) HandlePublication(pub *heraldv1.Publication) {
	sh := h.shard(pub.Channel)
	sh.mu.RLock()
	hc := sh.chans[pub.Channel]
	if hc == nil {
		sh.mu.RUnlock()
		return
	}
	last := hc.last.Load()
	if last == nil || pub.Epoch == last.Epoch && pub.Offset == last.Offset+1 {
		hc.last.Store(pub)
		hc.send(event{pub: pub}, false)
		sh.mu.RUnlock()
		return
	}
	sh.mu.RUnlock()
	if pub.Epoch == last.Epoch && pub.Offset <= last.Offset {
		return // fanned out already (by a catch-up from history)
	}
	h.catchUp(pub.Channel, hc, pub)
}

// catchUpTimeout bounds the history reads of one catch-up.
const catchUpTimeout = 3 * time.Second

var errEpochChanged = status.Error(codes.Aborted, "the channel's epoch changed (history was lost); resubscribe from the last position you received")

// catchUp restores a channel's continuity after a gap in the engine's
// deliveries (pub is what came after the gap) or a reset (pub is nil): it
// reads what this node missed from history and fans it out in order. When
// the epoch changed, or history no longer reaches back to the last
// publication fanned out, or history cannot be read, it ends the channel's
// streams with ABORTED instead.
//
// It runs within the engine's delivery of the channel and may block on a
// history read: engines whose deliveries can have gaps (Redis) allow that
// from their delivery goroutines. The memory engine never has gaps.
func (h *hub) catchUp(channel string, hc *hubChannel, pub *heraldv1.Publication) {
	sh := h.shard(channel)
	last := hc.last.Load()
	if last == nil && pub == nil {
		h.abort(channel, hc, errReset, nil)
		return
	}
	if last == nil || pub != nil && pub.Epoch != last.Epoch {
		// Nothing to catch up from, or a new epoch: streams in another
		// epoch end themselves (ABORTED) when they see it, those that
		// already resumed in it carry on.
		hc.last.Store(pub)
		sh.mu.RLock()
		hc.send(event{pub: pub}, false)
		sh.mu.RUnlock()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), catchUpTimeout)
	defer cancel()
	since := &heraldv1.StreamPosition{Offset: last.Offset, Epoch: last.Epoch}
	out, pos, err := recovery.Recover(ctx, historyReader(h.engine, channel), since, 0, recoverPage,
		func(pubs []*heraldv1.Publication, pos *heraldv1.StreamPosition) error {
			if pub != nil && pos.Offset < pub.Offset {
				return errHistoryBehind
			}
			sh.mu.RLock()
			for _, p := range pubs {
				hc.last.Store(p)
				hc.send(event{pub: p}, false)
			}
			sh.mu.RUnlock()
			return nil
		})
	switch {
	case errors.Is(err, errHistoryBehind):
		h.abort(channel, hc, errReset, pub) // history is behind what was delivered (a lagging replica?)
	case err != nil:
		h.abort(channel, hc, errReset, nil)
	case out == recovery.EpochChanged && pos != nil:
		h.abort(channel, hc, errEpochChanged, positionPub(channel, pos))
	case out == recovery.EpochChanged:
		h.abort(channel, hc, errReset, nil)
	case out == recovery.Gap:
		h.abort(channel, hc, errReset, positionPub(channel, pos))
	case pub != nil && pos.Offset < pub.Offset:
		h.abort(channel, hc, errReset, pub) // nothing missed, but history is behind what was delivered
	}
	// Recovered (or Beyond: this node is ahead of history): nothing more.
}

// errHistoryBehind ends a catch-up whose history is behind the
// publication that revealed the gap.
var errHistoryBehind = errors.New("history is behind the deliveries")

// abort ends the streams of a channel with err, and remembers last (nil:
// unknown) as the position that later deliveries continue from.
func (h *hub) abort(channel string, hc *hubChannel, err error, last *heraldv1.Publication) {
	hc.last.Store(last)
	sh := h.shard(channel)
	sh.mu.RLock()
	hc.stopAll(err)
	sh.mu.RUnlock()
}

// HandlePresence fans a join or leave out to subscribers that want them.
func (h *hub) HandlePresence(ev *heraldv1.PresenceEvent, join bool) {
	h.fanout(ev.Channel, event{presence: ev, join: join}, true)
}

func (h *hub) fanout(channel string, ev event, presence bool) {
	sh := h.shard(channel)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if hc := sh.chans[channel]; hc != nil {
		hc.send(ev, presence)
	}
}

// send queues ev to the channel's subscribers (presence events only to
// those that asked), cutting off any whose queue is full. The shard's mu
// must be held (read).
func (hc *hubChannel) send(ev event, presence bool) {
	ev.size = int32(min(eventSize(ev), math.MaxInt32))
	if s := hc.s1; s != nil && (!presence || s.presenceEvents) {
		s.deliver(ev)
	}
	for s := range hc.subs {
		if presence && !s.presenceEvents {
			continue
		}
		s.deliver(ev)
	}
}

var errReset = status.Error(codes.Aborted, "the node lost continuity of this channel; resubscribe from the last position you received")

// HandleReset catches a channel (every channel for "") up from history
// after the engine lost continuity; see catchUp. Like HandlePublication it
// must run within the engine's delivery of the channel ("" within all of
// them), since it fans out.
func (h *hub) HandleReset(channel string) {
	if channel != "" {
		sh := h.shard(channel)
		sh.mu.RLock()
		hc := sh.chans[channel]
		sh.mu.RUnlock()
		if hc != nil {
			h.catchUp(channel, hc, nil)
		}
		return
	}
	type named struct {
		name string
		hc   *hubChannel
	}
	var all []named
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for name, hc := range sh.chans {
			all = append(all, named{name, hc})
		}
		sh.mu.RUnlock()
	}
	for _, c := range all {
		h.catchUp(c.name, c.hc, nil)
	}
}

// stopAll ends every subscriber with err (shutdown).
func (h *hub) stopAll(err error) {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, hc := range sh.chans {
			hc.stopAll(err)
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
			out[name] = hc.len()
		}
		sh.mu.RUnlock()
	}
	return out
}
