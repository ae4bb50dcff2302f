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
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	herald "github.com/herald-io/herald"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/service"
	"github.com/herald-io/herald/web"
	"github.com/herald-io/herald/wsbridge"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
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

	// GRPCAddr and HTTPAddr are the bound addresses (useful with port 0).
	GRPCAddr net.Addr
	HTTPAddr net.Addr

	core    *service.Server
	engine  service.Engine
	grpc    *grpc.Server
	health  *health.Server
	http    *http.Server
	inproc  *bufconn.Listener
	conn    *grpc.ClientConn // to the core: in-process, or remote in bridge mode
	bridge  *wsbridge.Bridge // nil in core mode
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped sync.Once
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
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.Limits.MaxGRPCMessage), grpc.MaxCallSendMsgSize(cfg.Limits.MaxGRPCMessage)),
	}
	if cfg.Bridge.CoreAPIKey != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(cfg.Bridge.CoreAPIKey)))
	}
	conn, err := grpc.NewClient("passthrough:///"+cfg.Bridge.Core, opts...)
	if err != nil {
		return fmt.Errorf("core %s: %w", cfg.Bridge.Core, err)
	}
	n.conn = conn
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
	if n.mode != BridgeOnly {
		engine, err := newEngine(cfg, n.log)
		if err != nil {
			return err
		}
		n.engine = engine
		n.core = service.New(cfg, engine, n.log)
		if err := n.core.Start(ctx); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		n.grpc = service.NewGRPCServer(cfg, n.core, n.health)
		lis, err := net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			return fmt.Errorf("grpc listener: %w", err)
		}
		n.GRPCAddr = lis.Addr()
		n.inproc = bufconn.Listen(1 << 20)
		n.goServe("grpc", func() error { return n.grpc.Serve(lis) })
		n.goServe("grpc-inproc", func() error { return n.grpc.Serve(n.inproc) })
		conn, err := grpc.NewClient("passthrough:///inproc",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return n.inproc.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.Limits.MaxGRPCMessage), grpc.MaxCallSendMsgSize(cfg.Limits.MaxGRPCMessage)),
		)
		if err != nil {
			return err
		}
		n.conn = conn
		n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		n.health.SetServingStatus(heraldv1.HeraldService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	}

	if n.mode == BridgeOnly {
		if err := n.dialCore(); err != nil {
			return err
		}
	}
	if n.mode != Core {
		b, err := wsbridge.New(cfg, n.conn, wsbridge.Options{Log: n.log.With("component", "wsbridge"), Version: service.Version})
		if err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		n.bridge = b
		if cfg.AnonymousAllowed() {
			n.log.Warn("browsers may connect without a token (anonymous): configure bridge.jwt_secret or jwt_public_keys to require one")
		}
	}

	mux := http.NewServeMux()
	if n.bridge != nil {
		mux.Handle("/ws", n.bridge)
	}
	if n.core != nil {
		gw := runtime.NewServeMux(
			runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
				MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true},
				UnmarshalOptions: protojson.UnmarshalOptions{},
			}),
		)
		if err := heraldv1.RegisterHeraldServiceHandler(ctx, gw, n.conn); err != nil {
			return err
		}
		mux.Handle("/v1/", gw)
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

	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listener: %w", err)
	}
	n.HTTPAddr = lis.Addr()
	n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	n.goServe("http", func() error { return n.http.Serve(lis) })
	n.log.Info("herald started", "grpc", addrString(n.GRPCAddr), "http", addrString(n.HTTPAddr), "engine", cfg.Engine, "mode", n.modeName())
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

// ready answers 200 while the node can serve, 503 while its engine is
// unreachable or it is draining.
func (n *Node) ready(w http.ResponseWriter, r *http.Request) {
	if n.engine != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := n.engine.Ping(ctx); err != nil {
			http.Error(w, "engine unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
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

// Shutdown drains the node: health turns NOT_SERVING, subscribers are told
// to resume elsewhere, in-flight calls finish, and listeners close. After
// ctx's deadline, remaining calls are cut. It is safe to call twice.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.stopped.Do(func() {
		n.health.Shutdown()
		if n.bridge != nil {
			// Before the core: browsers are told to reconnect (4006) and
			// the bridge's presence leaves reach the core.
			if e := n.bridge.Shutdown(ctx); e != nil {
				err = e
			}
		}
		if n.core != nil {
			n.core.Close()
		}
		if n.http != nil {
			if e := n.http.Shutdown(ctx); e != nil {
				err = e
				_ = n.http.Close()
			}
		}
		if n.grpc != nil {
			done := make(chan struct{})
			go func() { n.grpc.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-ctx.Done():
				n.grpc.Stop()
				<-done
			}
		}
		n.cancel()
		n.closeAll()
		n.wg.Wait()
		n.log.Info("herald stopped")
	})
	return err
}

func (n *Node) closeAll() {
	if n.bridge != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.bridge.Shutdown(ctx)
		cancel()
	}
	if n.conn != nil {
		_ = n.conn.Close()
	}
	if n.grpc != nil {
		n.grpc.Stop()
	}
	if n.http != nil {
		_ = n.http.Close()
	}
	if n.engine != nil {
		_ = n.engine.Close()
	}
}

func newEngine(cfg config.Config, log *slog.Logger) (service.Engine, error) {
	switch cfg.Engine {
	case "memory":
		return service.NewMemoryEngine(), nil
	case "redis":
		return service.NewRedisEngine(cfg.Redis, service.RedisOptions{Log: log})
	default:
		return nil, fmt.Errorf("engine %q is not available", cfg.Engine)
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
