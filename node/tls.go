package node

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/prometheus/client_golang/prometheus"
)

var metricCertExpiry = prometheus.NewGauge(prometheus.GaugeOpts{
	Name: "herald_tls_cert_expiry_timestamp_seconds",
	Help: "When the certificate served by the node's listeners expires (Unix seconds); 0 without TLS.",
})

func init() { prometheus.MustRegister(metricCertExpiry) }

// certReloader serves a certificate from files and re-reads them when
// their modification time changes, so that a renewed certificate is served
// from the next handshake on, without a restart. A pair that fails to load
// (say, the certificate was replaced and the key not yet) is logged and the
// previous certificate kept; the next handshake tries again.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	certTime time.Time
	keyTime  time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// reload loads the pair if either file changed. r.mu must be held, or r
// not yet shared.
func (r *certReloader) reload() error {
	ct, kt := modTime(r.certFile), modTime(r.keyFile)
	if r.cert != nil && ct.Equal(r.certTime) && kt.Equal(r.keyTime) {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s: %w", r.certFile, err)
	}
	if cert.Leaf != nil {
		metricCertExpiry.Set(float64(cert.Leaf.NotAfter.Unix()))
	}
	if r.cert != nil {
		r.log.Info("tls certificate reloaded", "cert_file", r.certFile)
	}
	r.cert, r.certTime, r.keyTime = &cert, ct, kt
	return nil
}

// GetCertificate implements tls.Config.GetCertificate. It costs two stat
// calls per handshake, small beside the handshake itself.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.reload(); err != nil {
		r.log.Warn("tls certificate reload failed; serving the previous one", "err", err)
	}
	return r.cert, nil
}

// serverTLS returns the TLS configurations of the HTTP and gRPC listeners
// (nil, nil without TLS). Both serve the same reloading certificate; the
// gRPC one requires client certificates when client_ca_file is set.
func serverTLS(cfg config.TLS, log *slog.Logger) (httpTLS, grpcTLS *tls.Config, err error) {
	if !cfg.Enabled() {
		return nil, nil, nil
	}
	r, err := newCertReloader(cfg.CertFile, cfg.KeyFile, log)
	if err != nil {
		return nil, nil, err
	}
	httpTLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate, NextProtos: []string{"h2", "http/1.1"}}
	grpcTLS = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate, NextProtos: []string{"h2"}}
	if cfg.ClientCAFile != "" {
		pool, err := loadPool(cfg.ClientCAFile)
		if err != nil {
			return nil, nil, err
		}
		grpcTLS.ClientCAs = pool
		grpcTLS.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return httpTLS, grpcTLS, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// coreTLS returns the TLS configuration a bridge dials its core with.
func coreTLS(b config.Bridge, host string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if b.CoreCAFile != "" {
		pool, err := loadPool(b.CoreCAFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if b.CoreCertFile != "" {
		cert, err := tls.LoadX509KeyPair(b.CoreCertFile, b.CoreKeyFile)
		if err != nil {
			return nil, fmt.Errorf("bridge client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if host == "" {
		return nil, errors.New("bridge.core: the core's address needs a host name for TLS")
	}
	return c, nil
}
