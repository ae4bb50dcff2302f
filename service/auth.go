package service

import (
	"context"
	"crypto/subtle"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// permission is what a call needs from its API key.
type permission int

const (
	permPublish permission = iota // in the channel's namespace
	permRead                      // in the channel's namespace
	permBridge
	permAdmin
)

// grant is the set of permissions of one API key.
type grant struct {
	name    string
	admin   bool
	bridge  bool
	publish map[string]bool // namespace → allowed; "*" any
	read    map[string]bool
	rate    *rate.Limiter // publications; nil: unlimited
}

func newGrant(k config.APIKey) *grant {
	g := &grant{name: k.Name, publish: map[string]bool{}, read: map[string]bool{}}
	if len(k.Scopes) == 0 {
		g.admin = true
	}
	if k.PublishRate > 0 {
		burst := k.PublishBurst
		if burst <= 0 {
			burst = max(1, int(math.Ceil(k.PublishRate)))
		}
		g.rate = rate.NewLimiter(rate.Limit(k.PublishRate), burst)
	}
	for _, sc := range k.Scopes {
		verb, ns, scoped := strings.Cut(sc, ":")
		if !scoped {
			ns = "*"
		}
		switch verb {
		case "admin":
			g.admin = true
		case "bridge":
			g.bridge = true
		case "publish":
			g.publish[ns] = true
		case "read":
			g.read[ns] = true
		}
	}
	return g
}

func (g *grant) allows(p permission, namespace string) bool {
	if g.admin {
		return true
	}
	switch p {
	case permPublish:
		return g.bridge || g.publish["*"] || g.publish[namespace]
	case permRead:
		return g.bridge || g.read["*"] || g.read[namespace]
	case permBridge:
		return g.bridge
	}
	return false
}

type grantKey struct{}

// authorize checks that the call's API key may do p in the namespace of the
// channel name (ignored for bridge and admin permissions). Calls without a
// grant in their context come from a node without keys and may do anything.
func authorize(ctx context.Context, p permission, name string) error {
	g, ok := ctx.Value(grantKey{}).(*grant)
	if !ok {
		return nil
	}
	ns := channelname.Namespace(name)
	if g.allows(p, ns) {
		if p == permPublish && g.rate != nil && !g.rate.Allow() {
			metricKeyRateLimited.WithLabelValues(g.name).Inc()
			return status.Errorf(codes.ResourceExhausted, "API key %q is over its publish rate of %g per second; retry later", g.name, float64(g.rate.Limit()))
		}
		return nil
	}
	what := [...]string{"publish to namespace " + quote(ns), "read namespace " + quote(ns), "act as a bridge", "use admin calls"}[p]
	return status.Errorf(codes.PermissionDenied, "API key %q may not %s", g.name, what)
}

func quote(ns string) string { return `"` + ns + `"` }

// keyAuth checks `authorization: Bearer <key>` against the configured keys
// and puts the key's grant in the call's context. With no keys, every call
// is allowed (Herald then listens on loopback only).
type keyAuth struct {
	keys    [][]byte
	grants  []*grant
	keyless keyless // health and reflection calls without a key, open now (tap)
}

// MaxKeylessStreams and MaxKeylessStreamsPerIP bound the health and
// reflection calls without an API key that a node with keys serves at
// once, in all and from one client address (load balancers' and
// Kubernetes' probes send no key); beyond either they are refused with
// RESOURCE_EXHAUSTED until one ends. The per-address bound keeps one
// client from taking every place: a probe from another address still
// gets one.
const (
	MaxKeylessStreams      = 256
	MaxKeylessStreamsPerIP = 8
)

// keyless counts open calls without a key, in all and by client address.
type keyless struct {
	mu    sync.Mutex
	total int
	by    map[netip.Addr]int
}

// admit takes a place for a call from addr, or says which bound is full.
func (k *keyless) admit(addr netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.total >= MaxKeylessStreams {
		return status.Errorf(codes.ResourceExhausted, "%d health or reflection calls without an API key are in progress, the most a node serves at once; retry, or send `authorization: Bearer <key>`", MaxKeylessStreams)
	}
	if k.by[addr] >= MaxKeylessStreamsPerIP {
		return status.Errorf(codes.ResourceExhausted, "%d health or reflection calls without an API key are in progress from your address, the most a node serves at once from one; retry, or send `authorization: Bearer <key>`", MaxKeylessStreamsPerIP)
	}
	if k.by == nil {
		k.by = make(map[netip.Addr]int)
	}
	k.total++
	k.by[addr]++
	return nil
}

func (k *keyless) release(addr netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.total--
	if k.by[addr]--; k.by[addr] == 0 {
		delete(k.by, addr)
	}
}

// clientAddr is the address of the call's client for the per-address
// bound: its IPv4 address, or the /64 network of its IPv6 address (one
// host commonly holds a whole /64); the zero Addr where there is none (a
// listener that is not TCP).
func clientAddr(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return netip.Addr{}
	}
	a, ok := p.Addr.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := a.AddrPort().Addr().Unmap()
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return ip
}

// keyAuths holds the keyAuth of each Server: a node serves the same core on
// two gRPC servers (its listener and the in-process link of the REST
// gateway and bridge), and a key's publish rate must hold across both.
var keyAuths struct {
	mu sync.Mutex
	m  map[*Server]*keyAuth
}

// keyAuthFor returns s's keyAuth, made from keys on first use.
func keyAuthFor(s *Server, keys []config.APIKey) *keyAuth {
	keyAuths.mu.Lock()
	defer keyAuths.mu.Unlock()
	if keyAuths.m == nil {
		keyAuths.m = make(map[*Server]*keyAuth)
	}
	a := keyAuths.m[s]
	if a == nil {
		a = newKeyAuth(keys)
		keyAuths.m[s] = a
	}
	return a
}

func newKeyAuth(keys []config.APIKey) *keyAuth {
	a := &keyAuth{}
	for _, k := range keys {
		a.keys = append(a.keys, []byte(k.Key))
		a.grants = append(a.grants, newGrant(k))
	}
	return a
}

// open reports methods that need no key: health checks and reflection.
func open(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

func (a *keyAuth) check(ctx context.Context, method string) (context.Context, error) {
	if len(a.keys) == 0 || open(method) {
		return ctx, nil
	}
	// Only the one key's values: FromIncomingContext would copy the
	// whole metadata map on every call.
	g, err := a.lookup(metadata.ValueFromIncomingContext(ctx, "authorization"))
	if err != nil {
		return ctx, err
	}
	return context.WithValue(ctx, grantKey{}, g), nil
}

// tap runs when a call's headers arrive on a network listener, before any
// of its request is read. A call without a valid key is refused there, so
// it costs the server no more than its headers: grpc-go reads a unary call's whole request
// before any interceptor runs, and HTTP/2 lets every stream of a
// connection send a flow-control window's worth of it (64 KB, more once
// the window grows), so a client without a key could hold a goroutine and
// that much memory per stream, for as many streams as it liked, by never
// finishing its requests. Health and reflection need no key; keyless, they
// are counted (MaxKeylessStreams, MaxKeylessStreamsPerIP). The check is done
// again by check (in-process calls have no tap); scopes are checked per
// call. grpc-go calls this with its transport's lock held: it must not
// block.
func (a *keyAuth) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if len(a.keys) == 0 {
		return ctx, nil
	}
	_, err := a.lookup(info.Header.Get("authorization"))
	if err == nil {
		return ctx, nil
	}
	if !open(info.FullMethodName) {
		return ctx, err
	}
	addr := clientAddr(ctx)
	if err := a.keyless.admit(addr); err != nil {
		metricLimitRefusals.WithLabelValues("keyless_grpc_streams").Inc()
		return ctx, err
	}
	// The stream's context ends with the stream, however it ends.
	context.AfterFunc(ctx, func() { a.keyless.release(addr) })
	return ctx, nil
}

// lookup returns the grant of the key in the first authorization value,
// or UNAUTHENTICATED saying what is wrong. a has keys.
func (a *keyAuth) lookup(vals []string) (*grant, error) {
	if len(vals) == 0 || vals[0] == "" {
		return nil, status.Error(codes.Unauthenticated, "missing API key: send `authorization: Bearer <key>`")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "authorization must be `Bearer <key>`")
	}
	found := -1
	for i, k := range a.keys {
		// Compare with every key, so the time taken does not tell which
		// key a guess is close to.
		if subtle.ConstantTimeCompare([]byte(tok), k) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, status.Error(codes.Unauthenticated, "invalid API key")
	}
	return a.grants[found], nil
}

// CheckAPIKey checks an HTTP Authorization header value against the
// server's API keys exactly as its gRPC servers check the authorization
// metadata, so that an HTTP front door can refuse a request before reading
// its body. It returns nil when the key is valid or no keys are
// configured, else an UNAUTHENTICATED status saying what is wrong. Scopes
// are checked later, per call.
func (s *Server) CheckAPIKey(authorization string) error {
	a := keyAuthFor(s, s.cfg.APIKeys)
	if len(a.keys) == 0 {
		return nil
	}
	_, err := a.lookup([]string{authorization})
	return err
}

func (a *keyAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := a.check(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &authedStream{ServerStream: ss, ctx: ctx})
}

// authedStream carries the grant in its context.
type authedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *authedStream) Context() context.Context { return s.ctx }
