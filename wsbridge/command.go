package wsbridge

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"golang.org/x/time/rate"
)

// Commands for unidirectional sessions. A client on SSE or HTTP streaming
// cannot send on its stream, so it POSTs its client frames (subscribe,
// publish, history...) to /command, authenticated by the session token
// its `connect` reply gave it: `Authorization: Bearer <token>`. The POST
// answers 202 once the frames are queued for the session; the replies
// travel on the session's stream, with the requests' ids. The frames are
// handled exactly as frames read from a WebSocket: the same dispatch, the
// same request_rate, the same errors.
//
// Behind a load balancer the POST may reach a bridge that does not hold
// the session. That bridge forwards it on its control stream to the core,
// which passes it to every bridge (its engine's command path, across
// nodes); the bridge holding the session checks the token's hash and
// handles it, the others ignore it. A forwarded POST answers 202 before
// anyone knows whether the session exists: a client whose session is gone
// learns it from its stream, which has ended.

// Limits of the command endpoint.
const (
	// maxQueuedCommands bounds the POSTs waiting for one session; beyond
	// it, 429. With max_frame per POST, a session holds at most
	// maxQueuedCommands × max_frame bytes of commands.
	maxQueuedCommands = 4
	// forwardRate and forwardBurst bound the POSTs one bridge forwards to
	// the core per second, so that POSTs for sessions it does not hold
	// cannot flood every bridge.
	forwardRate  = 1000
	forwardBurst = 2000
)

// commandQueue holds the commands for one unidirectional session, handled
// in order by a worker goroutine that exists only while some are queued.
// Commands are held until the stream's own connect is done (release): the
// client learns its session token from the `connect` reply, before the
// stream's channels and the rest of its opening message are handled, and
// a session's requests are handled one at a time.
type commandQueue struct {
	token string   // "<session id>.<secret>", given in ConnectedFrame.session_token
	hash  [32]byte // SHA-256 of token

	mu      sync.Mutex
	queue   [][]byte
	running bool
	held    bool // the stream's connect is still being handled
	stopped bool // the session ended: nothing more is queued
}

func newCommandQueue(id string) *commandQueue {
	var secret [18]byte
	_, _ = rand.Read(secret[:])
	q := &commandQueue{token: id + "." + base64.RawURLEncoding.EncodeToString(secret[:]), held: true}
	q.hash = sha256.Sum256([]byte(q.token))
	return q
}

// push queues a message of frames for s; false when too many wait.
func (q *commandQueue) push(s *session, msg []byte) bool {
	q.mu.Lock()
	if q.stopped || len(q.queue) >= maxQueuedCommands {
		q.mu.Unlock()
		return false
	}
	q.queue = append(q.queue, msg)
	start := !q.running && !q.held
	q.running = q.running || start
	q.mu.Unlock()
	if start {
		s.b.goFunc(func() { q.work(s) })
	}
	return true
}

// release lets the commands be handled, once the stream's opening (its
// connect, its channels, the rest of its first message) has been; the
// goroutine that handled it calls it.
func (q *commandQueue) release(s *session) {
	q.mu.Lock()
	q.held = false
	start := !q.running && !q.stopped && len(q.queue) > 0
	q.running = q.running || start
	q.mu.Unlock()
	if start {
		s.b.goFunc(func() { q.work(s) })
	}
}

// work handles the queued messages in order, then ends.
func (q *commandQueue) work(s *session) {
	for {
		q.mu.Lock()
		if len(q.queue) == 0 {
			q.running = false
			q.queue = nil
			q.mu.Unlock()
			return
		}
		msg := q.queue[0]
		q.queue[0] = nil
		q.queue = q.queue[1:]
		q.mu.Unlock()
		if !s.closed() && s.authed.Load() {
			s.handleMessage(msg)
		}
	}
}

// stop refuses further commands and waits for the one being handled, so
// that a session's cleanup never runs beside its requests (a subscribe
// finishing after the cleanup would leave a subscription and a presence
// entry behind). Handling a message is bounded: the session is closing, so
// it stops before its next frame, and a call to the core takes at most
// callTimeout.
func (q *commandQueue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.queue = nil
	q.mu.Unlock()
	for {
		q.mu.Lock()
		r := q.running
		q.mu.Unlock()
		if !r {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// commandRegistry finds unidirectional sessions by id, for commands.
type commandRegistry struct {
	b       *Bridge
	seed    maphash.Seed
	shards  [16]commandShard
	forward *rate.Limiter
}

type commandShard struct {
	mu sync.Mutex
	m  map[string]*session
}

func (r *commandRegistry) init(b *Bridge) {
	r.b = b
	r.seed = maphash.MakeSeed()
	for i := range r.shards {
		r.shards[i].m = make(map[string]*session)
	}
	r.forward = rate.NewLimiter(forwardRate, forwardBurst)
}

func (r *commandRegistry) shard(id string) *commandShard {
	return &r.shards[maphash.String(r.seed, id)%uint64(len(r.shards))]
}

func (r *commandRegistry) add(s *session) {
	sh := r.shard(s.id)
	sh.mu.Lock()
	sh.m[s.id] = s
	sh.mu.Unlock()
}

func (r *commandRegistry) remove(s *session) {
	sh := r.shard(s.id)
	sh.mu.Lock()
	if sh.m[s.id] == s {
		delete(sh.m, s.id)
	}
	sh.mu.Unlock()
}

func (r *commandRegistry) lookup(id string) *session {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[id]
}

// errCommand* are the outcomes of a command for a local session.
var (
	errCommandToken  = errors.New("the session token does not match")
	errCommandFormat = errors.New("the frames are not in the session's subprotocol")
	errCommandFull   = errors.New("too many commands waiting for this session")
)

// deliverLocal queues frames for the session id names, if this bridge
// holds it; held reports whether it does.
func (r *commandRegistry) deliverLocal(id string, hash []byte, frames []byte, binary bool) (held bool, err error) {
	s := r.lookup(id)
	if s == nil || s.cmds == nil {
		return false, nil
	}
	if subtle.ConstantTimeCompare(hash, s.cmds.hash[:]) != 1 {
		return true, errCommandToken
	}
	if binary != (s.format == formatProto) {
		return true, errCommandFormat
	}
	if !s.cmds.push(s, frames) {
		return true, errCommandFull
	}
	return true, nil
}

// deliverForwarded handles a command another bridge forwarded through the
// core: the bridge holding its session queues it, the others drop it.
func (r *commandRegistry) deliverForwarded(cmd *heraldv1.SessionCommand) {
	if cmd.Origin == r.b.id {
		return // this bridge forwarded it: it does not hold the session
	}
	held, err := r.deliverLocal(cmd.Session, cmd.TokenSha256, cmd.Frames, cmd.Binary)
	switch {
	case !held:
	case err != nil:
		metricCommands.WithLabelValues(commandResult(err)).Inc()
		r.b.log.Debug("forwarded command refused", "conn", cmd.Session, "from", cmd.Origin, "err", err)
	default:
		metricCommands.WithLabelValues("forwarded_in").Inc()
	}
}

func commandResult(err error) string {
	switch {
	case errors.Is(err, errCommandToken):
		return "bad_token"
	case errors.Is(err, errCommandFormat):
		return "bad_format"
	case errors.Is(err, errCommandFull):
		return "queue_full"
	}
	return "error"
}

// Commands returns the handler of the command endpoint (/command).
func (b *Bridge) Commands() http.Handler { return http.HandlerFunc(b.serveCommand) }

// serveCommand takes a POST of client frames for a unidirectional
// session.
func (b *Bridge) serveCommand(w http.ResponseWriter, r *http.Request) {
	if !b.cors(w, r, "POST") {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "POST client frames here", http.StatusMethodNotAllowed)
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	id, _, dot := strings.Cut(token, ".")
	if !ok || !dot || id == "" {
		metricCommands.WithLabelValues("bad_token").Inc()
		http.Error(w, "Authorization: Bearer <session_token from the connect reply> is required", http.StatusUnauthorized)
		return
	}
	body, ok := readBody(w, r, b.cfg.MaxFrame, func(reason string) { metricCommands.WithLabelValues(reason).Inc() })
	if !ok {
		return
	}
	if len(body) == 0 {
		http.Error(w, "the body must hold client frames", http.StatusBadRequest)
		return
	}
	binary := isBinary(r.Header.Get("Content-Type"))
	if !binary && !utf8.Valid(body) {
		metricCommands.WithLabelValues("bad_format").Inc()
		http.Error(w, "a JSON body must be UTF-8", http.StatusBadRequest)
		return
	}
	hash := sha256.Sum256([]byte(token))
	held, err := b.commands.deliverLocal(id, hash[:], body, binary)
	switch {
	case errors.Is(err, errCommandToken):
		metricCommands.WithLabelValues("bad_token").Inc()
		http.Error(w, "invalid session token", http.StatusUnauthorized)
		return
	case errors.Is(err, errCommandFormat):
		metricCommands.WithLabelValues("bad_format").Inc()
		http.Error(w, "the body's Content-Type does not match the session's subprotocol (application/json for herald.json, application/x-protobuf for herald.proto)", http.StatusUnsupportedMediaType)
		return
	case errors.Is(err, errCommandFull):
		metricCommands.WithLabelValues("queue_full").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many commands waiting for this session; retry", http.StatusTooManyRequests)
		return
	case held:
		metricCommands.WithLabelValues("local").Inc()
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if !b.commands.forward.Allow() {
		metricCommands.WithLabelValues("forward_limited").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many commands for sessions of other bridges; retry", http.StatusTooManyRequests)
		return
	}
	cmd := &heraldv1.SessionCommand{Session: id, TokenSha256: hash[:], Frames: body, Binary: binary, Origin: b.id}
	if !b.control.forward(cmd) {
		metricCommands.WithLabelValues("forward_unavailable").Inc()
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the session is on another bridge and the core cannot be reached; retry", http.StatusServiceUnavailable)
		return
	}
	metricCommands.WithLabelValues("forwarded_out").Inc()
	w.WriteHeader(http.StatusAccepted)
}

// isBinary reports whether a Content-Type names herald.proto frames.
func isBinary(contentType string) bool {
	ct, _, _ := strings.Cut(contentType, ";")
	switch strings.TrimSpace(strings.ToLower(ct)) {
	case "application/x-protobuf", "application/protobuf", "application/octet-stream":
		return true
	}
	return false
}

// cors answers a CORS preflight (false: answered, nothing more to do) and
// adds the response headers that let an allowed origin read the answer.
// A request from an origin the bridge does not allow is refused with 403.
func (b *Bridge) cors(w http.ResponseWriter, r *http.Request, methods string) bool {
	origin := r.Header.Get("Origin")
	if origin != "" {
		if !b.origin(r) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return false
		}
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", methods+", OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return false
	}
	return true
}
