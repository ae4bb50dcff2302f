package hooks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// grpcCaller calls a HooksService over gRPC.
type grpcCaller struct {
	cc  *grpc.ClientConn
	cli hooksv1.HooksServiceClient
}

// bearer sends the hooks API key with every call.
type bearer string

func (k bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (k bearer) RequireTransportSecurity() bool { return false }

func newGRPCCaller(cfg config.Hooks, opts Options) (*grpcCaller, error) {
	creds := insecure.NewCredentials()
	if cfg.TLSEnabled() {
		host, _, err := net.SplitHostPort(cfg.GRPCAddr)
		if err != nil {
			return nil, fmt.Errorf("hooks.grpc_addr %q: %w", cfg.GRPCAddr, err)
		}
		tc, err := clientTLS(cfg, host)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(tc)
	}
	// Reconnect soon after the backend is back: gRPC's default backoff
	// grows to two minutes, far past the circuit's probes.
	bo := backoff.DefaultConfig
	bo.BaseDelay, bo.MaxDelay = 100*time.Millisecond, max(cfg.CircuitOpen.D(), 500*time.Millisecond)
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bo, MinConnectTimeout: max(cfg.Timeout.D(), time.Second)}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.MaxMessage)),
		grpc.WithUserAgent(opts.UserAgent),
	}
	if cfg.APIKey != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearer(cfg.APIKey)))
	}
	cc, err := grpc.NewClient("passthrough:///"+cfg.GRPCAddr, dial...)
	if err != nil {
		return nil, fmt.Errorf("hooks.grpc_addr %s: %w", cfg.GRPCAddr, err)
	}
	return &grpcCaller{cc: cc, cli: hooksv1.NewHooksServiceClient(cc)}, nil
}

func (g *grpcCaller) call(ctx context.Context, hook string, req, resp proto.Message) error {
	var (
		out proto.Message
		err error
	)
	switch hook {
	case "connect":
		out, err = g.cli.Connect(ctx, req.(*hooksv1.ConnectRequest))
	case "refresh":
		out, err = g.cli.Refresh(ctx, req.(*hooksv1.RefreshRequest))
	case "subscribe":
		out, err = g.cli.Subscribe(ctx, req.(*hooksv1.SubscribeRequest))
	case "publish":
		out, err = g.cli.Publish(ctx, req.(*hooksv1.PublishRequest))
	case "rpc":
		out, err = g.cli.RPC(ctx, req.(*hooksv1.RPCRequest))
	default:
		return errors.New("unknown hook " + hook)
	}
	if err != nil {
		return err
	}
	proto.Merge(resp, out)
	return nil
}

func (g *grpcCaller) close() error { return g.cc.Close() }

// clientTLS is the TLS configuration of calls to the backend: its CAs (or
// the system's) and, for mTLS, the bridge's certificate.
func clientTLS(cfg config.Hooks, serverName string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("hooks.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("hooks.ca_file %s: no PEM certificate", cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("hooks.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
