package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// Client talks to a Herald node (or a load balancer in front of several)
// over one gRPC connection. It is safe for concurrent use; make one per
// process and share it.
type Client struct {
	addr  string
	conn  *grpc.ClientConn
	svc   heraldv1.HeraldServiceClient
	retry Retry
}

// keepaliveParams: see Dial.
var keepaliveParams = keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true}

// Dial returns a client of the node at addr ("host:port"). It does not
// wait for the connection: the first call makes it, and a call made while
// the node is unreachable fails with UNAVAILABLE (which Publish retries).
// Errors are for options that cannot work (a CA file that cannot be read).
// By default the connection is plaintext, for loopback; see WithTLS,
// WithCAFile and WithClientCert.
//
// The connection pings the node after 30 s without activity and is given
// up when a ping is not answered within 10 s, so that a dead peer is
// noticed. A node refuses pings more frequent than every 10 s (its
// keepalive enforcement's MinTime): a client that pings more often has its
// connection closed with GOAWAY ENHANCE_YOUR_CALM ("too_many_pings") and
// its streams end. If you pass your own grpc.WithKeepaliveParams through
// WithDialOptions, keep its Time at 10 s or more.
func Dial(addr string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	creds, err := o.credentials()
	if err != nil {
		return nil, err
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(keepaliveParams),
	}
	if o.apiKey != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(o.apiKey)))
	}
	dopts = append(dopts, o.dialOptions...)
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return &Client{addr: addr, conn: conn, svc: heraldv1.NewHeraldServiceClient(conn), retry: o.retry.withDefaults()}, nil
}

func (o *options) credentials() (credentials.TransportCredentials, error) {
	if !o.tls {
		return insecure.NewCredentials(), nil
	}
	cfg := o.tlsConfig
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate found", o.caFile)
		}
	}
	if o.certFile != "" || o.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	return credentials.NewTLS(cfg), nil
}

// bearer sends an API key with every call.
type bearer string

func (k bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}

// RequireTransportSecurity is false: plaintext is how loopback
// deployments run.
func (k bearer) RequireTransportSecurity() bool { return false }

// Addr returns the address the client dials.
func (c *Client) Addr() string { return c.addr }

// Service returns the generated gRPC client on the client's connection
// (with its API key and TLS), for the calls this package does not wrap:
// History, Presence, Channels, Broadcast, Info, Disconnect…
func (c *Client) Service() heraldv1.HeraldServiceClient { return c.svc }

// Conn returns the client's gRPC connection.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection; calls in flight fail with CANCELED, and
// Streams and Subscriptions stop.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) closed() bool { return c.conn.GetState() == connectivity.Shutdown }
