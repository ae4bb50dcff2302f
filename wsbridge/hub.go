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

// hub holds the bridge's channels: per channel, one upstream subscription
// and the set of local subscribers. State lives per channel and is sharded
// by channel name; a connection holds only the names it is subscribed to.
// Every channel's upstream subscription rides the bridge's one
// SubscribeMany stream (upstream).
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

// channel is one channel with local subscribers. The upstream receiver is
// the only goroutine delivering publications, under mu, so subscribers see
// them in offset order.
type channel struct {
	h    *hub
	name string
	ns   *config.Namespace
	id   uint64 // the channel's subscription id on the upstream stream
	err  error  // why the channel failed; set before ready closes

	mu sync.Mutex // guards below; taken after hubShard.mu and upstream.mu, before conn.mu
	// The subscribers: one (c1, s1) inline, the others in subs, made on
	// the second subscriber (most channels are personal channels with a
	// single subscriber, and an empty map costs ~200 bytes).
	c1     *conn
	s1     *sub
	subs   map[*conn]*sub
	ready  chan struct{} // closed once the first upstream `subscribed` arrived, or on failure, and then dropped (nil)
	epoch  string        // position of the last publication delivered
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
	h.up.init(h)
	b.goFunc(h.up.run)
}

func (h *hub) shard(name string) *hubShard {
	return &h.shards[maphash.String(h.seed, name)%uint64(len(h.shards))]
}

// closedChan is the ready channel of a channel that is up or failed.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// join adds c to a channel's subscribers, subscribing upstream for the
// channel's first subscriber. The subscriber starts catching up (not
// live). ready is closed once the channel is up or failed (ch.err).
func (h *hub) join(name string, ns *config.Namespace, c *conn) (ch *channel, s *sub, ready <-chan struct{}) {
	sh := h.shard(name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch = sh.chans[name]
	if ch == nil {
		ch = &channel{h: h, name: name, ns: ns, ready: make(chan struct{})}
		sh.chans[name] = ch
		h.up.add(ch)
	}
	s = &sub{}
	ch.mu.Lock()
	ch.addSubLocked(c, s)
	ready = ch.ready
	if ready == nil {
		ready = closedChan
	}
	ch.mu.Unlock()
	h.b.nSubs.Add(1)
	wsSubs[c.format].Add(1)
	return ch, s, ready
}

// leave removes c from a channel; after the last subscriber, the upstream
// subscription is closed.
func (h *hub) leave(ch *channel, c *conn) {
	sh := h.shard(ch.name)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ch.mu.Lock()
	if !ch.removeSubLocked(c) {
		ch.mu.Unlock()
		return
	}
	h.b.nSubs.Add(-1)
	wsSubs[c.format].Add(-1)
	last := ch.c1 == nil && len(ch.subs) == 0 && !ch.closed
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

// addSubLocked adds c's subscription. ch.mu must be held.
func (ch *channel) addSubLocked(c *conn, s *sub) {
	if ch.c1 == nil && len(ch.subs) == 0 {
		ch.c1, ch.s1 = c, s
		return
	}
	if ch.subs == nil {
		ch.subs = make(map[*conn]*sub)
	}
	ch.subs[c] = s
}

// removeSubLocked removes c's subscription, reporting whether it had
// one. ch.mu must be held.
func (ch *channel) removeSubLocked(c *conn) bool {
	if ch.c1 == c && c != nil {
		ch.c1, ch.s1 = nil, nil
		return true
	}
	if _, ok := ch.subs[c]; !ok {
		return false
	}
	delete(ch.subs, c)
	if len(ch.subs) == 0 {
		ch.subs = nil
	}
	return true
}

// subOf returns c's subscription, or nil. ch.mu must be held.
func (ch *channel) subOf(c *conn) *sub {
	if ch.c1 == c && c != nil {
		return ch.s1
	}
	return ch.subs[c]
}

// permanent reports upstream errors that retrying will not fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.Unimplemented, codes.NotFound:
		return true
	}
	return false
}

// fail ends a channel that never came up: waiting subscribers get err.
func (ch *channel) fail(err error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.failLocked(err)
}

// failLocked is fail with ch.mu held.
func (ch *channel) failLocked(err error) {
	if ch.isUp || ch.ready == nil {
		return
	}
	ch.err = err
	close(ch.ready)
	ch.ready = nil
}

// subscribeRequest is the channel's upstream subscribe: from the last
// delivered position once the channel is up (and keeps history), so that
// a resume has no gap and no duplicate.
func (ch *channel) subscribeRequest() *heraldv1.SubscribeManyRequest {
	req := &heraldv1.SubscribeRequest{
		Channel:        ch.name,
		PayloadFormat:  heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW,
		PresenceEvents: true,
	}
	ch.mu.Lock()
	if ch.isUp && ch.ns.HistorySize > 0 {
		req.Since = &heraldv1.StreamPosition{Offset: ch.last, Epoch: ch.epoch}
	}
	ch.mu.Unlock()
	return &heraldv1.SubscribeManyRequest{Id: ch.id, Action: &heraldv1.SubscribeManyRequest_Subscribe{Subscribe: req}}
}

// onSubscribed starts the channel, or, on a resume the core could not
// recover, tells every live subscriber with a `subscribed` push
// (recovered=false) so that the application refetches its state.
func (ch *channel) onSubscribed(sd *heraldv1.Subscribed) {
	pos := sd.GetPosition()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.isUp {
		if ch.ready == nil {
			return // failed or left already
		}
		ch.epoch, ch.last = pos.GetEpoch(), pos.GetOffset()
		ch.isUp = true
		close(ch.ready)
		ch.ready = nil
		return
	}
	if sd.Recovered && ch.ns.HistorySize > 0 {
		return // replayed publications follow; duplicates are skipped by offset
	}
	ch.epoch, ch.last = pos.GetEpoch(), pos.GetOffset()
	ch.gen++
	var frames [2][]byte
	send := func(c *conn, s *sub) {
		if !s.live {
			return
		}
		f := c.format
		if frames[f] == nil {
			frames[f] = encodeFrame(f, subscribedFrame(0, ch.name, ch.epoch, ch.last, false, ch.ns.HistorySize > 0))
		}
		c.enqueue(frames[f])
	}
	if ch.c1 != nil {
		send(ch.c1, ch.s1)
	}
	for c, s := range ch.subs {
		send(c, s)
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
	ep := &encodedPub{pub: pub, log: ch.h.b.log}
	ch.fanout(ep)
}

// fanout queues ep to the channel's subscribers. ch.mu must be held.
func (ch *channel) fanout(ep *encodedPub) {
	limit := ch.h.b.cfg.QueueFrames
	if ch.c1 != nil {
		fanoutTo(ch.c1, ch.s1, ep, limit)
	}
	for c, s := range ch.subs {
		fanoutTo(c, s, ep, limit)
	}
}

// fanoutTo queues ep to one subscriber. Its channel's mu must be held.
func fanoutTo(c *conn, s *sub, ep *encodedPub, limit int) {
	if s.live {
		if s.skip != 0 {
			if ep.pub.Offset <= s.skip {
				return
			}
			s.skip = 0
		}
		c.enqueue(ep.bytes(c.format))
		return
	}
	if len(s.pending) >= limit {
		s.overflow = true
		return
	}
	s.pending = append(s.pending, ep)
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
	send := func(c *conn, s *sub) {
		if !s.live {
			return
		}
		f := c.format
		if frames[f] == nil {
			frames[f] = encodeFrame(f, fr)
		}
		c.enqueue(frames[f])
	}
	if ch.c1 != nil {
		send(ch.c1, ch.s1)
	}
	for c, s := range ch.subs {
		send(c, s)
	}
}

// upstream is the bridge's one SubscribeMany stream to the core, carrying
// the upstream subscription of every channel (by the channel's id). One
// goroutine (run) keeps the stream open and receives on it; a second
// (sendRequests) exists while a stream is open and writes the subscribe
// and unsubscribe requests queued for it, so that join and leave never
// wait on the network. When the stream breaks, run reopens it with
// jittered exponential backoff and resubscribes every channel from the
// last position it delivered.
type upstream struct {
	h    *hub
	wake chan struct{} // capacity 1: a channel was added (run waits for the first)

	mu      sync.Mutex // guards below; taken after hubShard.mu, before channel.mu
	nextID  uint64
	chans   map[uint64]*channel // channels with an upstream subscription, by id
	cur     *upStream           // the open stream; nil between streams
	stopped bool                // run has returned (bridge shutdown)
}

// upStream is one SubscribeMany stream's outbound queue.
type upStream struct {
	queue []*heraldv1.SubscribeManyRequest // guarded by upstream.mu
	wake  chan struct{}                    // capacity 1: queue became non-empty
}

func (u *upstream) init(h *hub) {
	u.h = h
	u.wake = make(chan struct{}, 1)
	u.chans = make(map[uint64]*channel)
}

// add gives ch an id and subscribes it upstream (now, or when the next
// stream opens). The hub shard's mu is held.
func (u *upstream) add(ch *channel) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped {
		ch.fail(context.Canceled)
		return
	}
	u.nextID++
	ch.id = u.nextID
	u.chans[ch.id] = ch
	u.h.b.nChannels.Add(1)
	u.queueLocked(ch.subscribeRequest())
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// remove unsubscribes ch upstream, if it is still subscribed.
func (u *upstream) remove(ch *channel) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.chans[ch.id] != ch {
		return
	}
	delete(u.chans, ch.id)
	u.h.b.nChannels.Add(-1)
	u.queueLocked(&heraldv1.SubscribeManyRequest{Id: ch.id, Action: &heraldv1.SubscribeManyRequest_Unsubscribe{Unsubscribe: &heraldv1.SubscribeManyUnsubscribe{}}})
}

// drop forgets a channel that failed for good.
func (u *upstream) drop(ch *channel) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.chans[ch.id] == ch {
		delete(u.chans, ch.id)
		u.h.b.nChannels.Add(-1)
	}
}

// lookup returns the channel subscribed with id, or nil.
func (u *upstream) lookup(id uint64) *channel {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.chans[id]
}

// resubscribe subscribes ch again on the open stream, after the core ended
// its subscription.
func (u *upstream) resubscribe(ch *channel) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.chans[ch.id] == ch {
		u.queueLocked(ch.subscribeRequest())
	}
}

// queueLocked queues a request on the open stream; with none open, it is
// dropped (the next stream subscribes every channel anew). u.mu must be
// held.
func (u *upstream) queueLocked(req *heraldv1.SubscribeManyRequest) {
	cur := u.cur
	if cur == nil {
		return
	}
	cur.queue = append(cur.queue, req)
	if len(cur.queue) == 1 {
		select {
		case cur.wake <- struct{}{}:
		default:
		}
	}
}

// run keeps the upstream stream open until the bridge shuts down, from the
// first channel on.
func (u *upstream) run() {
	b := u.h.b
	ctx := b.ctx
	defer func() {
		u.mu.Lock()
		u.stopped = true
		u.mu.Unlock()
		u.failPending(context.Canceled)
	}()
	for {
		u.mu.Lock()
		n := len(u.chans)
		u.mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-u.wake:
		}
	}
	const minBackoff, maxBackoff = 50 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for {
		delivered, err := u.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if permanent(err) {
			// Nothing retrying soon would fix (a wrong API key, a core
			// without SubscribeMany): channels that are not up yet fail,
			// so that their subscribers hear it; the stream is retried
			// with backoff for the others and for later ones.
			u.failPending(err)
		}
		if delivered {
			backoff = minBackoff
		}
		metricUpstreamRestarts.Inc()
		b.log.Debug("upstream stream broke; resuming every channel", "err", err, "in", backoff)
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// failPending fails the channels that never came up, and forgets them:
// their waiting subscribers get err and leave.
func (u *upstream) failPending(err error) {
	u.mu.Lock()
	chans := make([]*channel, 0, len(u.chans))
	for _, ch := range u.chans {
		chans = append(chans, ch)
	}
	u.mu.Unlock()
	for _, ch := range chans {
		ch.mu.Lock()
		up := ch.isUp
		ch.failLocked(err)
		ch.mu.Unlock()
		if !up {
			u.drop(ch)
		}
	}
}

// stream runs one SubscribeMany stream until it breaks; delivered tells
// whether anything arrived on it.
func (u *upstream) stream(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	st, err := u.h.b.core.SubscribeMany(ctx)
	if err != nil {
		cancel()
		return false, err
	}
	cur := &upStream{wake: make(chan struct{}, 1)}
	u.mu.Lock()
	for _, ch := range u.chans {
		cur.queue = append(cur.queue, ch.subscribeRequest())
	}
	u.cur = cur
	u.mu.Unlock()
	select {
	case cur.wake <- struct{}{}:
	default:
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		u.sendRequests(ctx, st, cur)
	}()
	defer func() {
		u.mu.Lock()
		u.cur = nil
		u.mu.Unlock()
		cancel()
		<-sent
	}()
	delivered := false
	for {
		msg, err := st.Recv()
		if err != nil {
			return delivered, err
		}
		delivered = true
		ch := u.lookup(msg.Id)
		if ch == nil {
			continue // unsubscribed meanwhile
		}
		switch k := msg.Kind.(type) {
		case *heraldv1.SubscribeManyResponse_Event:
			switch ev := k.Event.Event.(type) {
			case *heraldv1.SubscribeResponse_Subscribed:
				ch.onSubscribed(ev.Subscribed)
			case *heraldv1.SubscribeResponse_Publication:
				ch.deliver(ev.Publication)
			case *heraldv1.SubscribeResponse_Join:
				ch.deliverPresence(ev.Join, true)
			case *heraldv1.SubscribeResponse_Leave:
				ch.deliverPresence(ev.Leave, false)
			}
		case *heraldv1.SubscribeManyResponse_Ended:
			u.ended(ch, k.Ended)
		}
	}
}

// ended handles the end of one channel's subscription on a stream that
// goes on: the channel resubscribes from its last position, unless the
// refusal is permanent and the channel never came up.
func (u *upstream) ended(ch *channel, e *heraldv1.Error) {
	err := status.Error(codeOf(e.Code), e.Message)
	ch.mu.Lock()
	up := ch.isUp
	ch.mu.Unlock()
	if !up && permanent(err) {
		ch.fail(err)
		u.drop(ch)
		return
	}
	metricUpstreamRestarts.Inc()
	u.h.b.log.Debug("upstream subscription ended; resuming", "channel", ch.name, "err", err)
	if status.Code(err) == codes.Aborted {
		u.resubscribe(ch) // continuity lost: resume from the last position at once
		return
	}
	// Anything else (the engine unavailable, a refusal of a channel that
	// was up) is retried after a pause, so that a failing core is not
	// asked in a tight loop.
	time.AfterFunc(resubscribeDelay/2+mrand.N(resubscribeDelay/2+1), func() { u.resubscribe(ch) })
}

// resubscribeDelay is the mean pause before a channel whose upstream
// subscription the core refused is subscribed again.
const resubscribeDelay = time.Second

// codeOf maps the lower snake case code name of an Error to its code.
func codeOf(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if snake(c.String()) == name {
			return c
		}
	}
	return codes.Unknown
}

// snake turns a code's CamelCase name into lower snake case.
func snake(s string) string {
	out := make([]byte, 0, len(s)+4)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			if i > 0 {
				out = append(out, '_')
			}
			c += 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}

// sendRequests writes the stream's queued requests until ctx ends.
func (u *upstream) sendRequests(ctx context.Context, st interface {
	Send(*heraldv1.SubscribeManyRequest) error
}, cur *upStream) {
	var batch []*heraldv1.SubscribeManyRequest
	for {
		select {
		case <-ctx.Done():
			return
		case <-cur.wake:
		}
		u.mu.Lock()
		batch, cur.queue = cur.queue, batch[:0]
		u.mu.Unlock()
		for i, req := range batch {
			if err := st.Send(req); err != nil {
				return // the receiver sees the stream break
			}
			batch[i] = nil
		}
	}
}
