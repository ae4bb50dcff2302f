package node_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// testCA is a CA that issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "herald test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate (server and client use) for 127.0.0.1 and
// localhost with the given serial to certFile and keyFile.
func (ca *testCA) issue(t *testing.T, serial int64, name, certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalPKCS8PrivateKey(key)
	// Write to temporary names and rename, as a certificate manager does.
	write := func(path string, b []byte) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

type tlsFiles struct {
	dir, caFile, cert, key, clientCert, clientKey string
	ca                                            *testCA
}

func newTLSFiles(t *testing.T) *tlsFiles {
	dir := t.TempDir()
	f := &tlsFiles{dir: dir, ca: newCA(t), caFile: filepath.Join(dir, "ca.pem"),
		cert: filepath.Join(dir, "server.pem"), key: filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem")}
	if err := os.WriteFile(f.caFile, f.ca.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	f.ca.issue(t, 2, "server", f.cert, f.key)
	f.ca.issue(t, 3, "backend", f.clientCert, f.clientKey)
	return f
}

func (f *tlsFiles) clientTLS(t *testing.T, withCert bool) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.ca.pem)
	c := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if withCert {
		cert, err := tls.LoadX509KeyPair(f.clientCert, f.clientKey)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c
}

// TestTLS runs a node with TLS on both listeners and mTLS on gRPC: a
// backend with a client certificate publishes over gRPC, one without is
// refused, HTTPS and WSS work without a client certificate, and a
// certificate replaced on disk is served from the next handshake on.
func TestTLS(t *testing.T) {
	f := newTLSFiles(t)
	n := startNode(t, func(c *config.Config) {
		c.TLS = config.TLS{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.caFile}
	})
	dialGRPC := func(withCert bool) *grpc.ClientConn {
		cc, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS(t, withCert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// mTLS: with a client certificate.
	be := heraldv1.NewHeraldServiceClient(dialGRPC(true))
	if _, err := be.Publish(ctx, &heraldv1.PublishRequest{Channel: "news", Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewNumberValue(1)}}); err != nil {
		t.Fatalf("publish over mTLS: %v", err)
	}
	// Without one, the handshake fails.
	if _, err := healthpb.NewHealthClient(dialGRPC(false)).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Fatal("gRPC without a client certificate was accepted")
	}

	// HTTPS and WSS, no client certificate needed.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, false)}}
	resp, err := hc.Get("https://" + n.HTTPAddr.String() + "/healthz")
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	_ = resp.Body.Close()
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Fatalf("https: state %+v", resp.TLS)
	}
	d := websocket.Dialer{TLSClientConfig: f.clientTLS(t, false), Subprotocols: []string{"herald.json"}}
	ws, _, err := d.Dial("wss://"+n.HTTPAddr.String()+"/ws", nil)
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := ws.ReadMessage(); err != nil || !strings.Contains(string(msg), `"connect"`) {
		t.Fatalf("wss connect: %s %v", msg, err)
	}
	_ = ws.Close()

	// Reload: a new certificate (serial 9) is served without a restart.
	f.ca.issue(t, 9, "server-renewed", f.cert, f.key)
	future := time.Now().Add(time.Minute) // mtime must change even on coarse clocks
	_ = os.Chtimes(f.cert, future, future)
	_ = os.Chtimes(f.key, future, future)
	conn, err := tls.Dial("tcp", n.HTTPAddr.String(), f.clientTLS(t, false))
	if err != nil {
		t.Fatalf("after reload: %v", err)
	}
	defer conn.Close()
	if s := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); s != 9 {
		t.Fatalf("after reload the node serves serial %d, want 9", s)
	}
}

// TestBridgeToTLSCore runs `herald bridge` against a core that requires
// mTLS, with --core-ca-file and a client certificate: a browser on the
// bridge receives a publication made on the core.
func TestBridgeToTLSCore(t *testing.T) {
	f := newTLSFiles(t)
	core := startNode(t, func(c *config.Config) {
		c.TLS = config.TLS{CertFile: f.cert, KeyFile: f.key, ClientCAFile: f.caFile}
	})
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Bridge.Core = core.GRPCAddr.String()
	cfg.Bridge.CoreCAFile = f.caFile
	cfg.Bridge.CoreCertFile, cfg.Bridge.CoreKeyFile = f.clientCert, f.clientKey
	br, err := node.Start(context.Background(), cfg, node.BridgeOnly, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = br.Shutdown(ctx)
	})
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+br.HTTPAddr.String()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"chat:news"}}`))
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got string
	for !strings.Contains(got, `"subscribe"`) {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for subscribe: %v (%s)", err, got)
		}
		got += string(msg)
	}
	cc, err := grpc.NewClient(core.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS(t, true))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := heraldv1.NewHeraldServiceClient(cc).Publish(ctx, &heraldv1.PublishRequest{Channel: "chat:news", Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewStringValue("over mtls")}}); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(got, "over mtls") {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for the publication: %v (%s)", err, got)
		}
		got += string(msg)
	}
}
