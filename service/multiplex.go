package service

import (
	"context"
	"errors"
	"io"
	"sync"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// SubscribeMany carries many subscriptions on one stream (a bridge holds
// one per core instead of one Subscribe stream per channel).
//
// Cost per subscription in the steady state: one hub subscriber and one
// muxSub, no goroutine and no queue of its own. Per stream: the handler
// goroutine, which waits for the end; a receiver (stream.Recv), which
// opens and closes subscriptions; a sender, which drains the stream's
// shared queue and runs every subscription's state machine; and one
// short-lived goroutine per subscribe while the subscription registers
// in the hub and reads its replay.
//
// The hub delivers to a subscription by appending to the shared queue
// (muxStream.push: a lock and an append, no allocation once the queue has
// grown). The queue is bounded: a client that falls behind has the whole
// stream ended with RESOURCE_EXHAUSTED, never blocks the hub.
//
// Lock order: hubShard.mu → muxStream.mu (the hub delivers and stops
// subscribers under its shard lock). muxSub.mu is taken alone. Nothing
// holding muxStream.mu or muxSub.mu calls into the hub.

// muxQueueFactor scales limits.subscriber_queue and
// limits.subscriber_queue_bytes to the shared queue of a SubscribeMany
// stream, which carries many channels: 4096 → 65,536 events and 4 MiB →
// 64 MiB pending at most. Memory is allocated as the queue grows, not up
// front.
const muxQueueFactor = 16

// muxPrepare bounds the subscribes of one stream being prepared at once
// (registration and history read); the receiver waits beyond it.
const muxPrepare = 64

var errSlowMux = status.Error(codes.ResourceExhausted, "too slow: the stream's queue of pending events is full (limits.subscriber_queue, limits.subscriber_queue_bytes, times 16); resubscribe every channel from the last position you received")

// muxStream is one SubscribeMany stream.
type muxStream struct {
	s          *Server
	ctx        context.Context
	limit      int           // events pending at most, queued or held
	limitBytes int           // their bytes (eventSize)
	wake       chan struct{} // capacity 1: the queue went from empty to not empty
	prep       chan struct{} // semaphore of subscribes being prepared
	held       int           // events held by subscriptions being prepared; owned by the sender
	heldBytes  int           // their bytes; owned by the sender

	mu    sync.Mutex // guards below
	queue []muxEvent
	bytes int                // of the queue's events
	subs  map[uint64]*muxSub // open subscriptions by id
	done  chan struct{}      // closed when err is set
	err   error              // why the stream ends
}

// muxKind says what a muxEvent carries.
type muxKind uint8

const (
	muxDeliver muxKind = iota // ev, from the hub
	muxReady                  // the subscription's replay is ready (or it failed: prep.err)
	muxStop                   // the hub stopped the subscription (sub.err), or it was refused
	muxUnsub                  // the client unsubscribed
)

// muxEvent is one entry of a stream's shared queue.
type muxEvent struct {
	sub  *muxSub
	ev   event
	kind muxKind
}

// muxSub is one subscription of a SubscribeMany stream.
//
// The fields are ordered so that the small ones share a word: one muxSub
// is what each channel of an idle connection costs the core.
type muxSub struct {
	sub subscriber
	id  uint64
	m   *muxStream

	mu sync.Mutex // guards closed and added

	// Owned by the sender.
	prep *muxPrep      // while preparing; the sender drops it once live
	seam recovery.Seam // once live: the last publication sent

	format heraldv1.PayloadFormat
	closed bool     // guarded by mu: no longer wanted, never (again) in the hub
	added  bool     // guarded by mu: registered in the hub
	state  muxState // owned by the sender
}

// muxPrep is what a subscription needs only while it is being prepared,
// kept apart so that a live subscription does not carry it.
type muxPrep struct {
	since *heraldv1.StreamPosition

	// Set by the preparing goroutine before it queues muxReady.
	pos       *heraldv1.StreamPosition
	replay    []*heraldv1.Publication
	recovered bool
	err       error

	held      []event // live events that came while preparing; owned by the sender
	heldBytes int
}

type muxState uint8

const (
	muxPreparing muxState = iota
	muxLive
	muxDead
)

// muxSet is the server's open SubscribeMany streams; its zero value is
// empty and ready.
type muxSet struct {
	mu sync.Mutex
	m  map[*muxStream]struct{}
}

func (ms *muxSet) add(m *muxStream) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.m == nil {
		ms.m = make(map[*muxStream]struct{})
	}
	ms.m[m] = struct{}{}
}

func (ms *muxSet) remove(m *muxStream) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	delete(ms.m, m)
}

// endAll ends every stream with err.
func (ms *muxSet) endAll(err error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for m := range ms.m {
		m.end(err)
	}
}

// SubscribeMany implements HeraldService.SubscribeMany.
func (s *Server) SubscribeMany(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]) error {
	if s.closing.Load() {
		return errShutdown
	}
	ctx := stream.Context()
	m := &muxStream{
		s:          s,
		ctx:        ctx,
		limit:      s.hub.queue * muxQueueFactor,
		limitBytes: s.hub.queueBytes * muxQueueFactor,
		wake:       make(chan struct{}, 1),
		prep:       make(chan struct{}, muxPrepare),
		subs:       make(map[uint64]*muxSub),
		done:       make(chan struct{}),
	}
	s.muxes.add(m)
	defer s.muxes.remove(m)
	if s.closing.Load() { // Close ran before add
		return errShutdown
	}
	// The receiver and the sender end once the stream's context is done,
	// which happens when this handler returns: the sender may be blocked
	// in Send on a client that does not read, so the handler cannot wait
	// for it.
	for _, loop := range []func(grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]){m.receive, m.send} {
		go func() {
			defer func() { // gRPC's recovery covers the handler's goroutine only
				if r := recover(); r != nil {
					s.log.Error("panic in a SubscribeMany stream", "panic", r)
					m.end(status.Error(codes.Internal, "internal error"))
				}
			}()
			loop(stream)
		}()
	}
	var err error
	select {
	case <-m.done:
		err = m.err
		if c := status.Code(err); c == codes.ResourceExhausted || c == codes.Unavailable {
			metricStreamEnds.WithLabelValues(endReason(err)).Inc()
		}
	case <-ctx.Done():
		err = status.FromContextError(ctx.Err()).Err()
		m.end(err)
	}
	m.closeAll()
	return err
}

// end ends the stream with err; the first error wins.
func (m *muxStream) end(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.endLocked(err)
}

// endLocked is end with m.mu held.
func (m *muxStream) endLocked(err error) {
	if m.err == nil {
		m.err = err
		close(m.done)
	}
}

// closeAll takes every subscription out of the hub once the stream ended.
func (m *muxStream) closeAll() {
	m.mu.Lock()
	subs := make([]*muxSub, 0, len(m.subs))
	for _, ms := range m.subs {
		subs = append(subs, ms)
	}
	clear(m.subs)
	m.mu.Unlock()
	for _, ms := range subs {
		ms.close()
	}
}

// push appends to the shared queue. Every kind of event counts against
// the limits (a client that subscribes and unsubscribes without reading
// fills it too); over one the whole stream ends, so no subscription is
// left waiting for a lost event. An event alone in the queue is always
// taken.
func (m *muxStream) push(e muxEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return
	}
	if len(m.queue) >= m.limit || len(m.queue) > 0 && m.bytes+int(e.ev.size) > m.limitBytes {
		m.endLocked(errSlowMux)
		m.queue, m.bytes = nil, 0
		return
	}
	m.queue = append(m.queue, e)
	m.bytes += int(e.ev.size)
	if len(m.queue) == 1 {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// deliver is the hub's delivery to a subscription (under the hub's shard
// lock): never blocks, no allocation.
func (ms *muxSub) deliver(ev event) { ms.m.push(muxEvent{sub: ms, ev: ev}) }

// stopped is the hub's stop of a subscription (sub.err is set). ABORTED
// ends that subscription only; anything else (shutdown) the whole stream.
func (ms *muxSub) stopped() {
	if status.Code(ms.sub.err) != codes.Aborted {
		ms.m.end(ms.sub.err)
		return
	}
	ms.m.push(muxEvent{sub: ms, kind: muxStop})
}

// close takes the subscription out of the hub, now or (if it is being
// registered) as soon as its registration ends. Idempotent.
func (ms *muxSub) close() {
	ms.mu.Lock()
	if ms.closed {
		ms.mu.Unlock()
		return
	}
	ms.closed = true
	added := ms.added
	ms.mu.Unlock()
	if added {
		ms.m.s.hub.remove(&ms.sub)
		metricStreams.Dec()
	}
}

// receive reads the client's requests until the stream ends. A half-close
// from the client (io.EOF) leaves the stream open: its subscriptions go on.
func (m *muxStream) receive(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]) {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return
		}
		if err != nil {
			m.end(status.Convert(err).Err())
			return
		}
		switch a := req.Action.(type) {
		case *heraldv1.SubscribeManyRequest_Subscribe:
			m.subscribe(req.Id, a.Subscribe)
		case *heraldv1.SubscribeManyRequest_Unsubscribe:
			m.unsubscribe(req.Id)
		default:
			m.refuse(req.Id, status.Error(codes.InvalidArgument, "action is required: set subscribe or unsubscribe"))
		}
	}
}

// refuse answers a subscribe or request with `ended`.
func (m *muxStream) refuse(id uint64, err error) {
	ms := &muxSub{id: id, m: m}
	ms.sub.err = err
	m.push(muxEvent{sub: ms, kind: muxStop})
}

// subscribe checks a subscribe like Subscribe does, then prepares it in a
// short-lived goroutine: registration in the hub first, then the history
// read, so nothing published in between is missed.
func (m *muxStream) subscribe(id uint64, req *heraldv1.SubscribeRequest) {
	if req == nil {
		m.refuse(id, status.Error(codes.InvalidArgument, "subscribe is empty"))
		return
	}
	ns, err := m.s.ns.Lookup(req.Channel)
	if err != nil {
		m.refuse(id, invalid(err))
		return
	}
	if err := checkSubscribe(req); err != nil {
		m.refuse(id, invalid(err))
		return
	}
	if err := authorize(m.ctx, permRead, req.Channel); err != nil {
		m.refuse(id, err)
		return
	}
	ms := &muxSub{id: id, m: m, format: req.PayloadFormat, prep: &muxPrep{since: req.Since}}
	ms.sub = subscriber{channel: req.Channel, presenceEvents: req.PresenceEvents && ns.JoinLeave, mux: ms}
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return
	}
	if _, used := m.subs[id]; used {
		m.mu.Unlock()
		m.refuse(id, status.Errorf(codes.InvalidArgument, "subscription id %d is in use on this stream", id))
		return
	}
	m.subs[id] = ms
	m.mu.Unlock()
	select {
	case m.prep <- struct{}{}:
	case <-m.done:
		ms.close()
		return
	}
	go func() {
		defer func() { <-m.prep }()
		defer func() { // gRPC's recovery covers the handler's goroutine only
			if r := recover(); r != nil {
				m.s.log.Error("panic preparing a SubscribeMany subscription", "channel", req.Channel, "panic", r)
				m.end(status.Error(codes.Internal, "internal error"))
			}
		}()
		ms.prepare()
	}()
}

// prepare registers the subscription in the hub and reads its replay,
// then queues muxReady.
func (ms *muxSub) prepare() {
	m := ms.m
	h := m.s.hub
	p := ms.prep
	if err := h.add(m.ctx, &ms.sub); err != nil {
		p.err = toStatus(m.s.log, err)
		m.push(muxEvent{sub: ms, kind: muxReady})
		return
	}
	ms.mu.Lock()
	if ms.closed {
		ms.mu.Unlock()
		h.remove(&ms.sub)
		return
	}
	ms.added = true
	ms.mu.Unlock()
	metricStreams.Inc()
	p.pos, p.replay, p.recovered, p.err = m.s.recover(m.ctx, ms.sub.channel, p.since)
	if p.err != nil {
		p.err = toStatus(m.s.log, p.err)
	}
	m.push(muxEvent{sub: ms, kind: muxReady})
}

// unsubscribe closes a subscription; the sender drops what is still
// queued for it.
func (m *muxStream) unsubscribe(id uint64) {
	m.mu.Lock()
	ms := m.subs[id]
	delete(m.subs, id)
	m.mu.Unlock()
	if ms == nil {
		return // ended already, or never was
	}
	ms.close()
	m.push(muxEvent{sub: ms, kind: muxUnsub})
}

// send drains the shared queue until the stream ends. Two slices take
// turns as the queue, so a stream in its steady state allocates none.
func (m *muxStream) send(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]) {
	var batch []muxEvent
	for {
		m.mu.Lock()
		for len(m.queue) == 0 && m.err == nil {
			m.mu.Unlock()
			select {
			case <-m.wake:
			case <-m.done:
			}
			m.mu.Lock()
		}
		if m.err != nil {
			m.mu.Unlock()
			return
		}
		batch, m.queue, m.bytes = m.queue, batch[:0], 0
		m.mu.Unlock()
		for i := range batch {
			if err := m.handle(stream, &batch[i]); err != nil {
				m.end(err)
				return
			}
			batch[i] = muxEvent{}
		}
	}
}

// handle runs one queued event through its subscription's state machine:
// preparing (live events held), live (offset filter), dead (dropped).
func (m *muxStream) handle(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse], e *muxEvent) error {
	ms := e.sub
	switch e.kind {
	case muxDeliver:
		switch ms.state {
		case muxPreparing:
			if m.held >= m.limit || m.heldBytes+int(e.ev.size) > m.limitBytes {
				return errSlowMux
			}
			ms.prep.held = append(ms.prep.held, e.ev)
			ms.prep.heldBytes += int(e.ev.size)
			m.held++
			m.heldBytes += int(e.ev.size)
		case muxLive:
			return m.forward(stream, ms, e.ev)
		}
	case muxReady:
		if ms.state != muxPreparing {
			return nil
		}
		p := ms.prep
		if p.err != nil {
			return m.ended(stream, ms, p.err)
		}
		if err := m.sendEvent(stream, ms.id, &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Subscribed{
			Subscribed: &heraldv1.Subscribed{Position: p.pos, Recovered: p.recovered},
		}}); err != nil {
			return err
		}
		for _, pub := range p.replay {
			if err := m.sendEvent(stream, ms.id, &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Publication{Publication: forFormat(pub, ms.format)}}); err != nil {
				return err
			}
		}
		ms.seam = recovery.Seam{Offset: p.pos.Offset, Epoch: p.pos.Epoch}
		ms.state, ms.prep = muxLive, nil // the preparing goroutine is done with it
		held := p.held
		m.held -= len(held)
		m.heldBytes -= p.heldBytes
		for _, ev := range held {
			if err := m.forward(stream, ms, ev); err != nil || ms.state != muxLive {
				return err
			}
		}
	case muxStop:
		if ms.state == muxDead {
			return nil
		}
		if ms.sub.channel != "" { // the hub ended it (a refused subscribe has no channel)
			metricStreamEnds.WithLabelValues(endReason(ms.sub.err)).Inc()
		}
		return m.ended(stream, ms, ms.sub.err)
	case muxUnsub:
		m.drop(ms)
	}
	return nil
}

// forward sends a live event of a live subscription, as Subscribe does
// (recovery.Seam): publications already replayed are skipped; a gap or
// another epoch ends the subscription with ABORTED.
func (m *muxStream) forward(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse], ms *muxSub, ev event) error {
	var resp *heraldv1.SubscribeResponse
	switch {
	case ev.pub != nil:
		switch ms.seam.Step(ev.pub) {
		case recovery.NewEpoch:
			return m.ended(stream, ms, errEpochChanged)
		case recovery.Duplicate:
			return nil // replayed already, or older than the subscription
		case recovery.Broken:
			return m.ended(stream, ms, errReset)
		}
		return stream.Send(newPubEvent(ms.id, forFormat(ev.pub, ms.format)))
	case ev.join:
		resp = &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Join{Join: ev.presence}}
	default:
		resp = &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Leave{Leave: ev.presence}}
	}
	return m.sendEvent(stream, ms.id, resp)
}

// pubEvent is the four messages that carry one publication on a
// SubscribeMany stream, made in one allocation instead of four: a stream
// sends one per delivery. Each is sent once and never modified after.
type pubEvent struct {
	resp  heraldv1.SubscribeManyResponse
	kind  heraldv1.SubscribeManyResponse_Event
	event heraldv1.SubscribeResponse
	pub   heraldv1.SubscribeResponse_Publication
}

// newPubEvent returns the response that sends pub to subscription id.
func newPubEvent(id uint64, pub *heraldv1.Publication) *heraldv1.SubscribeManyResponse {
	e := new(pubEvent)
	e.pub.Publication = pub
	e.event.Event = &e.pub
	e.kind.Event = &e.event
	e.resp.Id, e.resp.Kind = id, &e.kind
	return &e.resp
}

func (m *muxStream) sendEvent(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse], id uint64, ev *heraldv1.SubscribeResponse) error {
	return stream.Send(&heraldv1.SubscribeManyResponse{Id: id, Kind: &heraldv1.SubscribeManyResponse_Event{Event: ev}})
}

// ended tells the client that a subscription ended, and drops it: out of
// the stream's open subscriptions (its id is free again) and out of the
// hub.
func (m *muxStream) ended(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse], ms *muxSub, err error) error {
	m.drop(ms)
	m.mu.Lock()
	if m.subs[ms.id] == ms {
		delete(m.subs, ms.id)
	}
	m.mu.Unlock()
	ms.close()
	if errors.Is(err, context.Canceled) {
		err = status.Error(codes.Canceled, "canceled")
	}
	return stream.Send(&heraldv1.SubscribeManyResponse{Id: ms.id, Kind: &heraldv1.SubscribeManyResponse_Ended{Ended: statusError(err)}})
}

// drop marks a subscription dead for the sender: what is still queued for
// it is dropped, and what it held is released.
func (m *muxStream) drop(ms *muxSub) {
	// ms.prep stays: its preparing goroutine may still be writing to it.
	if p := ms.prep; p != nil {
		m.held -= len(p.held)
		m.heldBytes -= p.heldBytes
		p.held, p.heldBytes = nil, 0
	}
	ms.state = muxDead
}
