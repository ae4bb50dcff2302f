package service

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"strconv"
	"sync"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"
)

// Pub/sub of the Redis engine. Each shard owns one go-redis PubSub (one
// connection) and two goroutines:
//
//   - syncLoop reconciles what Redis should send (channels with Subscribe
//     calls not undone) with what it was asked to: it issues one SSUBSCRIBE
//     and one SUNSUBSCRIBE per batch of changes, then a PING whose token
//     marks the batch.
//   - receiveLoop reads the connection and delivers to the Handler. A PONG
//     with token t proves that every SSUBSCRIBE sent before the PING t is in
//     effect (Redis answers in order; a reconnect resubscribes everything
//     before any later PING), so it confirms the channels of batches <= t:
//     their Subscribe calls return.
//
// When the connection fails, receiveLoop replaces the PubSub with a new one
// and marks every channel stale: once it is confirmed again, the Handler gets
// HandleReset for it, from receiveLoop, in line with the channel's
// publications, and the hub catches up from history.
type psShard struct {
	e            *redisEngine
	kick         chan struct{} // wakes syncLoop
	controlReady chan struct{} // closed when the control channel is first confirmed

	mu            sync.Mutex // guards the fields below
	ps            *redis.PubSub
	subs          map[string]*rsub // by Herald channel
	dirty         map[string]struct{}
	pending       map[string]*rsub // asked for, not yet confirmed
	seq           uint64           // last PING token
	pingAt        time.Time        // when the last unanswered PING went out
	broken        bool             // the connection failed; not yet back
	control       bool             // this shard carries the control channel
	controlAsked  bool
	controlIssued uint64
	controlLive   bool
	controlOnce   sync.Once
}

// rsub is one channel's subscription state in a shard.
type rsub struct {
	refs   int           // Subscribe calls not undone
	asked  bool          // SSUBSCRIBE issued on the current PubSub
	issued uint64        // token of the PING after that SSUBSCRIBE
	live   bool          // confirmed
	stale  bool          // was live before the connection failed
	ready  chan struct{} // closed when live
}

// pingRetry is how long syncLoop waits for a PONG before pinging again.
const pingRetry = 500 * time.Millisecond

// healthEvery is how long receiveLoop waits for traffic before it pings the
// connection; a second silent period means the connection is dead.
const healthEvery = 3 * time.Second

func newPSShard(e *redisEngine, control bool) *psShard {
	s := &psShard{
		e:            e,
		kick:         make(chan struct{}, 1),
		controlReady: make(chan struct{}),
		subs:         make(map[string]*rsub),
		dirty:        make(map[string]struct{}),
		pending:      make(map[string]*rsub),
		control:      control,
	}
	s.ps = e.client.SSubscribe(e.ctx)
	return s
}

func (e *redisEngine) shard(channel string) *psShard {
	return e.shards[maphash.String(e.seed, channel)%uint64(len(e.shards))]
}

func (s *psShard) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *psShard) close() {
	s.mu.Lock()
	ps := s.ps
	s.mu.Unlock()
	_ = ps.Close()
}

// Subscribe returns once Redis confirmed the channel's subscription on this
// node, or fails with ErrUnavailable within Timeout.
func (e *redisEngine) Subscribe(ctx context.Context, channel string) error {
	s := e.shard(channel)
	s.mu.Lock()
	r := s.subs[channel]
	if r == nil {
		r = &rsub{ready: make(chan struct{})}
		s.subs[channel] = r
	}
	r.refs++
	if r.live {
		s.mu.Unlock()
		return nil
	}
	wait := 2 * e.opts.Timeout
	if s.broken {
		// Fail sooner while the connection is known to be down.
		wait = e.opts.Timeout
	}
	s.dirty[channel] = struct{}{}
	ready := r.ready
	s.mu.Unlock()
	s.wake()
	var err error
	t := time.NewTimer(wait)
	select {
	case <-ready:
		t.Stop()
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = errors.New("subscription not confirmed in time")
	case <-e.ctx.Done():
		err = errors.New("engine closed")
	}
	t.Stop()
	_ = e.Unsubscribe(context.Background(), channel)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("redis subscribe %s: %w: %v", channel, ErrUnavailable, err)
}

func (e *redisEngine) Unsubscribe(ctx context.Context, channel string) error {
	s := e.shard(channel)
	s.mu.Lock()
	r := s.subs[channel]
	if r == nil || r.refs == 0 {
		s.mu.Unlock()
		return nil
	}
	r.refs--
	last := r.refs == 0
	if last {
		s.dirty[channel] = struct{}{}
	}
	s.mu.Unlock()
	if last {
		s.wake()
	}
	return nil
}

// subscribedChannels lists the channels this node asked to deliver.
func (e *redisEngine) subscribedChannels() []string {
	var out []string
	for _, s := range e.shards {
		s.mu.Lock()
		for ch, r := range s.subs {
			if r.refs > 0 {
				out = append(out, ch)
			}
		}
		s.mu.Unlock()
	}
	return out
}

func (s *psShard) syncLoop() {
	t := time.NewTicker(pingRetry / 5)
	defer t.Stop()
	for {
		select {
		case <-s.e.ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
		}
		s.sync()
	}
}

// sync sends the subscription changes accumulated since the last call, in
// one batch, and a PING that confirms them.
func (s *psShard) sync() {
	e := s.e
	s.mu.Lock()
	ps := s.ps
	var subs, unsubs []string
	var asked []*rsub
	for ch := range s.dirty {
		r := s.subs[ch]
		if r == nil {
			continue
		}
		switch {
		case r.refs > 0 && !r.asked:
			r.asked = true
			s.pending[ch] = r
			asked = append(asked, r)
			subs = append(subs, e.key(ch, "s"))
		case r.refs == 0:
			if r.asked {
				unsubs = append(unsubs, e.key(ch, "s"))
			}
			delete(s.subs, ch)
			delete(s.pending, ch)
		}
	}
	clear(s.dirty)
	control := s.control && !s.controlAsked
	if control {
		s.controlAsked = true
	}
	unconfirmed := len(s.pending) > 0 || s.control && !s.controlLive
	retry := pingRetry
	if s.broken {
		retry = pingRetry / 5 // probe the way back often
	}
	ping := len(subs) > 0 || control || (unconfirmed || s.broken) && time.Since(s.pingAt) >= retry
	var token uint64
	if ping {
		s.seq++
		token = s.seq
		s.pingAt = time.Now()
		for _, r := range asked {
			r.issued = token
		}
		if control {
			s.controlIssued = token
		}
	}
	s.mu.Unlock()
	if !ping && len(unsubs) == 0 {
		return
	}
	// Errors are left to the retries: go-redis keeps the channels of a
	// failed SSUBSCRIBE and subscribes them when it reconnects, and an
	// unanswered PING is sent again after pingRetry.
	ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
	defer cancel()
	if len(unsubs) > 0 {
		_ = ps.SUnsubscribe(ctx, unsubs...)
	}
	if control {
		_ = ps.Subscribe(ctx, e.control)
	}
	if len(subs) > 0 {
		_ = ps.SSubscribe(ctx, subs...)
	}
	if ping && ps.Ping(ctx, strconv.FormatUint(token, 10)) == nil {
		// The PING reached Redis on a live connection.
		s.mu.Lock()
		back := s.ps == ps && s.broken
		if s.ps == ps {
			s.broken = false
		}
		s.mu.Unlock()
		if back {
			e.refreshPresenceSoon() // Redis may have restarted empty
		}
	}
}

// pong confirms the subscriptions asked for before PING token, and resets
// the channels that were stale.
func (s *psShard) pong(token uint64) {
	s.mu.Lock()
	var reset []string
	for ch, r := range s.pending {
		if r.asked && r.issued != 0 && r.issued <= token {
			delete(s.pending, ch)
			r.live = true
			close(r.ready)
			if r.stale {
				r.stale = false
				reset = append(reset, ch)
			}
		}
	}
	if s.controlAsked && s.controlIssued != 0 && s.controlIssued <= token && !s.controlLive {
		s.controlLive = true
		s.controlOnce.Do(func() { close(s.controlReady) })
	}
	if token == s.seq {
		s.pingAt = time.Time{}
	}
	s.mu.Unlock()
	if h := s.e.handler(); h != nil {
		for _, ch := range reset {
			h.HandleReset(ch)
		}
	}
}

// replace swaps a failed PubSub for a new one: every channel must be
// subscribed again, and those that were live are stale until then.
func (s *psShard) replace() {
	s.mu.Lock()
	old := s.ps
	s.ps = s.e.client.SSubscribe(s.e.ctx)
	s.broken = true
	for ch, r := range s.subs {
		r.asked = false
		r.issued = 0
		if r.live {
			r.live = false
			r.stale = true
			r.ready = make(chan struct{})
		}
		if r.refs > 0 {
			s.dirty[ch] = struct{}{}
			delete(s.pending, ch)
		} else {
			delete(s.subs, ch)
			delete(s.pending, ch)
		}
	}
	s.controlAsked, s.controlLive, s.controlIssued = false, false, 0
	s.pingAt = time.Time{}
	s.mu.Unlock()
	_ = old.Close()
	s.wake()
}

func (s *psShard) receiveLoop() {
	e := s.e
	backoff := 50 * time.Millisecond
	silent := false // healthEvery passed without traffic, and a PING went out
	for {
		s.mu.Lock()
		ps := s.ps
		s.mu.Unlock()
		msg, err := ps.ReceiveTimeout(e.ctx, healthEvery)
		if e.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !silent {
				silent = true
				ctx, cancel := context.WithTimeout(e.ctx, e.opts.Timeout)
				err = ps.Ping(ctx, "health")
				cancel()
				if err == nil {
					continue
				}
			}
			s.mu.Lock()
			broken := s.broken
			s.mu.Unlock()
			if !broken {
				e.log.Warn("redis: pub/sub connection lost; reconnecting", "err", err)
				s.replace()
			}
			silent = false
			select {
			case <-e.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 400*time.Millisecond)
			continue
		}
		silent = false
		backoff = 50 * time.Millisecond
		s.mu.Lock()
		back := s.broken
		if s.broken {
			s.broken = false
			e.log.Info("redis: pub/sub connection back")
		}
		s.mu.Unlock()
		if back {
			e.refreshPresenceSoon() // Redis may have restarted empty
		}
		switch m := msg.(type) {
		case *redis.Message:
			s.deliver(m)
		case *redis.Pong:
			if t, err := strconv.ParseUint(m.Payload, 10, 64); err == nil {
				s.pong(t)
			}
		}
	}
}

// deliver decodes a pub/sub message and hands it to the Handler.
func (s *psShard) deliver(m *redis.Message) {
	e := s.e
	h := e.handler()
	if h == nil || m.Payload == "" {
		return
	}
	if m.Channel == e.control {
		cmd := &heraldv1.BridgeSessionResponse{}
		if err := proto.Unmarshal([]byte(m.Payload), cmd); err != nil {
			e.log.Error("redis: bad command message", "err", err)
			return
		}
		h.HandleCommand(cmd)
		return
	}
	kind, data := m.Payload[0], []byte(m.Payload[1:])
	switch kind {
	case 'p':
		pub := &heraldv1.Publication{}
		if err := proto.Unmarshal(data, pub); err != nil {
			e.log.Error("redis: bad publication message", "channel", m.Channel, "err", err)
			return
		}
		h.HandlePublication(pub)
	case 'j', 'l':
		ev := &heraldv1.PresenceEvent{}
		if err := proto.Unmarshal(data, ev); err != nil {
			e.log.Error("redis: bad presence message", "channel", m.Channel, "err", err)
			return
		}
		h.HandlePresence(ev, kind == 'j')
	}
}
