package wsbridge

import (
	"context"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/codename"
	"github.com/herald-io/herald/internal/inproc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// permanent reports upstream errors that retrying will not fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.Unimplemented, codes.NotFound:
		return true
	}
	return false
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
	cur     *streamRequests     // the open stream's outbound queue; nil between streams
	stopped bool                // run has returned (bridge shutdown)
}

// streamRequests is the outbound queue of one open SubscribeMany stream:
// the subscribe and unsubscribe requests its sender writes.
type streamRequests struct {
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
//
// On the in-process link of `herald serve` the core's messages come
// through inproc.Receive: handle runs on the core's sending goroutine,
// one goroutine hand-off less per publication, and RecvMsg only waits for
// the stream's end. Over a gRPC connection the option does nothing and
// the loop below receives every message and handles it; either way each
// message goes through handle, in order, one at a time.
func (u *upstream) stream(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	var delivered atomic.Bool
	st, err := u.h.b.core.SubscribeMany(ctx, inproc.Receive(func(m proto.Message) {
		if msg, ok := m.(*heraldv1.SubscribeManyResponse); ok {
			delivered.Store(true)
			u.handle(msg)
		}
	}))
	if err != nil {
		cancel()
		return false, err
	}
	cur := &streamRequests{wake: make(chan struct{}, 1)}
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
	// One response message for the stream's life, reset before each
	// receive (a receive may set only the fields a message has): what is
	// kept of each (a publication, a subscribed event) is a message of
	// its own, which a reset of msg does not touch. Recv would make one
	// per delivery.
	msg := new(heraldv1.SubscribeManyResponse)
	for {
		msg.Reset()
		if err := st.RecvMsg(msg); err != nil {
			return delivered.Load(), err
		}
		delivered.Store(true)
		u.handle(msg)
	}
}

// handle acts on one message of the upstream stream. Messages are handled
// one at a time, in the order the core sent them.
func (u *upstream) handle(msg *heraldv1.SubscribeManyResponse) {
	ch := u.lookup(msg.Id)
	if ch == nil {
		return // unsubscribed meanwhile
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

// ended handles the end of one channel's subscription on a stream that
// goes on: the channel resubscribes from its last position, unless the
// refusal is permanent and the channel never came up.
func (u *upstream) ended(ch *channel, e *heraldv1.Error) {
	err := status.Error(codename.Parse(e.Code), e.Message)
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

// sendRequests writes the stream's queued requests until ctx ends.
func (u *upstream) sendRequests(ctx context.Context, st interface {
	Send(*heraldv1.SubscribeManyRequest) error
}, cur *streamRequests) {
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
