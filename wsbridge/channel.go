package wsbridge

import (
	"context"
	"sync"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/recovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// historyReader reads a channel's history from the core for a recovery,
// one call (bounded by callTimeout) per page.
func (b *Bridge) historyReader(channel string) recovery.Reader {
	return func(_ context.Context, after *heraldv1.StreamPosition, limit int) (recovery.Page, error) {
		ctx, cancel := b.callContext()
		defer cancel()
		res, err := b.core.History(ctx, &heraldv1.HistoryRequest{
			Channel: channel, Since: after, Limit: uint32(limit), PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW,
		})
		if status.Code(err) == codes.FailedPrecondition {
			return recovery.Page{}, recovery.ErrEpoch
		}
		if err != nil {
			return recovery.Page{}, err
		}
		return recovery.Page{Publications: res.Publications, Position: res.Position}, nil
	}
}

// channel is one channel with local subscribers: its upstream
// subscription's state and its subscribers. The upstream receiver is the
// only goroutine delivering publications, under mu, so subscribers see
// them in offset order.
//
// A subscriber joins catching up (not live): live publications wait in
// its pending list while subscribe makes it live, from now or, with a
// position to resume from, after merging what history holds with what
// waited (resume). Both happen here, under mu, so no live publication can
// come between a reply and the publications that follow it.
type channel struct {
	h    *hub
	name string
	ns   *config.Namespace
	id   uint64 // the channel's subscription id on the upstream stream
	err  error  // why the channel failed; set before ready closes

	mu sync.Mutex // guards below; taken after hubShard.mu and upstream.mu, before transport.mu
	// The subscribers: one (s1, sb1) inline, the others in subs, made on
	// the second subscriber (most channels are personal channels with a
	// single subscriber, and an empty map costs ~200 bytes).
	s1     *session
	sb1    *sub
	subs   map[*session]*sub
	ready  chan struct{} // closed once the first upstream `subscribed` arrived, or on failure, and then dropped (nil)
	epoch  string        // position of the last publication delivered
	last   uint64
	gen    uint32 // bumped when continuity is lost upstream (recovered=false on resume); compared for equality only
	isUp   bool
	closed bool
}

// sub is one session's subscription to a channel. Until live, the
// subscriber is catching up and live publications wait in pending
// (shared, encoded once).
type sub struct {
	live     bool
	pending  []*encodedPub
	overflow bool
	skip     uint64 // live publications up to this offset were replayed from history already
}

// addSubLocked adds s's subscription. ch.mu must be held.
func (ch *channel) addSubLocked(s *session, sb *sub) {
	if ch.s1 == nil && len(ch.subs) == 0 {
		ch.s1, ch.sb1 = s, sb
		return
	}
	if ch.subs == nil {
		ch.subs = make(map[*session]*sub)
	}
	ch.subs[s] = sb
}

// removeSubLocked removes s's subscription, reporting whether it had
// one. ch.mu must be held.
func (ch *channel) removeSubLocked(s *session) bool {
	if ch.s1 == s && s != nil {
		ch.s1, ch.sb1 = nil, nil
		return true
	}
	if _, ok := ch.subs[s]; !ok {
		return false
	}
	delete(ch.subs, s)
	if len(ch.subs) == 0 {
		ch.subs = nil
	}
	return true
}

// subOf returns s's subscription, or nil. ch.mu must be held.
func (ch *channel) subOf(s *session) *sub {
	if ch.s1 == s && s != nil {
		return ch.sb1
	}
	return ch.subs[s]
}

// empty reports whether the channel has no subscriber. ch.mu must be held.
func (ch *channel) empty() bool { return ch.s1 == nil && len(ch.subs) == 0 }

// each calls f for every subscriber. ch.mu must be held.
func (ch *channel) each(f func(*session, *sub)) {
	if ch.s1 != nil {
		f(ch.s1, ch.sb1)
	}
	for s, sb := range ch.subs {
		f(s, sb)
	}
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
	at := ch.position()
	var frames [numFormats][]byte
	ch.each(func(s *session, sb *sub) {
		if !sb.live {
			return
		}
		f := s.format
		if frames[f] == nil {
			frames[f] = encodeFrame(f, subscribedFrame(0, ch.name, ch.epoch, ch.last, false, ch.ns.HistorySize > 0))
		}
		s.t.enqueue(outFrame{b: frames[f], pos: at})
	})
}

// position is the channel's position as a frame's pos. ch.mu must be held.
func (ch *channel) position() *heraldv1.Publication {
	return &heraldv1.Publication{Channel: ch.name, Offset: ch.last, Epoch: ch.epoch}
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

// deliver fans a publication out: encoded once per format in use, the
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
	if age, ok := observeDelivery(pub); ok {
		ch.h.b.noteAge(age)
	}
	if s, sb := ch.s1, ch.sb1; s != nil && len(ch.subs) == 0 && sb.live && sb.skip == 0 {
		// One live subscriber (a personal channel's user): the frame is
		// encoded for it alone and nothing keeps ep, which stays on the
		// stack. The same steps as fanoutTo's for a live subscriber.
		ep := encodedPub{pub: pub, log: ch.h.b.log}
		s.t.enqueue(outFrame{b: ep.bytes(s.format), pos: pub})
		return
	}
	ch.fanout(&encodedPub{pub: pub, log: ch.h.b.log})
}

// fanout queues ep to the channel's subscribers. ch.mu must be held.
func (ch *channel) fanout(ep *encodedPub) {
	limit := ch.h.b.cfg.QueueFrames
	if ch.s1 != nil {
		fanoutTo(ch.s1, ch.sb1, ep, limit)
	}
	for s, sb := range ch.subs {
		fanoutTo(s, sb, ep, limit)
	}
}

// fanoutTo queues ep to one subscriber. Its channel's mu must be held.
func fanoutTo(s *session, sb *sub, ep *encodedPub, limit int) {
	if sb.live {
		if sb.skip != 0 {
			if ep.pub.Offset <= sb.skip {
				return
			}
			sb.skip = 0
		}
		s.t.enqueue(outFrame{b: ep.bytes(s.format), pos: ep.pub})
		return
	}
	if len(sb.pending) >= limit {
		sb.overflow = true
		return
	}
	sb.pending = append(sb.pending, ep)
}

// deliverPresence fans a join or leave out to live subscribers.
func (ch *channel) deliverPresence(ev *heraldv1.PresenceEvent, join bool) {
	fr := &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Leave{Leave: ev}}
	if join {
		fr = &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Join{Join: ev}}
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var frames [numFormats][]byte
	ch.each(func(s *session, sb *sub) {
		if !sb.live {
			return
		}
		f := s.format
		if frames[f] == nil {
			frames[f] = encodeFrame(f, fr)
		}
		s.t.send(frames[f])
	})
}

// subscribe makes s's subscription sb live once the channel is up, and
// queues the reply (id != 0) or the `subscribed` push (id 0): with since
// (and history), followed by the publications missed since then and then
// live ones, with no gap and no duplicate, or recovered=false; otherwise
// from now.
func (ch *channel) subscribe(s *session, sb *sub, id uint32, since *heraldv1.StreamPosition) error {
	if since == nil || ch.ns.HistorySize == 0 {
		ch.goLive(s, sb, id, nil, false)
		return nil
	}
	return ch.resume(s, sb, id, since)
}

// goLive makes sb live and queues the reply, then frames (replayed
// publications), under the channel's lock so that no live publication can
// come between them.
func (ch *channel) goLive(s *session, sb *sub, id uint32, frames []outFrame, recovered bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.goLiveLocked(s, sb, id, ch.last, frames, recovered)
}

// goLiveLocked is goLive at position pos, with ch.mu held. A subscription
// that did not recover starts at pos: its reply carries that position for
// transports that track positions (a recovered one advances with the
// replayed publications instead).
//
// A recovery's reply and publications answer the client's request, and
// are queued as replies (transport.enqueueReplies); if they are more than
// the connection may have queued in replies, the subscription goes live
// at pos without them, recovered=false (the client reads history in
// pages), rather than the connection being closed as a slow consumer,
// which made it reconnect and try the same recovery again.
func (ch *channel) goLiveLocked(s *session, sb *sub, id uint32, pos uint64, frames []outFrame, recovered bool) {
	sb.live, sb.pending = true, nil
	f := outFrame{b: encodeFrame(s.format, subscribedFrame(id, ch.name, ch.epoch, pos, recovered, ch.ns.HistorySize > 0))}
	if recovered {
		if ok, _ := s.t.enqueueReplies(append([]outFrame{f}, frames...)...); ok {
			return
		}
		metricRecoveriesTooBig.Inc()
		f = outFrame{b: encodeFrame(s.format, subscribedFrame(id, ch.name, ch.epoch, pos, false, ch.ns.HistorySize > 0))}
	}
	f.pos = &heraldv1.Publication{Channel: ch.name, Offset: pos, Epoch: ch.epoch}
	s.t.enqueue(f)
}

// resume makes a subscription live after since: it reads the missed
// publications from the core's History up to the channel's position
// (recovery.Recover) while live ones wait in sb.pending, then merges both
// by offset (recovery.Seam).
func (ch *channel) resume(s *session, sb *sub, id uint32, since *heraldv1.StreamPosition) error {
	ch.mu.Lock()
	epoch, last, gen := ch.epoch, ch.last, ch.gen
	ch.mu.Unlock()
	if since.Epoch != epoch || since.Offset > last {
		ch.goLive(s, sb, id, nil, false)
		return nil
	}
	b := ch.h.b
	var replay []*heraldv1.Publication
	page := min(1000, max(b.limits.MaxHistoryPage, 1))
	if since.Offset < last {
		out, _, err := recovery.Recover(context.Background(), b.historyReader(ch.name), since, last, page,
			func(pubs []*heraldv1.Publication, _ *heraldv1.StreamPosition) error {
				replay = append(replay, pubs...)
				return nil
			})
		if err != nil {
			return err
		}
		if out != recovery.Recovered {
			ch.goLive(s, sb, id, nil, false) // the epoch changed meanwhile, or the gap is older than history
			return nil
		}
	}

	ch.mu.Lock()
	defer ch.mu.Unlock()
	ok := ch.gen == gen && ch.epoch == epoch && !sb.overflow && ch.subOf(s) == sb
	// Replayed publications, then those that waited live, through the
	// seam: each once, in order, or continuity is lost.
	seam := recovery.Seam{Offset: since.Offset, Epoch: epoch}
	var frames []outFrame
	add := func(ep *encodedPub) {
		switch seam.Step(ep.pub) {
		case recovery.Next:
			frames = append(frames, outFrame{b: ep.bytes(s.format), pos: ep.pub})
		case recovery.Broken, recovery.NewEpoch:
			ok = false
		}
	}
	for _, p := range replay {
		if !ok {
			break
		}
		add(&encodedPub{pub: p, log: b.log})
	}
	for _, ep := range sb.pending {
		if !ok {
			break
		}
		add(ep)
	}
	next := seam.Offset
	// History may run ahead of what the upstream stream has delivered
	// here: those publications are skipped when they arrive live.
	pos := ch.last
	switch {
	case ok && next > ch.last:
		sb.skip, pos = next, next
	case ok && next < ch.last:
		ok = false
	}
	if !ok {
		frames = nil
	}
	ch.goLiveLocked(s, sb, id, pos, frames, ok)
	return nil
}

// closedChan is the ready channel of a channel that is up or failed.
var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()
