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
	// WebSockets besides those of bridge.allowed_origins. Default:
	// config.OwnOrigins of the configured http_addr (pass the bound
	// address's when it has port 0).
	Origins []string
}

// Bridge serves browser WebSockets against a core reached through a gRPC
// client connection. Create it with New, mount it as an http.Handler and
// call Shutdown to drain it. Its methods are safe for concurrent use.
type Bridge struct {
	cfg       config.Bridge
	limits    config.Limits
	ns        namespaces
	core      heraldv1.HeraldServiceClient
	verifier  *verifier
	anonymous bool
	upgrader  websocket.Upgrader
	log       *slog.Logger
	id        string
	version   string

	ctx    context.Context // ends at Shutdown: upstream streams and calls
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the bridge starts

	seed    maphash.Seed
	conns   [32]connShard
	hub     hub
	session *session
	lim     *limits
	access  coreAccess

	closing  atomic.Bool
	shutOnce sync.Once

	nConns, nSubs, nChannels, nSlow, nAccepted atomic.Int64
}

// connShard holds a part of the bridge's connections, by user.
type connShard struct {
	mu    sync.Mutex
	all   map[*conn]struct{}
	users map[string][]*conn
}

// Stats are counters of a bridge, for metrics.
type Stats struct {
	Connections   int64 // open, authenticated connections
	Subscriptions int64 // connection-channel subscriptions
	Channels      int64 // channels with an upstream subscription
	SlowConsumers int64 // connections closed as slow consumers, since start
	Accepted      int64 // WebSocket upgrades, since start
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
// Validate) against the core behind core (node's in-process connection, or a
// connection to a remote core that authenticates with the API key). It starts the bridge's control
// session and heartbeat at once.
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
		cfg:       cfg.Bridge,
		limits:    cfg.Limits,
		ns:        namespaces{cfg.NamespaceIndex()},
		verifier:  v,
		anonymous: cfg.AnonymousAllowed(),
		log:       log,
		id:        id,
		version:   opts.Version,
		seed:      maphash.MakeSeed(),
	}
	b.access.log = log
	b.core = heraldv1.NewHeraldServiceClient(&coreConn{cc: core, a: &b.access})
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.upgrader = websocket.Upgrader{
		ReadBufferSize:   256, // client frames are small; a larger message is read past the buffer
		WriteBufferSize:  16 << 10,
		WriteBufferPool:  &writeBufferPool,
		Subprotocols:     []string{SubprotocolJSON, SubprotocolProto},
		CheckOrigin:      b.originPolicy(cfg, opts).check,
		HandshakeTimeout: connectTimeout,
	}
	for i := range b.conns {
		b.conns[i].all = make(map[*conn]struct{})
		b.conns[i].users = make(map[string][]*conn)
	}
	b.hub.init(b)
	b.session = newSession(b)
	b.lim = newLimits(cfg.Bridge)
	trackBridge(b)
	b.goFunc(func() { b.session.run(b.ctx) })
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

// ServeHTTP upgrades a request to a WebSocket. The handler returns at once;
// the connection is read by a goroutine of its own, so that net/http's
// buffers and the handler's stack are not kept for the connection's life.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.closing.Load() {
		refuse(w, "shutting_down", http.StatusServiceUnavailable, retryStorm, "bridge shutting down; reconnect to another node")
		return
	}
	// Limits are checked before the upgrade: a refusal costs one response.
	release, ok := b.lim.admit(w, r)
	if !ok {
		return
	}
	ws, err := b.upgrader.Upgrade(w, r, nil)
	if err != nil {
		release()
		return // the upgrader has answered (403 for a refused origin, 400...)
	}
	b.nAccepted.Add(1)
	c := newConn(b, ws)
	wsConns[c.format].Add(1)
	b.log.Debug("connection opened", "conn", c.id, "remote", r.RemoteAddr, "subprotocol", subprotocolNames[c.format])
	b.wg.Add(1)
	go func() {
		c.readLoop()
		wsConns[c.format].Add(-1)
		release()
	}()
}

func (b *Bridge) shard(key string) *connShard {
	return &b.conns[maphash.String(b.seed, key)%uint64(len(b.conns))]
}

// register adds a new connection, sharded by its id.
func (b *Bridge) register(c *conn) {
	sh := b.shard(c.id)
	sh.mu.Lock()
	sh.all[c] = struct{}{}
	sh.mu.Unlock()
	b.nConns.Add(1)
}

// addUser records an authenticated connection of a user, sharded by user;
// it fails when the user has max_conns_per_user connections already.
func (b *Bridge) addUser(c *conn) bool {
	sh := b.shard(c.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.users[c.user]) >= b.cfg.MaxConnsPerUser {
		return false
	}
	sh.users[c.user] = append(sh.users[c.user], c)
	return true
}

// unregister forgets a closed connection.
func (b *Bridge) unregister(c *conn) {
	sh := b.shard(c.id)
	sh.mu.Lock()
	_, ok := sh.all[c]
	delete(sh.all, c)
	sh.mu.Unlock()
	if ok {
		b.nConns.Add(-1)
	}
	if c.user == "" || !c.userAdded {
		return
	}
	sh = b.shard(c.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.users[c.user]
	for i, x := range list {
		if x == c {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(sh.users, c.user)
	} else {
		sh.users[c.user] = list
	}
}

// userConns returns the open connections of a user.
func (b *Bridge) userConns(user string) []*conn {
	sh := b.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return append([]*conn(nil), sh.users[user]...)
}

// eachConn calls f for every registered connection, under its shard lock:
// f must not block.
func (b *Bridge) eachConn(f func(*conn)) {
	for i := range b.conns {
		sh := &b.conns[i]
		sh.mu.Lock()
		for c := range sh.all {
			f(c)
		}
		sh.mu.Unlock()
	}
}

// heartbeat pings every connection each ping interval and closes those
// that did not answer the previous ping.
func (b *Bridge) heartbeat() {
	t := time.NewTicker(b.cfg.PingInterval.D())
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.eachConn(func(c *conn) { c.heartbeat() })
		}
	}
}

// disconnectUser closes every connection of a user (a backend Disconnect).
func (b *Bridge) disconnectUser(cmd *heraldv1.DisconnectRequest) {
	reason := cmd.Reason
	if reason == "" {
		reason = "disconnected by the server"
	}
	for _, c := range b.userConns(cmd.User) {
		c.closeWith(CloseDisconnected, reason, cmd.Reconnect, 0)
	}
}

// unsubscribeUser removes every connection of a user from a channel.
func (b *Bridge) unsubscribeUser(cmd *heraldv1.UnsubscribeRequest) {
	for _, c := range b.userConns(cmd.User) {
		c.serverUnsubscribe(cmd.Channel, "unsubscribed by the server")
	}
}

// ErrShutdown is returned by Shutdown when its context ended before every
// connection had closed; the rest were cut.
var ErrShutdown = errors.New("wsbridge: shutdown deadline passed; remaining connections were cut")

// Shutdown drains the bridge: new upgrades are refused, every connection
// is told to reconnect (DisconnectFrame with close code 4006 and a jittered
// reconnect_delay_ms) and closed, then upstream streams and the control
// session end. Connections still open when ctx ends are cut. It is
// idempotent.
func (b *Bridge) Shutdown(ctx context.Context) error {
	var err error
	b.shutOnce.Do(func() {
		b.closing.Store(true)
		n := b.nConns.Load()
		// Spread reconnects over up to 5 s, more with more connections.
		spread := min(500+int(n/10), 5000)
		b.eachConn(func(c *conn) {
			c.closeWith(CloseShutdown, "server shutting down; reconnect", true, uint32(250+mrand.IntN(spread)))
		})
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
	wait:
		for b.nConns.Load() > 0 {
			select {
			case <-ctx.Done():
				err = ErrShutdown
				b.eachConn(func(c *conn) { c.kill() })
				break wait
			case <-t.C:
			}
		}
		b.session.flushFinal()
		b.cancel()
		b.wg.Wait()
		untrackBridge(b)
	})
	return err
}
