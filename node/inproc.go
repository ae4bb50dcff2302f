package node

import (
	"crypto/rand"
	"encoding/hex"
	"slices"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/inproc"
	"github.com/herald-io/herald/service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
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

// newLink returns the in-process link to the core, for the REST gateway
// and (in serve mode) the bridge: the core's HeraldService with the same
// interceptors as its gRPC listener (API keys, recovery from panics, the
// node's drain), and its message size limit, without a network in
// between (internal/inproc). Health and reflection are only on the
// listener: nothing in the process calls them.
func (n *Node) newLink() *inproc.Channel {
	unary, stream := service.Interceptors(n.core, n.drainUnary)
	link := inproc.New(inproc.Options{
		Unary:          []grpc.UnaryServerInterceptor{unary},
		Stream:         append(stream, n.drainStream),
		MaxRecvMsgSize: n.cfg.Limits.MaxGRPCMessage,
		HandOver:       handOver,
	})
	heraldv1.RegisterHeraldServiceServer(link, n.core)
	return link
}

// linkClient is a client on the link presenting key (none when "") on
// every call, as a gRPC connection with that key as its per-RPC
// credential would.
func (n *Node) linkClient(key string) grpc.ClientConnInterface {
	if key == "" {
		return n.link.Client(nil)
	}
	return n.link.Client(metadata.Pairs("authorization", "Bearer "+key))
}

// handOver is the link's fast path for the messages the core sends most:
// every publication to the bridge, every publish answer to the REST
// gateway. The fields are assigned one by one (a message must not be
// copied whole); TestHandOverCoversEveryField fails when one is added to
// the proto and not here.
func handOver(dst, src proto.Message) bool {
	switch s := src.(type) {
	case *heraldv1.SubscribeManyResponse:
		d, ok := dst.(*heraldv1.SubscribeManyResponse)
		if ok {
			d.Id, d.Kind = s.Id, s.Kind
		}
		return ok
	case *heraldv1.PublishResponse:
		d, ok := dst.(*heraldv1.PublishResponse)
		if ok {
			d.Position, d.Duplicate = s.Position, s.Duplicate
		}
		return ok
	}
	return false
}
