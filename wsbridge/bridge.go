package wsbridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/hooks"
	"google.golang.org/grpc"
)

// Timeouts that are not configurable.
const (
	connectTimeout = 10 * time.Second // from upgrade to a successful connect frame
	writeWait      = 10 * time.Second // one write to a socket; also the hard limit of a close
	callTimeout    = 10 * time.Second // one call to the core made for a browser request
	closeGrace     = 5 * time.Second  // from a close by the bridge to cutting the socket
	maxMessage     = 64 << 10         // a packed outbound message stops growing past this
)

// Options are the optional parts of a Bridge. The zero value works.
type Options struct {
	// Log receives the bridge's logs. Default: discarded.
	Log *slog.Logger
	// Version is reported to browsers in ConnectedFrame.
	Version string
	// ID names the bridge to the core. Default: random.
	ID string
	// Origins are the node's own origins, whose pages may open
	// WebSockets (and SSE and HTTP streams, and POST commands) besides
	// those of bridge.allowed_origins. Default: config.OwnOrigins of the
	// configured http_addr (pass the bound address's when it has port 0).
	Origins []string
	// CoreConfig says that the core runs with the same configuration as
	// the bridge (herald serve): its namespaces are the core's from the
	// start. A split bridge (false) resolves channels of a namespace it
	// does not know as temporarily unavailable until its core has sent
	// the core's namespaces.
	CoreConfig bool
}

// Bridge serves browsers against a core reached through a gRPC client
// connection, over WebSocket (ServeHTTP), SSE (SSE) and HTTP streaming
// (HTTPStream), with a command endpoint for the last two (Commands).
// Create it with New, mount its handlers and call Shutdown to drain it.
// Its methods are safe for concurrent use.
type Bridge struct {
	cfg      config.Bridge
	limits   config.Limits
	ns       *namespaces
	core     heraldv1.HeraldServiceClient
	auth     authenticator
	hooks    *hooks.Client // the application's backend; nil when none is configured
	hcfg     config.Hooks
	hookAuth *hookAuth // the connect hook's authenticator, when it is on
	upgrader websocket.Upgrader
	origin   func(*http.Request) bool
	log      *slog.Logger
	id       string
	version  string
	// presentHeaders and presentCookies name what a session's credentials
	// carry to its authenticator: hooks.headers and hooks.cookies (none
	// without the connect hook).
	presentHeaders, presentCookies []string

	ctx    context.Context // ends at Shutdown: upstream streams and calls
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the bridge starts

	// behind is whether the publications reaching this bridge are late
	// (see noteAge): writers then batch (wpool, yieldForMore).
	behind atomic.Bool
	wpool  writerPool // writes for sessions on sockets of their own while behind

	seed     maphash.Seed
	sessions [32]sessionShard
	hub      hub
	control  *control
	commands commandRegistry
	lim      *limits
	access   coreAccess
	exp      expiries

	closing  atomic.Bool
	shutOnce sync.Once

	nConns, nSubs, nChannels, nSlow, nAccepted atomic.Int64
}

// Stats are counters of a bridge, for metrics.
type Stats struct {
	Connections   int64 // open sessions (every transport), including ones not yet authenticated
	Subscriptions int64 // session-channel subscriptions
	Channels      int64 // channels with an upstream subscription
	SlowConsumers int64 // sessions closed as slow consumers, since start
	Accepted      int64 // WebSocket upgrades and SSE and HTTP streams accepted, since start
}

// Stats returns the bridge's counters.
func (b *Bridge) Stats() Stats {
	return Stats{
		Connections:   b.nConns.Load(),
		Subscriptions: b.nSubs.Load(),
		Channels:      b.nChannels.Load(),
		SlowConsumers: b.nSlow.Load(),
		Accepted:      b.nAccepted.Load(),
	}
}

var writeBufferPool sync.Pool

// New returns a bridge serving browsers with cfg (which must have passed
// Validate) against the core behind core (node's in-process connection, or
// a connection to a remote core that authenticates with the API key). It
// starts the bridge's control stream and heartbeat at once.
func New(cfg config.Config, core grpc.ClientConnInterface, opts Options) (*Bridge, error) {
	v, err := newVerifier(cfg.Bridge)
	if err != nil {
		return nil, err
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := opts.ID
	if id == "" {
		id = "bridge-" + randomID(6)
	}
	b := &Bridge{
		cfg:     cfg.Bridge,
		limits:  cfg.Limits,
		ns:      newNamespaces(cfg.NamespaceIndex(), opts.CoreConfig),
		auth:    &jwtAuth{v: v, anonymous: cfg.AnonymousAllowed()},
		log:     log,
		id:      id,
		version: opts.Version,
		seed:    maphash.MakeSeed(),
	}
	if cfg.Hooks.Backend() != "" {
		hc, err := hooks.New(cfg.Hooks, hooks.Options{Log: log.With("component", "hooks"), MaxMessage: cfg.Limits.MaxGRPCMessage, MaxPayload: cfg.Limits.MaxPayload, UserAgent: "herald/" + opts.Version})
		if err != nil {
			return nil, err
		}
		b.hooks, b.hcfg = hc, cfg.Hooks
		if cfg.Hooks.Connect {
			jwt := b.auth.(*jwtAuth)
			b.hookAuth = &hookAuth{b: b, jwt: jwt, keys: len(v.methods) > 0, refreshOn: cfg.Hooks.Refresh}
			b.auth = b.hookAuth
			b.presentHeaders, b.presentCookies = cfg.Hooks.Headers, cfg.Hooks.Cookies
		}
	}
	b.access.log = log
	b.core = heraldv1.NewHeraldServiceClient(&coreConn{cc: core, a: &b.access})
	b.origin = b.originPolicy(cfg, opts).check
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.upgrader = websocket.Upgrader{
		ReadBufferSize:   256, // client frames are small; a larger message is read past the buffer
		WriteBufferSize:  16 << 10,
		WriteBufferPool:  &writeBufferPool,
		Subprotocols:     []string{SubprotocolJSON, SubprotocolProto},
		CheckOrigin:      b.origin,
		HandshakeTimeout: connectTimeout,
	}
	for i := range b.sessions {
		b.sessions[i].all = make(map[*session]struct{})
		b.sessions[i].users = make(map[string]*session)
		b.sessions[i].more = make(map[string][]*session)
	}
	b.commands.init(b)
	b.hub.init(b)
	b.control = newControl(b)
	b.lim = newLimits(cfg.Bridge)
	trackBridge(b)
	b.goFunc(func() { b.control.run(b.ctx) })
	b.goFunc(b.heartbeat)
	return b, nil
}

// goFunc runs f in a goroutine owned by the bridge: Shutdown waits for it.
func (b *Bridge) goFunc(f func()) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
}

func randomID(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// ServeHTTP serves the WebSocket endpoint (/ws): it upgrades the request
// and returns at once; the connection is read by a goroutine of its own.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) { b.serveWebSocket(w, r) }

// ErrShutdown is returned by Shutdown when its context ended before every
// connection had closed; the rest were cut.
var ErrShutdown = errors.New("wsbridge: shutdown deadline passed; remaining connections were cut")

// Shutdown drains the bridge: new connections are refused, every session
// is told to reconnect (DisconnectFrame with close code 4006 and a
// jittered reconnect_delay_ms) and closed, then upstream streams and the
// control stream end. Connections still open when ctx ends are cut. It is
// idempotent.
func (b *Bridge) Shutdown(ctx context.Context) error {
	var err error
	b.shutOnce.Do(func() {
		b.closing.Store(true)
		n := b.nConns.Load()
		// Spread reconnects over up to 5 s, more with more connections.
		spread := min(500+int(n/10), 5000)
		b.eachSession(func(s *session) {
			s.closeWith(CloseShutdown, "server shutting down; reconnect", true, uint32(250+mrand.IntN(spread)))
		})
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
	wait:
		for b.nConns.Load() > 0 {
			select {
			case <-ctx.Done():
				err = ErrShutdown
				b.eachSession(func(s *session) { s.t.kill() })
				break wait
			case <-t.C:
			}
		}
		b.control.flushFinal()
		b.cancel()
		b.wg.Wait()
		if b.hooks != nil {
			_ = b.hooks.Close()
		}
		untrackBridge(b)
	})
	return err
}

// A bridge is behind when the publications it fans out were published a
// while ago: they queued on their way here (behind thousands of writers
// made runnable by the fan-outs before them, typically), and more follow.
// Then sessions on sockets of their own (WebSockets; SSE and HTTP streams
// over HTTP/1.x) are written by the bridge's writerPool, a few workers
// taking them in turn, and the others (HTTP/2 streams) yield before
// taking a batch (transport.yieldForMore): either way the next
// publications join a session's queue and go out in the same write, and
// under overload that batching is what lets the bridge catch up.
// On time, a writer writes at once: a connection sent a frame now and
// then (a user's notifications, a channel at a few publications a second)
// gains nothing from a yield, and a fan-out to 10,000 of them would pay a
// run-queue round trip per delivery. The state changes with hysteresis
// (late at behindAfterMs, on time again at caughtUpMs), so the flag's
// cache line is written on changes only. A publication's time is the
// core's clock: across hosts, a core's clock behind the bridge's makes
// writers yield more (as all did before), one ahead makes them yield
// less.
const (
	behindAfterMs = 10
	caughtUpMs    = 2
)

// noteAge takes the age, in ms, of a publication about to be fanned out
// (negative: the core's clock is ahead, taken as on time).
func (b *Bridge) noteAge(ms int64) {
	switch {
	case ms >= behindAfterMs:
		if !b.behind.Load() {
			b.behind.Store(true)
		}
	case ms <= caughtUpMs:
		if b.behind.Load() {
			b.behind.Store(false)
		}
	}
}
