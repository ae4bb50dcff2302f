package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"slices"

	"github.com/herald-io/herald/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// bridgeKeyName names the in-process bridge's key in the core's key list
// (and so in the core's messages); the key itself is never logged.
const bridgeKeyName = "herald-serve-bridge"

// withBridgeKey returns the configuration of the core and the key of the
// in-process bridge. With API keys configured, `herald serve` must let its
// own bridge in: it adds a key that no one configures, random per process,
// with the bridge scope, which only the in-process link presents. The key
// exists nowhere else: not in the user's configuration, logs or Info.
// Without API keys (loopback only) every call is allowed and there is no
// key ("").
func withBridgeKey(cfg config.Config, mode Mode) (config.Config, string) {
	if mode != Serve || len(cfg.APIKeys) == 0 {
		return cfg, ""
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	key := hex.EncodeToString(b)
	cfg.APIKeys = append(slices.Clip(cfg.APIKeys), config.APIKey{Name: bridgeKeyName, Key: key, Scopes: []string{"bridge"}})
	return cfg, key
}

// dialInproc opens a client connection on the in-process listener,
// presenting key (none when "") on every call.
func (n *Node) dialInproc(key string) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return n.inproc.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(n.cfg.Limits.MaxGRPCMessage), grpc.MaxCallSendMsgSize(n.cfg.Limits.MaxGRPCMessage)),
	}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(key)))
	}
	return grpc.NewClient("passthrough:///inproc", opts...)
}
