package wsbridge

import (
	"context"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// control keeps the bridge's control stream to the core (BridgeSession):
// it reports presence (which session is subscribed where, for namespaces
// with presence on), batched, and applies the core's Disconnect and
// Unsubscribe commands. When the stream breaks, the core forgets the
// bridge's presence; control reconnects and reports every current
// membership again.
type control struct {
	b *Bridge

	mu       sync.Mutex
	desired  map[memberKey]*heraldv1.ClientInfo // memberships that exist
	reported map[memberKey]*heraldv1.ClientInfo // what the core was told
	dirty    map[memberKey]struct{}
	kick     chan struct{}                 // capacity 1: a flush is wanted
	fwd      chan *heraldv1.SessionCommand // commands for sessions of other bridges, to send
}

// forwardQueue bounds the commands waiting to be forwarded to the core.
const forwardQueue = 256

type memberKey struct {
	channel string
	client  *session
}

func newControl(b *Bridge) *control {
	return &control{
		b:        b,
		desired:  make(map[memberKey]*heraldv1.ClientInfo),
		reported: make(map[memberKey]*heraldv1.ClientInfo),
		dirty:    make(map[memberKey]struct{}),
		kick:     make(chan struct{}, 1),
		fwd:      make(chan *heraldv1.SessionCommand, forwardQueue),
	}
}

func (s *control) wantsPresence(channel string) bool {
	ns, err := s.b.ns.lookup(channel)
	return err == nil && ns.Presence
}

// join records that c subscribed to channel, shown in its presence with
// info (nil: the session's own).
func (s *control) join(channel string, c *session, info *structpb.Value) {
	if !s.wantsPresence(channel) {
		return
	}
	ci := c.clientInfo()
	if info != nil {
		ci = &heraldv1.ClientInfo{Client: ci.Client, User: ci.User, Info: info}
	}
	k := memberKey{channel, c}
	s.mu.Lock()
	s.desired[k] = ci
	s.dirty[k] = struct{}{}
	s.mu.Unlock()
	s.wake()
}

// leave records that c left channel.
func (s *control) leave(channel string, c *session) {
	k := memberKey{channel, c}
	s.mu.Lock()
	if _, ok := s.desired[k]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.desired, k)
	s.dirty[k] = struct{}{}
	s.mu.Unlock()
	s.wake()
}

func (s *control) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// forward queues a command for a session this bridge does not hold, to be
// sent to the core on the control stream; false when too many wait.
func (s *control) forward(cmd *heraldv1.SessionCommand) bool {
	select {
	case s.fwd <- cmd:
		return true
	default:
		return false
	}
}

// maxPresenceUpdate bounds one presence update's encoded size, below
// limits.max_grpc_message (an update over it would fail the stream, and
// the same update be sent again after each reconnect).
func maxPresenceUpdate(maxGRPCMessage int) int {
	return min(maxGRPCMessage-presenceUpdateSlack, 256<<10)
}

// presenceUpdateSlack is room for the envelope of an update (the request
// and its field's tag and length).
const presenceUpdateSlack = 64

// batch returns changes not yet reported, at most limit bytes of them
// encoded, and marks them reported; what does not fit stays for the next
// batch. A change that alone is over limit (a client whose info is that
// large) is never reported: it is logged and dropped, so that it does not
// stop every other report.
func (s *control) batch(limit int) *heraldv1.PresenceUpdate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.dirty) == 0 {
		return nil
	}
	up := &heraldv1.PresenceUpdate{}
	size := 0
	for k := range s.dirty {
		want, have := s.desired[k], s.reported[k]
		var ev *heraldv1.PresenceEvent
		switch {
		case want != nil && have == nil:
			ev = &heraldv1.PresenceEvent{Channel: k.channel, Client: want}
		case want == nil && have != nil:
			ev = &heraldv1.PresenceEvent{Channel: k.channel, Client: have}
		default:
			delete(s.dirty, k)
			continue
		}
		n := protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(ev))
		if n > limit {
			s.b.log.Warn("a presence entry is too large to report to the core; it is left out of presence",
				"channel", k.channel, "client", ev.Client.GetClient(), "bytes", n, "limit", limit)
			delete(s.dirty, k)
			continue
		}
		if size+n > limit {
			break // the rest in the next update
		}
		size += n
		if want != nil {
			up.Joins = append(up.Joins, ev)
			s.reported[k] = want
		} else {
			up.Leaves = append(up.Leaves, ev)
			delete(s.reported, k)
		}
		delete(s.dirty, k)
	}
	if len(up.Joins) == 0 && len(up.Leaves) == 0 {
		return nil
	}
	return up
}

// reset forgets what the core knew (its session ended) so that every
// membership is reported again.
func (s *control) reset() {
	s.mu.Lock()
	clear(s.reported)
	for k := range s.desired {
		s.dirty[k] = struct{}{}
	}
	s.mu.Unlock()
}

// flushFinal is called at shutdown, after every session closed: the
// pending leaves are sent by run before it ends.
func (s *control) flushFinal() { s.wake() }

// run keeps the session up until ctx ends.
func (s *control) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 5*time.Second {
			backoff = 50 * time.Millisecond
		}
		s.b.log.Debug("bridge session broke; reconnecting", "err", err)
		t := time.NewTimer(backoff/2 + mrand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *control) stream(ctx context.Context) error {
	// The stream outlives ctx by a moment at shutdown so that the final
	// leaves reach the core; the core also drops everything when it ends.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// At shutdown a stream not yet open is given up at once: its core
	// may be unreachable, and the call would wait for the connection (up
	// to gRPC's 20 s connect timeout, past the shutdown's deadline). An
	// open one has a second for the final leaves, then is cut whatever it
	// is doing (a send to a core that stopped reading, say).
	var open atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		if !open.Load() {
			cancel()
			return
		}
		time.AfterFunc(time.Second, cancel)
	})
	defer stop()
	st, err := s.b.core.BridgeSession(sctx)
	if err != nil {
		return err
	}
	open.Store(true)
	s.reset()
	if err := st.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Hello{Hello: &heraldv1.BridgeHello{Bridge: s.b.id}}}); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	defer func() {
		cancel()
		<-recvDone
	}()
	go func() {
		defer close(recvDone)
		_, _ = st.Header() // the core's acceptance, watched by coreStream
		for {
			cmd, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch m := cmd.Msg.(type) {
			case *heraldv1.BridgeSessionResponse_Disconnect:
				s.b.disconnectUser(m.Disconnect)
			case *heraldv1.BridgeSessionResponse_Unsubscribe:
				s.b.unsubscribeUser(m.Unsubscribe)
			case *heraldv1.BridgeSessionResponse_Command:
				s.b.commands.deliverForwarded(m.Command)
			case *heraldv1.BridgeSessionResponse_Namespaces:
				s.b.adoptNamespaces(m.Namespaces)
			}
		}
	}()
	limit := maxPresenceUpdate(s.b.limits.MaxGRPCMessage)
	flush := func() error {
		for {
			up := s.batch(limit)
			if up == nil {
				return nil
			}
			if err := st.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: up}}); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	for {
		select {
		case <-s.kick:
			// Let a burst of joins (a reconnect storm) gather into one update.
			time.Sleep(2 * time.Millisecond)
			if err := flush(); err != nil {
				return err
			}
		case cmd := <-s.fwd:
			if err := st.Send(&heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Command{Command: cmd}}); err != nil {
				return err
			}
		case err := <-recvErr:
			return err
		case <-ctx.Done():
			_ = flush()
			_ = st.CloseSend()
			t := time.NewTimer(time.Second)
			select {
			case <-recvErr:
			case <-t.C:
			}
			t.Stop()
			return ctx.Err()
		}
	}
}
