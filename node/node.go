// Package node runs a Herald node: the core's gRPC server, the REST
// gateway, health, metrics and (in serve and bridge modes) the WebSocket
// bridge, on the listeners that the configuration names.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	herald "github.com/herald-io/herald"
	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/service"
	"github.com/herald-io/herald/web"
	"github.com/herald-io/herald/wsbridge"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/herald-io/herald/internal/inproc"
)

// Mode selects which parts a node runs.
type Mode int

const (
	// Serve runs the core and the bridge in one process (the default).
	Serve Mode = iota
	// Core runs the core only (gRPC, REST gateway), for split deployments.
	Core
	// BridgeOnly runs the bridge only, against a remote core.
	BridgeOnly
)

// Node is a running Herald node.
type Node struct {
	cfg  config.Config
	log  *slog.Logger
	mode Mode

	// GRPCAddr and HTTPAddr are the bound addresses (useful with port 0);
	// PprofAddr is nil unless pprof_addr is set.
	GRPCAddr  net.Addr
	HTTPAddr  net.Addr
	PprofAddr net.Addr

	core    *service.Server
	engine  engine.Engine
	grpc    *grpc.Server // the gRPC listener's
	health  *health.Server
	http    *http.Server
	httpLis net.Listener
	fresh   freshConns // the HTTP listener's connections yet to send a request
	grpcLis *grpcListener
	pprof   *http.Server
	// link is the in-process link to the core (serve and core modes):
	// the REST gateway's calls, and in serve mode the bridge's, go
	// through it (inproc.go). remote is the bridge's connection to its
	// core in bridge mode.
	link    *inproc.Channel
	remote  *grpc.ClientConn
	rest    *restAPI         // nil in bridge mode
	bridge  *wsbridge.Bridge // nil in core mode
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped sync.Once

	// Readiness and drain. unready: the drain began (readiness off);
	// draining: publishes are refused; inflight: publishes received and
	// not yet acknowledged; engineUp: the last engine Ping succeeded.
	unready, draining, engineUp atomic.Bool
	inflight                    atomic.Int64
}

// Core returns the node's core server (nil in bridge mode).
func (n *Node) Core() *service.Server { return n.core }

// Bridge returns the node's WebSocket bridge (nil in core mode).
func (n *Node) Bridge() *wsbridge.Bridge { return n.bridge }

// bearer authenticates a bridge's calls to a remote core with an API key.
type bearer string

func (k bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (k bearer) RequireTransportSecurity() bool { return false }

// dialCore connects a bridge-only node to its remote core.
func (n *Node) dialCore() error {
	cfg := n.cfg
	if cfg.Bridge.Core == "" {
		return errors.New("bridge mode needs the core's gRPC address: set bridge.core (or --core)")
	}
	creds := insecure.NewCredentials()
	if cfg.Bridge.CoreTLSEnabled() {
		host, _, err := net.SplitHostPort(cfg.Bridge.Core)
		if err != nil {
			return fmt.Errorf("bridge.core %q: %w", cfg.Bridge.Core, err)
		}
		tc, err := coreTLS(cfg.Bridge, host)
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.Limits.MaxGRPCMessage), grpc.MaxCallSendMsgSize(cfg.Limits.MaxGRPCMessage)),
	}
	if cfg.Bridge.CoreAPIKey != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(cfg.Bridge.CoreAPIKey)))
	}
	conn, err := grpc.NewClient("passthrough:///"+cfg.Bridge.Core, opts...)
	if err != nil {
		return fmt.Errorf("core %s: %w", cfg.Bridge.Core, err)
	}
	n.remote = conn
	return nil
}

// Start validates cfg, binds the listeners and starts serving. The node
// runs until Shutdown.
func Start(ctx context.Context, cfg config.Config, mode Mode, log *slog.Logger) (*Node, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if len(cfg.APIKeys) == 0 && mode != BridgeOnly {
		for _, a := range []string{cfg.GRPCAddr, cfg.HTTPAddr} {
			if !config.Loopback(a) {
				return nil, fmt.Errorf("refusing to listen on %s without API keys: configure api_keys (or --api-keys) or bind a loopback address", a)
			}
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Node{cfg: cfg, log: log, mode: mode, cancel: cancel, health: health.NewServer()}
	if err := n.start(ctx); err != nil {
		cancel()
		n.closeAll()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	cfg := n.cfg
	httpTLS, grpcTLS, err := serverTLS(cfg.TLS, n.log)
	if err != nil {
		return err
	}
	n.engineUp.Store(true)
	bridgeKey := "" // the in-process bridge's key (serve mode, with API keys)
	if n.mode != BridgeOnly {
		engine, err := newEngine(cfg, n.log)
		if err != nil {
			return err
		}
		n.engine = engine
		var coreCfg config.Config
		coreCfg, bridgeKey = withBridgeKey(cfg, n.mode)
		n.core = service.New(coreCfg, engine, n.log)
		if err := n.core.Start(ctx); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		// Two ways in to the same core: at a drain the listener is
		// stopped while the in-process link still carries the bridge's
		// streams, so that browsers get every acknowledged publication.
		ext := []grpc.ServerOption{grpc.ChainStreamInterceptor(n.drainStream)}
		if grpcTLS != nil {
			ext = append(ext, grpc.Creds(credentials.NewTLS(grpcTLS)))
		}
		n.grpc = service.NewGRPCServer(coreCfg, n.core, n.health, n.drainUnary, ext...)
		n.link = n.newLink()
		lis, err := net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("grpc listener: %w", err)
		}
		n.GRPCAddr = lis.Addr()
		n.grpcLis = newGRPCListener(lis)
		n.goServe("grpc", func() error { return n.grpc.Serve(n.grpcLis) })
		n.setServing()
		n.goServe("readiness", func() error { n.pollEngine(ctx, engineInterval); return nil })
	}

	if n.mode == BridgeOnly {
		if err := n.dialCore(); err != nil {
			return err
		}
	}
	// Bound before the bridge and front door are made: with port 0, the
	// node's own origins come from the bound address.
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	n.httpLis = lis
	n.HTTPAddr = lis.Addr()
	if n.mode != Core {
		// The bridge's calls carry the bridge's own key (serve mode), or
		// go to the remote core (bridge mode).
		var toCore grpc.ClientConnInterface = n.remote
		if n.link != nil {
			toCore = n.linkClient(bridgeKey)
		}
		b, err := wsbridge.New(cfg, toCore, wsbridge.Options{Log: n.log.With("component", "wsbridge"), Version: service.Version, Origins: cfg.OwnOrigins(ownAddr(cfg.HTTPAddr, n.HTTPAddr)), CoreConfig: n.mode == Serve})
		if err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		n.bridge = b
		if on := cfg.HooksOn(); on != "" {
			n.log.Info("hooks: the application's backend is asked", "hooks", on)
		}
		switch {
		case cfg.Hooks.Connect:
			// Connections without a JWT are the connect hook's to decide.
		case cfg.AnonymousAllowed():
			n.log.Warn("browsers may connect without a token (anonymous): configure bridge.jwt_secret or jwt_public_keys to require one")
		}
	}

	mux := http.NewServeMux()
	if n.bridge != nil {
		mux.Handle("/ws", n.bridge)
		mux.Handle("/sse", n.bridge.SSE())
		mux.Handle("/stream", n.bridge.HTTPStream())
		mux.Handle("/command", n.bridge.Commands())
	}
	if n.core != nil {
		// The REST gateway's calls carry each HTTP request's own
		// Authorization.
		m := newGatewayMarshaler()
		gw := newGatewayMux(m) // rest.go
		client := heraldv1.NewHeraldServiceClient(n.linkClient(""))
		if err := heraldv1.RegisterHeraldServiceHandlerClient(ctx, gw, client); err != nil {
			return err
		}
		n.rest = newRESTAPI(gw, m, client)
		mux.Handle("/v1/", utf8Only(n.rest))
		mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(herald.OpenAPI)
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", n.ready)
	mux.Handle("GET /metrics", promhttp.Handler())

	if n.mode != Core {
		// The browser client (/herald.js, /herald.d.ts) and the console (/).
		// Not "GET /": a method would make it conflict with "/v1/".
		mux.Handle("/", web.Handler())
	}

	if httpTLS != nil {
		lis = wsbridge.TLSListener(lis, httpTLS)
	}
	var checkKey func(string) error
	if n.core != nil {
		checkKey = n.core.CheckAPIKey
	}
	door := newFrontDoor(cfg, ownAddr(cfg.HTTPAddr, n.HTTPAddr), checkKey, n.log, mux)
	// IdleTimeout: a keep-alive connection between requests is closed
	// after 2 min (browsers keep theirs up to 5), else it would hold a
	// descriptor for as long as the client keeps it. Streams (HTTP
	// streaming, SSE) are requests in progress, never idle.
	n.http = &http.Server{Handler: door, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ConnState: n.fresh.track}
	n.goServe("http", func() error { return n.http.Serve(lis) })
	if cfg.PprofAddr != "" {
		if err := n.startPprof(cfg.PprofAddr); err != nil {
			return err
		}
	}
	n.log.Info("herald started", "grpc", addrString(n.GRPCAddr), "http", addrString(n.HTTPAddr), "engine", cfg.Engine, "mode", n.modeName(), "tls", httpTLS != nil, "mtls", cfg.TLS.ClientCAFile != "")
	if n.mode == BridgeOnly {
		metricReady.Set(1)
	}
	if len(cfg.APIKeys) == 0 && n.mode != BridgeOnly {
		n.log.Warn("no API keys configured: any local process may publish; listening on loopback only")
	}
	return nil
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (n *Node) modeName() string {
	return [...]string{"serve", "core", "bridge"}[n.mode]
}

// ready answers 200 while the node can serve, 503 while it is draining,
// its engine does not answer a Ping, (bridge mode) its core is
// unreachable, or its core refuses its bridge's credentials (the body
// says what to set). The gRPC health status follows the engine every
// engineInterval; /readyz pings it at once.
func (n *Node) ready(w http.ResponseWriter, r *http.Request) {
	var pingErr error
	if n.engine != nil && !n.unready.Load() {
		ctx, cancel := context.WithTimeout(r.Context(), engineInterval)
		pingErr = n.engine.Ping(ctx)
		cancel()
	}
	switch {
	case n.unready.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case pingErr != nil:
		http.Error(w, "engine unavailable", http.StatusServiceUnavailable)
	case n.bridge != nil && n.bridge.CoreError() != nil:
		http.Error(w, n.bridge.CoreError().Error(), http.StatusServiceUnavailable)
	case n.mode == BridgeOnly && n.remote.GetState() != connectivity.Ready:
		// Not only TRANSIENT_FAILURE: a core that accepts TCP and never
		// answers (a wrong port, a hung process) keeps the connection
		// CONNECTING, and a bridge that cannot reach its core must not
		// take browsers. Healthy, the connection is never idle: the
		// bridge's session stream to the core is always open.
		http.Error(w, "core unavailable: connection "+strings.ToLower(n.remote.GetState().String()), http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ready\n"))
	}
}

// engineInterval is how often readiness pings the engine.
const engineInterval = 2 * time.Second

// pollEngine pings the engine every interval until ctx ends, keeping
// engineUp and the gRPC health status current.
func (n *Node) pollEngine(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := n.engine.Ping(pctx)
		cancel()
		if up := err == nil; n.engineUp.Swap(up) != up {
			if up {
				n.log.Info("engine reachable again; ready")
			} else if ctx.Err() == nil {
				n.log.Error("engine unreachable; not ready", "err", err)
			}
			n.setServing()
		}
	}
}

// setServing sets the gRPC health status from engineUp. During a drain the
// health server is shut down and ignores it: NOT_SERVING stays.
func (n *Node) setServing() {
	if n.unready.Load() {
		return
	}
	st := healthpb.HealthCheckResponse_SERVING
	if !n.engineUp.Load() {
		st = healthpb.HealthCheckResponse_NOT_SERVING
		metricReady.Set(0)
	} else {
		metricReady.Set(1)
	}
	n.health.SetServingStatus("", st)
	n.health.SetServingStatus(heraldv1.HeraldService_ServiceDesc.ServiceName, st)
}

// startPprof serves net/http/pprof on its own listener.
func (n *Node) startPprof(addr string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof listener: %w", err)
	}
	n.PprofAddr = lis.Addr()
	n.pprof = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.goServe("pprof", func() error { return n.pprof.Serve(lis) })
	n.log.Info("pprof enabled", "addr", lis.Addr().String())
	return nil
}

// errDraining refuses publishes on a draining node.
var errDraining = status.Error(codes.Unavailable, "node is draining; publish to another node")

func isPublish(method string) bool {
	switch method {
	case heraldv1.HeraldService_Publish_FullMethodName, heraldv1.HeraldService_Broadcast_FullMethodName, heraldv1.HeraldService_PublishStream_FullMethodName:
		return true
	}
	return false
}

// drainUnary refuses Publish and Broadcast once the node drains, and
// counts those in flight so that the drain can wait for them.
func (n *Node) drainUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !isPublish(info.FullMethod) {
		return h(ctx, req)
	}
	n.inflight.Add(1)
	defer n.inflight.Add(-1)
	if n.draining.Load() {
		return nil, errDraining
	}
	return h(ctx, req)
}

// drainStream ends a PublishStream at its first request after the drain
// began (UNAVAILABLE, after the acknowledgements of everything before it),
// and counts requests received and not yet acknowledged.
func (n *Node) drainStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !isPublish(info.FullMethod) {
		return h(srv, ss)
	}
	if n.draining.Load() {
		return errDraining
	}
	ds := &drainStream{ServerStream: ss, n: n}
	defer func() { n.inflight.Add(-ds.pending.Load()) }() // acks never sent
	return h(srv, ds)
}

type drainStream struct {
	grpc.ServerStream
	n       *Node
	pending atomic.Int64
}

func (s *drainStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	// Count, then check: the drain sets draining, then waits for
	// inflight to reach 0; one of the two sees the other.
	s.pending.Add(1)
	s.n.inflight.Add(1)
	if s.n.draining.Load() {
		s.pending.Add(-1)
		s.n.inflight.Add(-1)
		return errDraining
	}
	return nil
}

func (s *drainStream) SendMsg(m any) error {
	err := s.ServerStream.SendMsg(m)
	s.pending.Add(-1)
	s.n.inflight.Add(-1)
	return err
}

func (n *Node) goServe(name string, serve func() error) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
}

// Shutdown drains the node, in this order: readiness turns off (/readyz
// 503, gRPC health NOT_SERVING) and, for drain_delay, the node keeps
// serving so that load balancers move away; new WebSocket upgrades and new
// publishes are refused (UNAVAILABLE), and publishes in flight finish and
// are acknowledged; the bridge fans out what the core accepted, then tells
// browsers to reconnect elsewhere (4006 with a jittered delay); upstream
// and Subscribe streams end; listeners close. After ctx's deadline,
// whatever remains is cut. It is safe to call twice.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopped.Do(func() {
		n.unready.Store(true)
		metricReady.Set(0)
		n.health.Shutdown()
		n.log.Info("draining", "drain_delay", n.cfg.DrainDelay.D())
		if d := n.cfg.DrainDelay.D(); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if n.bridge != nil {
			n.bridge.StopAccepting()
		}
		n.draining.Store(true)
		waitFor(ctx, func() bool { return n.inflight.Load() <= 0 })
		if n.bridge != nil {
			if n.core != nil {
				n.bridge.CatchUp(ctx)
			}
			// Before the core: browsers are told to reconnect (4006) and
			// the bridge's presence leaves reach the core.
			if e := n.bridge.Shutdown(ctx); e != nil {
				err = fmt.Errorf("bridge: %w", e)
			}
		}
		if n.core != nil {
			n.core.Close()
		}
		if n.http != nil {
			n.fresh.closeAll()
			if e := n.http.Shutdown(ctx); e != nil {
				err = errors.Join(err, fmt.Errorf("http listener: %w", e))
				_ = n.http.Close()
			}
		}
		if n.grpc != nil {
			// What can still be open: unary calls, and PublishStreams
			// that sent nothing since the drain began (they would wait
			// forever); give them a moment, then cut. A connection that
			// never sent a byte has no call to finish, and grpc-go would
			// wait for its handshake first (grpcListener): it goes now.
			n.grpcLis.closeSilent()
			gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			done := make(chan struct{})
			go func() { n.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-gctx.Done():
				n.grpcLis.closeAll()
				n.grpc.Stop()
				select {
				case <-done:
				case <-ctx.Done():
					err = errors.Join(err, errors.New("grpc listener: connections still open at the deadline"))
				}
			}
			cancel()
			n.link.Close()
		}
		if n.pprof != nil {
			_ = n.pprof.Close()
		}
		n.cancel()
		n.closeAll()
		n.wg.Wait()
		n.log.Info("herald stopped")
	})
	return err
}

// utf8Only answers 400 to requests whose path or query is not UTF-8: the
// gateway would pass such strings into protobuf string fields, which cannot
// be marshalled, and answer 500. (Found by FuzzRESTPublish.)
func utf8Only(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := utf8.ValidString(r.URL.Path)
		if ok && r.URL.RawQuery == "" {
			h.ServeHTTP(w, r)
			return
		}
		for k, vs := range r.URL.Query() {
			ok = ok && utf8.ValidString(k)
			for _, v := range vs {
				ok = ok && utf8.ValidString(v)
			}
		}
		if !ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"code":3,"message":"the path and query must be UTF-8","details":[]}`))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) {
	for !cond() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (n *Node) closeAll() {
	if n.bridge != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.bridge.Shutdown(ctx)
		cancel()
	}
	if n.remote != nil {
		_ = n.remote.Close()
	}
	if n.grpc != nil {
		n.grpcLis.closeAll()
		n.grpc.Stop()
	}
	if n.link != nil {
		n.link.Close()
	}
	if n.http != nil {
		_ = n.http.Close()
	}
	if n.httpLis != nil {
		_ = n.httpLis.Close() // not served yet when start failed
	}
	if n.pprof != nil {
		_ = n.pprof.Close()
	}
	if n.engine != nil {
		_ = n.engine.Close()
	}
}

// Run starts a node and serves until ctx ends, then shuts it down within
// the configured shutdown timeout.
func Run(ctx context.Context, cfg config.Config, mode Mode, log *slog.Logger) error {
	n, err := Start(ctx, cfg, mode, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.D())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
	defer cancel()
	return n.Shutdown(sctx)
}
