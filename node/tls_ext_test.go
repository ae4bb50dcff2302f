package node_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/tlstest"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestTLS runs a node with TLS on both listeners and mTLS on gRPC: a
// backend with a client certificate publishes over gRPC, one without is
// refused, HTTPS and WSS work without a client certificate, and a
// certificate replaced on disk is served from the next handshake on.
func TestTLS(t *testing.T) {
	f := tlstest.NewFiles(t)
	n := startNode(t, func(c *config.Config) {
		c.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key, ClientCAFile: f.CAFile}
	})
	dialGRPC := func(withCert bool) *grpc.ClientConn {
		cc, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(f.ClientTLS(t, withCert))))
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
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.ClientTLS(t, false)}}
	resp, err := hc.Get("https://" + n.HTTPAddr.String() + "/healthz")
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	_ = resp.Body.Close()
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].SerialNumber.Int64() != 2 {
		t.Fatalf("https: state %+v", resp.TLS)
	}
	d := websocket.Dialer{TLSClientConfig: f.ClientTLS(t, false), Subprotocols: []string{"herald.json"}}
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
	f.CA.Issue(t, 9, "server-renewed", f.Cert, f.Key)
	future := time.Now().Add(time.Minute) // mtime must change even on coarse clocks
	_ = os.Chtimes(f.Cert, future, future)
	_ = os.Chtimes(f.Key, future, future)
	conn, err := tls.Dial("tcp", n.HTTPAddr.String(), f.ClientTLS(t, false))
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
	f := tlstest.NewFiles(t)
	core := startNode(t, func(c *config.Config) {
		c.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key, ClientCAFile: f.CAFile}
	})
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Bridge.Core = core.GRPCAddr.String()
	cfg.Bridge.CoreCAFile = f.CAFile
	cfg.Bridge.CoreCertFile, cfg.Bridge.CoreKeyFile = f.ClientCert, f.ClientKey
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
	cc, err := grpc.NewClient(core.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(f.ClientTLS(t, true))))
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

// TestStreamsOverTLS opens an SSE stream and an HTTP stream over HTTPS,
// with HTTP/1.1 (the connection is hijacked) and HTTP/2 (the handler holds
// the stream): each connects, receives a publication and answers a
// command; a client that goes away is noticed on both.
func TestStreamsOverTLS(t *testing.T) {
	f := tlstest.NewFiles(t)
	n := startNode(t, func(c *config.Config) {
		c.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key}
	})
	cc, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(credentials.NewTLS(f.ClientTLS(t, false))))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	be := heraldv1.NewHeraldServiceClient(cc)
	base := "https://" + n.HTTPAddr.String()
	for _, h2 := range []bool{false, true} {
		for _, sse := range []bool{true, false} {
			t.Run(fmt.Sprintf("h2=%v sse=%v", h2, sse), func(t *testing.T) {
				tr := &http.Transport{TLSClientConfig: f.ClientTLS(t, false), ForceAttemptHTTP2: h2}
				if !h2 {
					tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
				}
				hc := &http.Client{Transport: tr}
				defer tr.CloseIdleConnections()
				ch := fmt.Sprintf("chat:tls-%v-%v", h2, sse)
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				var req *http.Request
				if sse {
					req, _ = http.NewRequestWithContext(ctx, "GET", base+"/sse?channel="+ch, nil)
				} else {
					req, _ = http.NewRequestWithContext(ctx, "POST", base+"/stream", strings.NewReader(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"`+ch+`"}}`))
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 || (resp.ProtoMajor == 2) != h2 {
					t.Fatalf("%s over %s", resp.Status, resp.Proto)
				}
				br := bufio.NewReader(resp.Body)
				lines := make(chan string, 100)
				go func() {
					defer close(lines)
					for {
						l, err := br.ReadString('\n')
						if err != nil {
							return
						}
						// protojson may put spaces anywhere between tokens:
						// match without them (no value here holds one).
						lines <- strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(l), "data: "), " ", "")
					}
				}()
				var seen []string
				waitLine := func(what string) string {
					for l := range lines {
						seen = append(seen, l)
						if strings.Contains(l, what) {
							return l
						}
					}
					t.Fatalf("stream ended before %s; lines: %q", what, seen)
					return ""
				}
				conn := waitLine(`"session_token"`)
				tok := conn[strings.Index(conn, `"session_token":"`)+len(`"session_token":"`):]
				tok = tok[:strings.IndexByte(tok, '"')]
				waitLine(`"channel":"` + ch + `"`)
				if _, err := be.Publish(ctx, &heraldv1.PublishRequest{Channel: ch, Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewStringValue("secure")}}); err != nil {
					t.Fatal(err)
				}
				waitLine(`"secure"`)
				cmd, _ := http.NewRequestWithContext(ctx, "POST", base+"/command", strings.NewReader(`{"id":7,"ping":{}}`))
				cmd.Header.Set("Authorization", "Bearer "+tok)
				cmd.Header.Set("Content-Type", "application/json")
				cr, err := hc.Do(cmd)
				if err != nil || cr.StatusCode != http.StatusAccepted {
					t.Fatalf("command: %v %v", err, cr)
				}
				cr.Body.Close()
				waitLine(`{"id":7,"pong":{}}`)
				cancel()
				resp.Body.Close()
				deadline := time.Now().Add(10 * time.Second)
				for n.Bridge().Stats().Connections != 0 {
					if time.Now().After(deadline) {
						t.Fatalf("the bridge did not notice the client left: %+v", n.Bridge().Stats())
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
	}
}

// TestShutdownClosesSilentConnections: connections that never sent a
// request do not hold a shutdown. On the HTTP listener (a browser's
// preconnected socket, a TCP probe) net/http would count each as busy
// until it is 5 s old; on the gRPC listener grpc-go waited for each
// handshake up to 120 s, past the shutdown's deadline, before even
// draining the established connections. Over plain TCP and TLS, with a
// silent connection on each listener and one that sent half a handshake
// on the gRPC one, Shutdown finishes within its deadline, and a
// Subscribe stream open on an established connection still ends with
// UNAVAILABLE (drained, not cut).
func TestShutdownClosesSilentConnections(t *testing.T) {
	f := tlstest.NewFiles(t)
	for _, withTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[withTLS], func(t *testing.T) {
			n := startNode(t, func(c *config.Config) {
				if withTLS {
					c.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key}
				}
			})
			dial := func(addr net.Addr, first string) net.Conn {
				c, err := net.Dial("tcp", addr.String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = c.Close() })
				if _, err := c.Write([]byte(first)); err != nil {
					t.Fatal(err)
				}
				return c
			}
			half := "PRI * HTTP/2.0\r\n" // of the client preface
			if withTLS {
				half = "\x16\x03\x01\x02\x00" // a ClientHello's record header, no body
			}
			silent := []net.Conn{dial(n.HTTPAddr, ""), dial(n.GRPCAddr, ""), dial(n.GRPCAddr, half)}

			// A keep-alive HTTP connection that has served a request is
			// idle, which net/http closes itself.
			scheme, hc := "http", &http.Client{}
			creds := insecure.NewCredentials()
			if withTLS {
				scheme, hc = "https", &http.Client{Transport: &http.Transport{TLSClientConfig: f.ClientTLS(t, false)}}
				creds = credentials.NewTLS(f.ClientTLS(t, false))
			}
			resp, err := hc.Get(scheme + "://" + n.HTTPAddr.String() + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cc, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			stream, err := heraldv1.NewHeraldServiceClient(cc).Subscribe(context.Background(), &heraldv1.SubscribeRequest{Channel: "news"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			if err := n.Shutdown(ctx); err != nil || ctx.Err() != nil {
				t.Fatalf("shutdown with silent connections open: %v (deadline: %v)", err, ctx.Err())
			}
			if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
				t.Fatalf("the stream ended with %v, want UNAVAILABLE", err)
			}
			for i, c := range silent {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					_, err := c.Read(make([]byte, 512)) // the gRPC ones may have had the server's settings
					if err == nil {
						continue
					}
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("silent connection %d is still open after the shutdown", i)
					}
					break
				}
			}
		})
	}
}
