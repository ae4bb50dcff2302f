package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// With -tls the bench speaks TLS to Herald as a production deployment's
// clients do: WebSockets and streams over wss/https, publishers over
// gRPC with TLS and HTTPS, /readyz and /metrics over HTTPS. The floor
// stays plain (it is the machine's floor, without TLS). With -serve the
// bench makes a certificate for 127.0.0.1 and starts each herald serve
// with it; otherwise -tls-ca (or the system's roots) verifies the
// server.

// selfSigned writes a certificate for 127.0.0.1 (ECDSA P-256, valid for a
// day) and its key into dir, and returns their paths and the
// certificate's PEM, which the clients trust.
func selfSigned(dir string) (certFile, keyFile string, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "herald bench"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", "", nil, err
	}
	return certFile, keyFile, certPEM, nil
}

// clientTLS is the clients' TLS configuration: the roots in caPEM, or the
// system's when caPEM is empty.
func clientTLS(caPEM []byte) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("bench: -tls-ca: no PEM certificate in it")
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// httpFor is the client and the URL scheme for a server's /readyz and
// /metrics: plain with tc nil, else HTTPS verified by tc. An HTTPS client
// keeps no idle connection, so that a scrape leaves none open on the
// server it measures.
func httpFor(tc *tls.Config) (*http.Client, string) {
	if tc == nil {
		return http.DefaultClient, httpScheme(nil)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc.Clone(), DisableKeepAlives: true}}, httpScheme(tc)
}

// httpScheme is "https://" with a TLS configuration, else "http://".
func httpScheme(tc *tls.Config) string {
	if tc == nil {
		return "http://"
	}
	return "https://"
}

// cloneTLS is tc.Clone(), nil for nil.
func cloneTLS(tc *tls.Config) *tls.Config {
	if tc == nil {
		return nil
	}
	return tc.Clone()
}

// setupTLS prepares -tls: the certificate for -serve, or the roots of
// -tls-ca for a server at -ws (whose URLs must then be wss://).
func (o *options) setupTLS() error {
	if !o.tls {
		if o.tlsCAFile != "" {
			return errors.New("bench: -tls-ca needs -tls")
		}
		for _, u := range o.ws {
			if strings.HasPrefix(u, "wss://") {
				return errors.New("bench: a wss:// URL in -ws needs -tls")
			}
		}
		return nil
	}
	var err error
	if o.serveConfig != "" {
		if o.tlsCAFile != "" {
			return errors.New("bench: -tls-ca is for a server at -ws; with -serve the bench makes the certificate")
		}
		if o.tlsDir, err = os.MkdirTemp("", "herald-bench-tls-"); err != nil {
			return err
		}
		if o.tlsCert, o.tlsKey, o.tlsCA, err = selfSigned(o.tlsDir); err != nil {
			os.RemoveAll(o.tlsDir)
			return fmt.Errorf("bench: making a certificate: %w", err)
		}
	} else {
		for _, u := range o.ws {
			if !strings.HasPrefix(u, "wss://") {
				return fmt.Errorf("bench: -tls: -ws %q is not a wss:// URL", u)
			}
		}
		if o.tlsCAFile != "" {
			if o.tlsCA, err = os.ReadFile(o.tlsCAFile); err != nil {
				return fmt.Errorf("bench: -tls-ca: %w", err)
			}
		}
	}
	if o.tlsBase, err = clientTLS(o.tlsCA); err != nil {
		return err
	}
	if o.serveConfig == "" {
		o.tlsCfg = o.tlsBase
	}
	return nil
}
