package bench

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// With -tls the bench's clients and REST publisher speak TLS, verified
// against the certificate the bench made (for 127.0.0.1): here to the
// floor behind TLS. A client trusting another certificate is refused.
func TestBenchOverTLS(t *testing.T) {
	certFile, keyFile, certPEM, err := selfSigned(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	f := newFloor()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", f.serveWS)
	mux.HandleFunc("POST /v1/channels/{channel}/publish", f.servePublish)
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "https://")
	url := "wss://" + addr + "/ws"
	ctx := context.Background()

	spec := groupSpec{N: 2, WS: []string{url}, Channel: "bench", Concurrency: 2, Timeout: 5 * time.Second, ReadBuf: 1024, TLS: true, TLSCA: certPEM}
	g := newGroup(spec)
	g.connect(ctx)
	if r := g.result(false); r.Connected != 2 {
		t.Fatalf("over TLS: %+v", r)
	}
	tc, err := clientTLS(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	rest := newRESTPublisher(addr, "", 1, tc)
	defer rest.close()
	for range 3 {
		if err := rest.call(ctx, 0, "bench", appendPayload(nil, time.Now().UnixNano(), 64)); err != nil {
			t.Fatal(err)
		}
	}
	r := g.drain(ctx, []int64{3, 3}, 5*time.Second)
	g.close()
	for i, n := range r.Received {
		if n != 3 {
			t.Fatalf("client %d got %d publications over TLS, want 3", i, n)
		}
	}

	_, _, otherPEM, err := selfSigned(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spec.TLSCA = otherPEM
	bad := newGroup(spec)
	bad.connect(ctx)
	if r := bad.result(false); r.Connected != 0 || r.ConnectErrors != 2 || len(r.ErrorSamples) == 0 || !strings.Contains(r.ErrorSamples[0], "certificate") {
		t.Fatalf("trusting another certificate: %+v, want both refused for the certificate", r)
	}
	bad.close()
	if _, err := clientTLS([]byte("not PEM")); err == nil {
		t.Fatal("clientTLS took no certificate")
	}
}
