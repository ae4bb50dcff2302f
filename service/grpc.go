package service

import (
	"context"
	"runtime"
	"time"

	"github.com/herald-io/herald/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// KeepaliveTimeout is how long the gRPC listener waits for a keepalive
// ping's answer before it closes the connection; it is also the
// connection's TCP_USER_TIMEOUT (unacknowledged writes), as grpc-go sets.
const KeepaliveTimeout = 10 * time.Second

// MaxHeaderListSize bounds a gRPC call's headers (metadata), decoded.
const MaxHeaderListSize = 1 << 20

// HandshakeTimeout bounds a gRPC connection's handshake.
const HandshakeTimeout = 10 * time.Second

// NewGRPCServer returns a grpc.Server serving s, the standard health
// service (reporting hs) and server reflection, with API-key
// authentication (the keys s was made with), message size limits and
// keepalive settings from cfg. inner, when not nil, is a unary interceptor
// of the caller's that runs inside the core's (see Interceptors); extra
// are more options, e.g. stream interceptors, which run after the core's.
func NewGRPCServer(cfg config.Config, s *Server, hs *health.Server, inner grpc.UnaryServerInterceptor, extra ...grpc.ServerOption) *grpc.Server {
	unary, stream := Interceptors(s, inner)
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.Limits.MaxGRPCMessage),
		grpc.MaxSendMsgSize(cfg.Limits.MaxGRPCMessage),
		// A connection has this long for its TLS handshake and HTTP/2
		// preface (grpc-go's default is 120 s): a socket that connects
		// and says nothing holds a descriptor and a goroutine no longer
		// than an HTTP request's headers may take (ReadHeaderTimeout).
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.NumStreamWorkers(streamWorkers()),
		// A call's headers may decode to 1 MiB, as an HTTP request's
		// (net/http's default); grpc-go's default is 16 MiB, and HPACK
		// lets a few KB of references decode to that: 20 connections
		// sending such blocks kept a core busy checking each header
		// list before it was refused (21 ms of CPU a block, 1.8 ms with
		// this limit). Clients learn it from SETTINGS and fail before
		// sending.
		grpc.MaxHeaderListSize(MaxHeaderListSize),
		grpc.InTapHandle(keyAuthFor(s, s.cfg.APIKeys).tap),
		grpc.UnaryInterceptor(unary),
		grpc.ChainStreamInterceptor(stream...),
	}
	gs := grpc.NewServer(append(opts, extra...)...)
	heraldv1.RegisterHeraldServiceServer(gs, s)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs
}

// streamWorkers is how many goroutines the gRPC server keeps to run calls.
// Without them it starts a goroutine per call, whose stack then grows
// (copied twice, from 2 KB to 8 KB) on the way through gRPC and the core:
// 7–11% of the server's CPU in a profile of one unary Publish per
// notification (BENCHMARKS.md). A call that finds every worker busy (a
// long-lived stream holds one) gets a goroutine of its own, as before.
func streamWorkers() uint32 { return uint32(max(16, 4*runtime.GOMAXPROCS(0))) }

// Interceptors returns the interceptors every server of s runs: for unary
// calls one interceptor doing API-key authentication (the keys s was made
// with), then running inner (when not nil) and the handler with a panic
// turned into INTERNAL; for streams the same two steps as a chain,
// outermost first. NewGRPCServer installs them; an in-process link to s
// (node's, in `herald serve`) runs the same ones.
//
// The unary steps are one function, not a chain, because a chain of n
// interceptors makes n-1 handler closures per call (grpc's and
// internal/inproc's alike), and a unary Publish per notification is the
// path that counts (BENCHMARKS.md, issue 13).
func Interceptors(s *Server, inner grpc.UnaryServerInterceptor) (grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	auth := keyAuthFor(s, s.cfg.APIKeys)
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, err := auth.check(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return runUnary(s, ctx, req, info, inner, h)
	}
	return unary, []grpc.StreamServerInterceptor{auth.stream, recoverStream(s)}
}

// runUnary runs inner (when not nil) around h, or h, turning a panic in
// either into INTERNAL for that call only.
func runUnary(s *Server, ctx context.Context, req any, info *grpc.UnaryServerInfo, inner grpc.UnaryServerInterceptor, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("panic in handler", "method", info.FullMethod, "panic", r)
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	if inner != nil {
		return inner(ctx, req, info, h)
	}
	return h(ctx, req)
}

func recoverStream(s *Server) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in handler", "method", info.FullMethod, "panic", r)
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(srv, ss)
	}
}
