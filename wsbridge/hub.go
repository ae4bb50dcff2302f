package wsbridge

import (
	"context"
	"hash/maphash"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// hub holds the bridge's channels: per channel, one upstream Subscribe
// stream and the set of local subscribers. State lives per channel and is
// sharded by channel name; a connection holds only the names it is
// subscribed to.
type hub struct {
	b      *Bridge
	seed   maphash.Seed
	shards [32]hubShard
}

type hubShard struct {
	mu    sync.Mutex
	chans map[string]*channel
}

// channel is one channel with local subscribers. Its upstream goroutine
// (run) is the only one delivering publications, under mu, so subscribers
// see them in offset order.
type channel struct {
	h      *hub
	name   string
	ns     *config.Namespace
	cancel context.CancelFunc
	ready  chan struct{} // closed once the first upstream `subscribed` arrived, or on failure
	err    error         // why the channel failed; set before ready closes

	mu     sync.Mutex // guards below; taken after hubShard.mu, before conn.mu
	subs   map[*conn]*sub
	epoch  string // position of the last publication delivered
	last   uint64
	gen    int // bumped when continuity is lost upstream (recovered=false on resume)
	isUp   bool
	closed bool
}

// sub is one connection's subscription to a channel. Until live, the
// subscriber is catching up from history and live publications wait in
// pending (shared, encoded once).
type sub struct {
	live     bool
	pending  []*encodedPub
	overflow bool
	skip     uint64 // live publications up to this offset were replayed from history already
}

func (h *hub) init(b *Bridge) {
	h.b = b
	h.seed = maphash.MakeSeed()
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*channel)
	}
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)%uint64(len(h.shards))]
}

// join adds c to a channel's subscribers, opening the upstream stream for
// the channel's first subscriber. The subscriber starts catching up (not
// live).
func (h *hub) join(name string, ns *config.Namespace, c *conn) (*channel, *sub) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch := sh.chans[name]
	if ch == nil {
		ctx, cancel := context.WithCancel(h.b.ctx)
		ch = &channel{h: h, name: name, ns: ns, cancel: cancel, ready: make(chan struct{}), subs: make(map[*conn]*sub)}
		sh.chans[name] = ch
		h.b.nChannels.Add(1)
		h.b.wg.Add(1)
		go ch.run(ctx)
	}
	s := &sub{}
	ch.mu.Lock()
	ch.subs[c] = s
	ch.mu.Unlock()
	h.b.nSubs.Add(1)
	wsSubs[c.format].Add(1)
	return ch, s
}

// leave removes c from a channel; after the last subscriber, the upstream
// stream is closed.
func (h *hub) leave(ch *channel, c *conn) {
	sh := h.shard(ch.name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, ok := ch.subs[c]; !ok {
		return
	}
	delete(ch.subs, c)
	h.b.nSubs.Add(-1)
	wsSubs[c.format].Add(-1)
	if len(ch.subs) == 0 && !ch.closed {
		ch.closed = true
		if sh.chans[ch.name] == ch {
			delete(sh.chans, ch.name)
		}
		ch.cancel()
	}
}

// permanent reports upstream errors that retrying will not fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.Unimplemented, codes.NotFound:
		return true
	}
	return false
}

// run keeps the channel's upstream stream open until the last subscriber
// leaves, reconnecting with jittered exponential backoff and resuming from
// the last delivered position.
func (ch *channel) run(ctx context.Context) {
	b := ch.h.b
	defer b.wg.Done()
	defer b.nChannels.Add(-1)
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		delivered, err := ch.stream(ctx)
		if ctx.Err() != nil {
			ch.fail(ctx.Err())
			return
		}
		ch.mu.Lock()
		up := ch.isUp
		ch.mu.Unlock()
		if !up && permanent(err) {
			ch.fail(err)
			return
		}
		if delivered {
			backoff = minBackoff
		}
		metricUpstreamRestarts.Inc()
		b.log.Debug("upstream subscription broke; resuming", "channel", ch.name, "err", err, "in", backoff)
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			ch.fail(ctx.Err())
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// fail ends a channel that never came up: waiting subscribers get err.
func (ch *channel) fail(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.isUp {
		return
	}
	select {
	case <-ch.ready:
	default:
		ch.err = err
		close(ch.ready)
	}
}

// stream runs one upstream Subscribe stream until it breaks; delivered
// tells whether it got as far as `subscribed`.
func (ch *channel) stream(ctx context.Context) (bool, error) {
	req := &heraldv1.SubscribeRequest{
		Channel:        ch.name,
		PayloadFormat:  heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW,
		PresenceEvents: true,
	}
	ch.mu.Lock()
	resumed := ch.isUp
	if resumed && ch.ns.HistorySize > 0 {
		req.Since = &heraldv1.StreamPosition{Offset: ch.last, Epoch: ch.epoch}
	}
	ch.mu.Unlock()
	st, err := ch.h.b.core.Subscribe(ctx, req)
	if err != nil {
		return false, err
	}
	msg, err := st.Recv()
	if err != nil {
		return false, err
	}
	sd := msg.GetSubscribed()
	if sd == nil {
		return false, status.Error(codes.Internal, "upstream stream did not start with subscribed")
	}
	ch.onSubscribed(sd, resumed)
	for {
		msg, err := st.Recv()
		if err != nil {
			return true, err
		}
		switch ev := msg.Event.(type) {
		case *heraldv1.SubscribeResponse_Publication:
			ch.deliver(ev.Publication)
		case *heraldv1.SubscribeResponse_Join:
			ch.deliverPresence(ev.Join, true)
		case *heraldv1.SubscribeResponse_Leave:
			ch.deliverPresence(ev.Leave, false)
		}
	}
}

// onSubscribed starts the channel, or, on a resume the core could not
// recover, tells every live subscriber with a `subscribed` push
// (recovered=false) so that the application refetches its state.
func (ch *channel) onSubscribed(sd *heraldv1.Subscribed, resumed bool) {
	pos := sd.GetPosition()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !resumed {
		ch.epoch, ch.last = pos.GetEpoch(), pos.GetOffset()
		ch.isUp = true
		close(ch.ready)
		return
	}
	if sd.Recovered && ch.ns.HistorySize > 0 {
		return // replayed publications follow; duplicates are skipped by offset
	}
	ch.epoch, ch.last = pos.GetEpoch(), pos.GetOffset()
	ch.gen++
	var frames [2][]byte
	for c, s := range ch.subs {
		if !s.live {
			continue
		}
		f := c.format
		if frames[f] == nil {
			frames[f] = encodeFrame(f, subscribedFrame(0, ch.name, ch.epoch, ch.last, false, ch.ns.HistorySize > 0))
		}
		c.enqueue(frames[f])
	}
}

func subscribedFrame(id uint32, name, epoch string, offset uint64, recovered, recoverable bool) *heraldv1.ServerFrame {
	sf := &heraldv1.SubscribedFrame{
		Channel:     name,
		Position:    &heraldv1.StreamPosition{Offset: offset, Epoch: epoch},
		Recovered:   recovered,
		Recoverable: recoverable,
	}
	if id == 0 {
		return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Subscribed{Subscribed: sf}}
	}
	return &heraldv1.ServerFrame{Id: id, Body: &heraldv1.ServerFrame_Subscribe{Subscribe: sf}}
}

// deliver fans a publication out: encoded once per subprotocol in use, the
// same bytes queued to every live subscriber; subscribers catching up keep
// it for their merge.
func (ch *channel) deliver(pub *heraldv1.Publication) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if pub.Offset != 0 {
		if pub.Epoch == ch.epoch && pub.Offset <= ch.last {
			return // replayed by a resume: delivered already
		}
		ch.last, ch.epoch = pub.Offset, pub.Epoch
	}
	observeDelivery(pub)
	ep := &encodedPub{pub: pub}
	ch.fanout(ep)
}

// fanout queues ep to the channel's subscribers. ch.mu must be held.
func (ch *channel) fanout(ep *encodedPub) {
	limit := ch.h.b.cfg.QueueFrames
	for c, s := range ch.subs {
		if s.live {
			if s.skip != 0 {
				if ep.pub.Offset <= s.skip {
					continue
				}
				s.skip = 0
			}
			c.enqueue(ep.bytes(c.format))
			continue
		}
		if len(s.pending) >= limit {
			s.overflow = true
			continue
		}
		s.pending = append(s.pending, ep)
	}
}

// deliverPresence fans a join or leave out to live subscribers.
func (ch *channel) deliverPresence(ev *heraldv1.PresenceEvent, join bool) {
	fr := &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Leave{Leave: ev}}
	if join {
		fr = &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Join{Join: ev}}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var frames [2][]byte
	for c, s := range ch.subs {
		if !s.live {
			continue
		}
		f := c.format
		if frames[f] == nil {
			frames[f] = encodeFrame(f, fr)
		}
		c.enqueue(frames[f])
	}
}
