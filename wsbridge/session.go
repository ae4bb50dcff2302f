package wsbridge

import (
	"context"
	"errors"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// session is one client's protocol session: who it is, what it is
// subscribed to, its limits and token expiry, and the handling of its
// requests. It knows nothing of how its frames travel: it queues encoded
// frames to its transport and asks it to close with a code.
//
// Requests are handled one message at a time: by the WebSocket reader's
// handler goroutine, or by the command queue's worker for unidirectional
// sessions (command.go). That code owns the request state below; the
// fan-out reads only format and t.
type session struct {
	b  *Bridge
	t  *transport
	id string

	// Set at connect; read by other goroutines only after authed is true
	// (user never changes after that). info is built by clientInfo on the
	// first subscription to a presence namespace.
	user      string
	info      *heraldv1.ClientInfo
	userAdded bool
	format    format // t.format, kept here for the fan-out
	badCount  uint8  // request state (below); a session closes at 17
	hbSlot    uint8  // picks the session's part of its shard in the heartbeat (heartbeatSlot)
	authed    atomic.Bool
	expGen    uint32 // guarded by subMu: bumped whenever the expiry is armed again
	strikes   int32  // request state (below)

	// Request state. The request rate limit is a token bucket in the
	// session (allowRequest): tokens at tokensAt (monoNow).
	creds    *credentials // what the client presented; dropped after connect
	ident    *identity
	tokens   float64
	tokensAt int64

	cmds   *commandQueue // unidirectional sessions: commands POSTed to them
	remote string        // the TCP peer's address, for hooks (kept only when they are configured)

	subMu sync.Mutex
	subs  []*channel // channels this session is subscribed to; few, so a slice (a map costs ~250 bytes)

	// The session's place in the bridge's expiries (expiry.go), guarded
	// by its mu: the deadline (monoNow), the identity that expires then
	// and the expGen it was armed with, and the index in the heap plus
	// one (0: no deadline queued).
	expAt     int64
	expID     *identity
	expIdx    int32
	expArmGen uint32
}

func newSession(b *Bridge, t *transport, creds *credentials) *session {
	s := &session{b: b, t: t, format: t.format, id: randomID(8), creds: creds, hbSlot: uint8(mrand.Uint32())}
	t.s = s
	return s
}

// send encodes and queues a reply or push.
func (s *session) send(fr *heraldv1.ServerFrame) { s.t.send(encodeFrame(s.format, fr)) }

func (s *session) sendError(id uint32, e *requestError) { s.send(errorFrame(id, e)) }

// closeWith closes the session: a DisconnectFrame is queued after what is
// queued already (a slow consumer's queue is dropped), then the transport
// ends its stream with code. The connection is cut closeGrace later
// whether or not the client completed the close. Only the first call
// counts.
func (s *session) closeWith(code CloseCode, reason string, reconnect bool, delayMs uint32) {
	reason = validUTF8(reason)
	final := encodeFrame(s.format, &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Disconnect{
		Disconnect: &heraldv1.DisconnectFrame{Code: uint32(code), Reason: reason, Reconnect: reconnect, ReconnectDelayMs: delayMs},
	}})
	if !s.t.close(code, reason, final, reconnect, delayMs) {
		return
	}
	s.onClose(code, reason)
	time.AfterFunc(closeGrace, s.t.kill)
}

// closed reports whether the session is closing (no more frames go out).
func (s *session) closed() bool { return s.t.isClosing() }

// start registers the session; its transport calls it before the first
// frame, from the goroutine that will read or wait for the connection.
func (s *session) start() {
	s.b.register(s)
	if s.b.closing.Load() {
		s.closeWith(CloseShutdown, "server shutting down; reconnect", true, 1000)
	}
}

// ended releases everything of a session whose connection is gone. Its
// transport calls it once, when it has stopped reading.
func (s *session) ended() {
	s.t.kill()
	if s.cmds != nil {
		s.cmds.stop() // no request of this session runs beside its cleanup
	}
	s.subMu.Lock()
	subs := s.subs
	s.subs = nil
	s.b.exp.cancel(s)
	s.subMu.Unlock()
	for _, ch := range subs {
		s.b.hub.leave(ch, s)
		s.b.control.leave(ch.name, s)
	}
	s.b.unregister(s)
}

// process handles one client message in a goroutine of its own, and waits
// for it. Connect (JWT verification) and requests (protojson, calls to the
// core) need deep stacks; grown in a long-lived reader, a stack stays
// grown for the connection's life, and because Go starts new goroutines
// with the average stack size seen at the last GC, every new reader and
// writer would start bigger too. Client messages are rare next to
// deliveries, so a goroutine each costs little.
func (s *session) process(msg []byte) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.handleMessage(msg)
	}()
	<-done
}

// handleMessage decodes one client message (several frames may be packed
// in it) and handles its frames in order.
func (s *session) handleMessage(msg []byte) { decodeFrames(s.format, msg, s.handle) }

// handle processes one decoded frame (or decoding error); it returns false
// to stop processing the rest of the message.
func (s *session) handle(fr *heraldv1.ClientFrame, derr *requestError) bool {
	if s.closed() {
		return false
	}
	if derr != nil {
		var id uint32
		if fr != nil {
			id = fr.Id
		}
		if !s.authed.Load() {
			s.closeWith(CloseBadFrame, derr.msg, false, 0)
			return false
		}
		s.badCount++
		if s.badCount > 16 {
			s.closeWith(CloseBadFrame, "too many malformed frames", false, 0)
			return false
		}
		s.sendError(id, derr)
		return true
	}
	if !s.authed.Load() {
		cf, ok := fr.Body.(*heraldv1.ClientFrame_Connect)
		if !ok {
			s.closeWith(CloseBadFrame, "the first frame must be connect", false, 0)
			return false
		}
		return s.connect(fr.Id, cf.Connect, nil)
	}
	if !s.allowRequest() {
		s.strikes++
		if int(s.strikes) > 4*int(max(s.b.cfg.RequestRate, 1)) {
			s.closeWith(CloseRateLimited, "request rate limit exceeded repeatedly", true, 1000)
			return false
		}
		metricRateLimited.WithLabelValues("request_rate").Inc()
		s.sendError(fr.Id, reqErr(ErrRateLimited, "too many requests: the limit is %g per second", s.b.cfg.RequestRate))
		return true
	}
	s.strikes = 0
	var (
		reply *heraldv1.ServerFrame
		err   error
	)
	switch body := fr.Body.(type) {
	case *heraldv1.ClientFrame_Connect:
		err = reqErr(ErrAlreadyConnected, "already connected")
	case *heraldv1.ClientFrame_Refresh:
		reply, err = s.refresh(body.Refresh)
	case *heraldv1.ClientFrame_Subscribe:
		// The reply is queued by subscribe itself, in order with the
		// replayed publications.
		err = s.subscribe(fr.Id, body.Subscribe.Channel, body.Subscribe.Since)
	case *heraldv1.ClientFrame_Unsubscribe:
		reply, err = s.unsubscribe(body.Unsubscribe.Channel)
	case *heraldv1.ClientFrame_Publish:
		reply, err = s.publish(body.Publish)
	case *heraldv1.ClientFrame_History:
		reply, err = s.history(body.History)
	case *heraldv1.ClientFrame_Presence:
		reply, err = s.presence(body.Presence.Channel)
	case *heraldv1.ClientFrame_PresenceStats:
		reply, err = s.presenceStats(body.PresenceStats.Channel)
	case *heraldv1.ClientFrame_Ping:
		reply = &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Pong{Pong: &heraldv1.PingFrame{}}}
	case *heraldv1.ClientFrame_Rpc:
		reply, err = s.rpc(body.Rpc)
	}
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		s.closeWith(ce.code, ce.reason, ce.reconnect, 0)
		return false
	case err != nil:
		s.sendError(fr.Id, fromStatus(err))
	case reply != nil:
		reply.Id = fr.Id
		s.sendReply(reply)
	}
	return true
}

// sendReply queues a reply within the connection's budget for replies
// (transport.enqueueReplies), or an error saying why it could not be.
func (s *session) sendReply(fr *heraldv1.ServerFrame) {
	b := encodeFrame(s.format, fr)
	ok, tooBig := s.t.enqueueReplies(outFrame{b: b})
	switch {
	case ok:
	case tooBig:
		s.sendError(fr.Id, reqErr(ErrBadRequest, "the reply is %d bytes, more than a connection may have queued in replies (%d: %d times bridge.queue_bytes); ask for less (a smaller history limit)", len(b), replyBudgetFactor*s.b.cfg.QueueBytes, replyBudgetFactor))
	default:
		s.sendError(fr.Id, reqErr(ErrRateLimited, "replies of %d bytes are waiting to be sent on this connection, the most it may have (%d times bridge.queue_bytes); retry once they are read", replyBudgetFactor*s.b.cfg.QueueBytes, replyBudgetFactor))
	}
}

// connect authenticates the session with what the client presented and
// the connect frame, replies `connect` (id reqID), then subscribes the
// personal channel and the channels the authenticator or the transport
// named (each announced by a `subscribed` push). initial, when set, gives
// once the user is known the transport's own resume positions (SSE:
// those of Last-Event-ID) of the personal channel and of the channels it
// subscribes at connect (the URL's). It returns false when the session
// was refused (and is closing).
func (s *session) connect(reqID uint32, f *heraldv1.ConnectFrame, initial func(user string) (*heraldv1.StreamPosition, []initialSub)) bool {
	creds := s.creds
	if creds == nil {
		creds = &credentials{}
	}
	s.creds = nil
	if f.Token != "" {
		creds.token = f.Token
	}
	creds.name = f.Name
	creds.client, creds.format = s.id, s.format
	if s.b.hooks != nil {
		s.remote = creds.remoteAddr // only hooks are told
	}
	ctx, cancel := s.b.callContext()
	id, err := s.b.auth.authenticate(ctx, creds)
	cancel()
	var ref *refusal
	if errors.As(err, &ref) {
		s.authFailed(ref)
		s.closeWith(ref.code, ref.reason, ref.reconnect, ref.delayMs)
		return false
	}
	if err != nil {
		s.b.log.Warn("authentication failed", "conn", s.id, "transport", s.t.kind.String(), "err", err)
		s.closeWith(CloseBackendDown, "authentication unavailable; reconnect later", true, 1000)
		return false
	}
	s.ident = id
	if id.named() {
		s.user = id.user
		if !s.b.addUser(s) {
			s.closeWith(CloseTooManyConns, "too many connections for this user", true, 5000)
			return false
		}
		s.userAdded = true
	}
	s.tokens, s.tokensAt = s.requestBurst(), monoNow()
	s.authed.Store(true)
	s.authOK()
	connected := &heraldv1.ConnectedFrame{
		Client:       s.id,
		User:         s.user,
		Version:      s.b.version,
		PingInterval: uint32(s.b.cfg.PingInterval.D() / time.Second),
	}
	if s.cmds != nil {
		connected.SessionToken = s.cmds.token
	}
	personalSince := f.PersonalSince
	var subs []initialSub
	if initial != nil {
		if p, in := initial(s.user); p != nil || in != nil {
			personalSince, subs = p, in
		}
	}
	s.armExpiry(connected, nil)
	s.send(&heraldv1.ServerFrame{Id: reqID, Body: &heraldv1.ServerFrame_Connect{Connect: connected}})
	if s.user != "" {
		// With personal_since, the `subscribed` push says whether what was
		// published while the client was away is recovered, and it follows.
		if err := s.subscribe(0, personalChannel(s.user), personalSince); err != nil {
			// Not a warning per session when the core is unreachable or
			// refuses the bridge: that is logged once, elsewhere.
			level := slog.LevelWarn
			if fromStatus(err).code.temporary() {
				level = slog.LevelDebug
			}
			s.b.log.Log(context.Background(), level, "personal channel subscription failed", "user", s.user, "err", err)
			s.sendError(0, fromStatus(err))
		}
	}
	if id != nil {
		for _, name := range id.subscribe() {
			subs = append(subs, initialSub{channel: name})
		}
	}
	for _, in := range subs {
		if s.closed() {
			break
		}
		if err := s.subscribe(0, in.channel, in.since); err != nil {
			s.sendError(0, fromStatus(err))
		}
	}
	return true
}

// initialSub is a channel subscribed at connect, with the position to
// resume after (nil: from now).
type initialSub struct {
	channel string
	since   *heraldv1.StreamPosition
}

func personalChannel(user string) string { return "user:" + user }

// clientInfo returns the session's presence identity, built on first
// use: most sessions never join a presence namespace. It is called by
// request handling only (one message at a time), so it needs no lock.
func (s *session) clientInfo() *heraldv1.ClientInfo {
	if s.info == nil {
		s.info = s.ident.clientInfo(s.id)
	}
	return s.info
}

// armExpiry (re)starts the timer that acts when the session's identity
// expires (session.expired: the refresh hook, or a close with 4002), and
// fills expires_in.
func (s *session) armExpiry(connected *heraldv1.ConnectedFrame, refreshed *heraldv1.RefreshedFrame) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	d := s.armLocked(s.ident)
	if d < 0 {
		return
	}
	secs := max(uint32(d/time.Second), 1)
	if connected != nil {
		connected.ExpiresIn = secs
	}
	if refreshed != nil {
		refreshed.ExpiresIn = secs
	}
}

// armLocked arms the expiry of identity id (the bridge's expiries call
// session.expired at id.expires) and returns the time left (-1: id does
// not expire). s.subMu must be held.
func (s *session) armLocked(id *identity) time.Duration {
	s.expGen++
	if id == nil || id.expires == 0 || s.closed() {
		s.b.exp.cancel(s)
		return -1
	}
	d := max(time.Until(time.Unix(0, id.expires)), 0)
	s.b.exp.arm(s, id, s.expGen, d)
	return d
}

// refresh replaces the session's identity with the one a new token gives,
// for the same user; a session of the connect hook asks the refresh hook.
func (s *session) refresh(f *heraldv1.RefreshFrame) (*heraldv1.ServerFrame, error) {
	if !s.ident.named() {
		return nil, reqErr(ErrInvalidToken, "anonymous connections have no token to refresh")
	}
	var (
		id  *identity
		err error
	)
	if s.ident.hook && s.b.hookAuth != nil && s.b.hookAuth.refreshOn {
		id, err = s.refreshByHook(s.ident, f.Token)
	} else {
		ctx, cancel := s.b.callContext()
		id, err = s.b.auth.refresh(ctx, s.ident, f.Token)
		cancel()
	}
	if err != nil {
		return nil, err
	}
	id.info = s.ident.info // presence keeps the info the session joined with
	s.ident = id
	out := &heraldv1.RefreshedFrame{}
	s.armExpiry(nil, out)
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Refresh{Refresh: out}}, nil
}

// requestBurst is how many requests a session may send at once: 4 times
// request_rate, at least 4.
func (s *session) requestBurst() float64 { return float64(4 * int(max(s.b.cfg.RequestRate, 1))) }

// allowRequest takes a token from the session's request bucket, which
// fills at request_rate per second up to requestBurst and is full at
// connect; with none left it refuses and takes nothing. This is
// rate.Limiter's Allow, kept in the session (16 bytes) rather than in an
// 80-byte Limiter of its own.
func (s *session) allowRequest() bool {
	now := monoNow()
	tokens := min(s.tokens+time.Duration(now-s.tokensAt).Seconds()*s.b.cfg.RequestRate, s.requestBurst())
	if tokens < 1 {
		return false
	}
	s.tokens, s.tokensAt = tokens-1, now
	return true
}

func (b *Bridge) callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, callTimeout)
}
