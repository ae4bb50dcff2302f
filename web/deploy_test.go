package web_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Deployments for the admin and npm tests, configured as in production:
// API keys on the core (an admin key, a read-only key, the bridge's own
// key), JWTs required of browsers, and a split deployment behind one origin
// (a front door sending /v1/ to the core and the rest to the bridge, as a
// path-routing load balancer does), so that the console, its WebSockets and
// its REST calls share an origin.

const (
	adminKey      = "admin-key-0123456789abcdef"
	readOnlyKey   = "read-key-0123456789abcdef"
	edgeKey       = "edge-bridge-key-0123456789abcdef"
	browserJWTKey = "browser-jwt-secret-0123456789abcdef"
)

// adminDeployment is a core and a bridge behind one front door.
type adminDeployment struct {
	base    string // the front door, http://127.0.0.1:PORT
	core    *node.Node
	bridge  *node.Node
	backend heraldv1.HeraldServiceClient // the core over gRPC, with the admin key
}

func startAdminDeployment(t *testing.T) *adminDeployment {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := "http://" + lis.Addr().String()
	core := startNode(t, node.Core, func(c *config.Config) {
		c.APIKeys = []config.APIKey{
			{Name: "ops", Key: adminKey, Scopes: []string{"admin"}},
			{Name: "dashboard", Key: readOnlyKey, Scopes: []string{"read"}},
			{Name: "edge", Key: edgeKey, Scopes: []string{"bridge"}},
		}
		c.Bridge.AllowedOrigins = []string{origin}
	})
	bridge := startNode(t, node.BridgeOnly, func(c *config.Config) {
		c.Bridge.Core = core.GRPCAddr.String()
		c.Bridge.CoreAPIKey = edgeKey
		c.Bridge.JWTSecret = browserJWTKey
		c.Bridge.AllowedOrigins = []string{origin}
	})
	// Like most load balancers, the front door sends each request to its
	// backend with the backend's own address as Host, and says where the
	// request came from in X-Forwarded-*; the browser's Origin goes through.
	proxy := func(n *node.Node) http.Handler {
		target := &url.URL{Scheme: "http", Host: n.HTTPAddr.String()}
		return &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		}}
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", proxy(core))
	mux.Handle("/", proxy(bridge))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &adminDeployment{base: origin, core: core, bridge: bridge, backend: dialWithKey(t, core, adminKey)}
}

// browserToken is an HS256 JWT for user, valid for an hour.
func browserToken(t *testing.T, user string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(browserJWTKey))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialWithKey is a gRPC client of n's core that presents an API key
// (none when key is "").
func dialWithKey(t *testing.T, n *node.Node, key string) heraldv1.HeraldServiceClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if key != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerKey(key)))
	}
	conn, err := grpc.NewClient(n.GRPCAddr.String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return heraldv1.NewHeraldServiceClient(conn)
}

// bearerKey sends an API key as `authorization: Bearer <key>`.
type bearerKey string

func (k bearerKey) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (bearerKey) RequireTransportSecurity() bool { return false }
