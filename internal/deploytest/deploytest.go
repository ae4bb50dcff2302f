// Package deploytest starts Herald deployments for end-to-end tests in
// the shapes users deploy, so that one test body runs against each:
//
//   - serve or split: one `herald serve` node, or a `herald core` node and
//     a `herald bridge` node that dials it;
//   - demo or production: the loopback demo (no keys, no TLS, anonymous
//     browsers), or production: API keys, HS256 JWTs for browsers with
//     jwt_audience and jwt_issuer, TLS on every listener, and (split) the
//     bridge dialing its core over TLS, verified against the test CA, with
//     a key of the bridge scope.
//
// Every node is a real node on 127.0.0.1 with ports chosen by the system,
// shut down by t.Cleanup. Clients made here (gRPC, REST, WebSocket) carry
// the deployment's credentials and trust its CA.
package deploytest

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/tlstest"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Shape is how a deployment is put together.
type Shape struct {
	// Split runs a core node and a bridge node instead of one serve node.
	Split bool
	// Production turns on API keys, JWTs and TLS.
	Production bool
}

func (s Shape) String() string {
	mode, sec := "serve", "demo"
	if s.Split {
		mode = "split"
	}
	if s.Production {
		sec = "production"
	}
	return mode + "/" + sec
}

// Shapes is every shape: {serve, split} × {demo, production}.
var Shapes = []Shape{{false, false}, {false, true}, {true, false}, {true, true}}

// Production credentials. The backend's key is an admin key, as
// `--api-keys name=key` makes; the split bridge's key has the bridge scope
// only.
const (
	BackendKey = "backend-key-0123456789abcdef"
	BridgeKey  = "edge-bridge-key-0123456789abcdef"
	JWTSecret  = "jwt-secret-0123456789abcdef-0123456789"
	Audience   = "herald"
	Issuer     = "https://auth.example.test"
)

// Deployment is a running deployment.
type Deployment struct {
	Shape
	// Core serves gRPC and REST; Bridge serves browsers (the same node in
	// serve mode).
	Core, Bridge *node.Node
	// TLS holds the CA and certificates (nil in the demo).
	TLS *tlstest.Files
}

// Run runs body as a subtest for each shape, on a deployment started with
// edit applied to every node's configuration.
func Run(t *testing.T, shapes []Shape, edit func(*config.Config), body func(t *testing.T, d *Deployment)) {
	t.Helper()
	for _, s := range shapes {
		t.Run(strings.ReplaceAll(s.String(), "/", "_"), func(t *testing.T) {
			body(t, Start(t, s, edit))
		})
	}
}

// Start starts a deployment of shape s, with edit (which may be nil)
// applied to the configuration of every node after the shape's own
// settings.
func Start(t testing.TB, s Shape, edit func(*config.Config)) *Deployment {
	t.Helper()
	d := &Deployment{Shape: s}
	if s.Production {
		d.TLS = tlstest.NewFiles(t)
	}
	base := func() config.Config {
		c := config.Default()
		c.GRPCAddr, c.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		c.ShutdownTimeout = config.Duration(5 * time.Second)
		if s.Production {
			c.TLS = config.TLS{CertFile: d.TLS.Cert, KeyFile: d.TLS.Key}
			c.Bridge.JWTSecret = JWTSecret
			c.Bridge.JWTAudience, c.Bridge.JWTIssuer = Audience, Issuer
		}
		return c
	}
	coreCfg := base()
	if s.Production {
		coreCfg.APIKeys = []config.APIKey{{Name: "backend", Key: BackendKey}}
		if s.Split {
			coreCfg.APIKeys = append(coreCfg.APIKeys, config.APIKey{Name: "edge", Key: BridgeKey, Scopes: []string{"bridge"}})
		}
	}
	if edit != nil {
		edit(&coreCfg)
	}
	mode := node.Serve
	if s.Split {
		mode = node.Core
	}
	d.Core = start(t, coreCfg, mode)
	d.Bridge = d.Core
	if s.Split {
		bc := base()
		bc.Bridge.Core = d.Core.GRPCAddr.String()
		if s.Production {
			bc.Bridge.CoreAPIKey = BridgeKey
			bc.Bridge.CoreCAFile = d.TLS.CAFile
		}
		if edit != nil {
			edit(&bc)
		}
		bc.Bridge.Core = d.Core.GRPCAddr.String()
		// As the README deploys it: a bridge has no namespaces of its
		// own, it takes the core's.
		bc.Namespaces = nil
		d.Bridge = startBridge(t, bc)
	}
	return d
}

// startBridge starts a bridge node and waits until it has its core's
// namespaces, so that a test's first subscribe is not answered "not yet".
func startBridge(t testing.TB, cfg config.Config) *node.Node {
	t.Helper()
	n := start(t, cfg, node.BridgeOnly)
	deadline := time.Now().Add(10 * time.Second)
	for !n.Bridge().CoreNamespaces() {
		if time.Now().After(deadline) {
			t.Fatal("the bridge did not get its core's namespaces within 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

// StartBridge starts another bridge node of a split deployment, with its
// HTTP listener on httpAddr (say, the address of one that was stopped).
func (d *Deployment) StartBridge(t testing.TB, httpAddr string, edit func(*config.Config)) *node.Node {
	t.Helper()
	c := config.Default()
	c.GRPCAddr, c.HTTPAddr = "127.0.0.1:0", httpAddr
	c.ShutdownTimeout = config.Duration(5 * time.Second)
	c.Bridge.Core = d.Core.GRPCAddr.String()
	if d.Production {
		c.TLS = config.TLS{CertFile: d.TLS.Cert, KeyFile: d.TLS.Key}
		c.Bridge.JWTSecret = JWTSecret
		c.Bridge.JWTAudience, c.Bridge.JWTIssuer = Audience, Issuer
		c.Bridge.CoreAPIKey = BridgeKey
		c.Bridge.CoreCAFile = d.TLS.CAFile
	}
	if edit != nil {
		edit(&c)
	}
	c.Namespaces = nil // the core's, as in Start
	return startBridge(t, c)
}

func start(t testing.TB, cfg config.Config, mode node.Mode) *node.Node {
	t.Helper()
	n, err := node.Start(context.Background(), cfg, mode, nil)
	if err != nil {
		t.Fatalf("starting a %v node: %v", mode, err)
	}
	t.Cleanup(func() { Stop(t, n) })
	return n
}

// Stop shuts a node down (it is idempotent: a test may stop a node before
// its cleanup does).
func Stop(t testing.TB, n *node.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("node shutdown: %v", err)
	}
}

func (d *Deployment) scheme(plain string) string {
	if d.Production {
		return plain + "s"
	}
	return plain
}

// BrowserURL is the base URL at which browsers reach the bridge, for
// example https://127.0.0.1:40123.
func (d *Deployment) BrowserURL() string {
	return d.scheme("http") + "://" + d.Bridge.HTTPAddr.String()
}

// WSURL is the bridge's WebSocket endpoint.
func (d *Deployment) WSURL() string {
	return d.scheme("ws") + "://" + d.Bridge.HTTPAddr.String() + "/ws"
}

// RESTURL is the base URL of the core's REST gateway.
func (d *Deployment) RESTURL() string { return d.scheme("http") + "://" + d.Core.HTTPAddr.String() }

// ClientTLS is the TLS configuration of a client trusting the deployment's
// CA (nil in the demo).
func (d *Deployment) ClientTLS(t testing.TB) *tls.Config {
	if !d.Production {
		return nil
	}
	return d.TLS.ClientTLS(t, false)
}

// bearer is a per-RPC credential with an API key.
type bearer string

func (k bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

func (k bearer) RequireTransportSecurity() bool { return false }

// Backend returns a gRPC client of the core as a backend makes it: with
// the backend's key and TLS in production.
func (d *Deployment) Backend(t testing.TB) heraldv1.HeraldServiceClient {
	t.Helper()
	return d.dial(t, true)
}

// BackendWithoutKey returns a gRPC client of the core that presents no
// API key (over TLS in production).
func (d *Deployment) BackendWithoutKey(t testing.TB) heraldv1.HeraldServiceClient {
	t.Helper()
	return d.dial(t, false)
}

func (d *Deployment) dial(t testing.TB, withKey bool) heraldv1.HeraldServiceClient {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if d.Production {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(d.ClientTLS(t)))}
		if withKey {
			opts = append(opts, grpc.WithPerRPCCredentials(bearer(BackendKey)))
		}
	}
	cc, err := grpc.NewClient(d.Core.GRPCAddr.String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return heraldv1.NewHeraldServiceClient(cc)
}

// HTTPClient is an HTTP client trusting the deployment's CA.
func (d *Deployment) HTTPClient(t testing.TB) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: d.ClientTLS(t)}}
}

// REST calls the core's REST gateway as a backend does (the backend's key
// in production; JSON bodies) and returns the status and body.
func (d *Deployment) REST(t testing.TB, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.RESTURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if d.Production {
		req.Header.Set("Authorization", "Bearer "+BackendKey)
	}
	resp, err := d.HTTPClient(t).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Token returns a browser token for user with the given extra claims: in
// production an HS256 JWT with the deployment's audience and issuer,
// valid for an hour; in the demo "" (anonymous), and user must be "".
func (d *Deployment) Token(t testing.TB, user string, extra map[string]any) string {
	t.Helper()
	if !d.Production {
		return ""
	}
	claims := jwt.MapClaims{"sub": user, "exp": time.Now().Add(time.Hour).Unix(), "aud": Audience, "iss": Issuer}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(JWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// DialWS opens a WebSocket to the bridge with the subprotocol, as a page
// of the bridge's own origin does.
func (d *Deployment) DialWS(t testing.TB, subprotocol string) *websocket.Conn {
	t.Helper()
	return d.DialWSHeader(t, subprotocol, nil)
}

// DialWSHeader is DialWS with more request headers (a Cookie, say).
func (d *Deployment) DialWSHeader(t testing.TB, subprotocol string, header http.Header) *websocket.Conn {
	t.Helper()
	dl := websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: d.ClientTLS(t)}
	if subprotocol != "" {
		dl.Subprotocols = []string{subprotocol}
	}
	h := http.Header{"Origin": {d.BrowserURL()}}
	for k, v := range header {
		h[k] = v
	}
	ws, _, err := dl.Dial(d.WSURL(), h)
	if err != nil {
		t.Fatalf("WebSocket to %s: %v", d.WSURL(), err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws
}
