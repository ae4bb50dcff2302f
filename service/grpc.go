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

// NewGRPCServer returns a grpc.Server serving s, the standard health
// service (reporting hs) and server reflection, with API-key
// authentication (the keys s was made with), message size limits and
// keepalive settings from cfg.
func NewGRPCServer(cfg config.Config, s *Server, hs *health.Server, extra ...grpc.ServerOption) *grpc.Server {
	unary, stream := Interceptors(s)
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.Limits.MaxGRPCMessage),
		grpc.MaxSendMsgSize(cfg.Limits.MaxGRPCMessage),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.NumStreamWorkers(streamWorkers()),
		grpc.ChainUnaryInterceptor(unary...),
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

// Interceptors returns the interceptors every server of s runs, outermost
// first: API-key authentication (the keys s was made with), then a
// handler's panic turned into INTERNAL. NewGRPCServer installs them; an
// in-process link to s (node's, in `herald serve`) runs the same ones.
func Interceptors(s *Server) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	auth := keyAuthFor(s, s.cfg.APIKeys)
	return []grpc.UnaryServerInterceptor{auth.unary, recoverUnary(s)}, []grpc.StreamServerInterceptor{auth.stream, recoverStream(s)}
}

// recoverUnary turns a panic in a handler into INTERNAL for that call only.
func recoverUnary(s *Server) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in handler", "method", info.FullMethod, "panic", r)
				err = status.Error(codes.Internal, "internal error")
			}
		}()
		return h(ctx, req)
	}
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
