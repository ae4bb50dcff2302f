package client

import (
	"crypto/tls"

	"google.golang.org/grpc"
)

// An Option configures Dial.
type Option func(*options)

type options struct {
	apiKey            string
	tls               bool
	tlsConfig         *tls.Config
	caFile            string
	certFile, keyFile string
	dialOptions       []grpc.DialOption
	retry             Retry
}

// WithAPIKey authenticates every call, including those made through
// Service, with `authorization: Bearer <key>` metadata. The key travels in
// the clear unless TLS is on; use TLS beyond loopback.
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithTLS connects over TLS configured by cfg (cloned; nil means the
// system's roots and TLS 1.2 or later). WithCAFile and WithClientCert add
// to it.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		o.tls = true
		if cfg != nil {
			o.tlsConfig = cfg.Clone()
		}
	}
}

// WithCAFile connects over TLS and verifies the node's certificate against
// the CAs in the PEM file at path instead of the system's.
func WithCAFile(path string) Option {
	return func(o *options) { o.tls, o.caFile = true, path }
}

// WithClientCert connects over TLS and presents the certificate (PEM, with
// its chain) and key in these files, for a node that requires client
// certificates (mTLS: tls.client_ca_file).
func WithClientCert(certFile, keyFile string) Option {
	return func(o *options) { o.tls, o.certFile, o.keyFile = true, certFile, keyFile }
}

// WithDialOptions passes options to grpc.NewClient after the client's own,
// so that they win (a grpc.WithKeepaliveParams of yours replaces the
// default keepalive; see Dial).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithRetry sets how Publish retries and how a Stream reconnects; fields
// left zero keep their defaults (see Retry).
func WithRetry(r Retry) Option { return func(o *options) { o.retry = r } }
