package hooks_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/hooks"
	"github.com/herald-io/herald/internal/hooktest"
	"github.com/herald-io/herald/internal/tlstest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func newClient(t *testing.T, cfg config.Hooks) *hooks.Client {
	t.Helper()
	d := config.Default().Hooks
	if cfg.Timeout == 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = d.MaxInFlight
	}
	if cfg.CircuitFailures == 0 {
		cfg.CircuitFailures = d.CircuitFailures
	}
	if cfg.CircuitOpen == 0 {
		cfg.CircuitOpen = d.CircuitOpen
	}
	c, err := hooks.New(cfg, hooks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// forms runs body against the backend over gRPC and over HTTP.
func forms(t *testing.T, s *hooktest.Server, base config.Hooks, body func(t *testing.T, c *hooks.Client)) {
	for _, form := range []string{"grpc", "http"} {
		t.Run(form, func(t *testing.T) {
			cfg := base
			if form == "grpc" {
				cfg.GRPCAddr = s.GRPCAddr
			} else {
				cfg.HTTPURL = s.HTTPURL
			}
			body(t, newClient(t, cfg))
		})
	}
}

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestClientAnswers: both forms, over TLS with the key, give the same
// checked answers: a cookie session accepted, a stranger refused with the
// default code, a publication replaced with exact JSON, an RPC's JSON
// echoed byte for byte.
func TestClientAnswers(t *testing.T) {
	files := tlstest.NewFiles(t)
	s := hooktest.Start(t, hooktest.Options{APIKey: "hooks-key-0123456789", TLS: files, MTLS: true})
	cookie := s.Login("ann")
	base := config.Hooks{APIKey: "hooks-key-0123456789", CAFile: files.CAFile, CertFile: files.ClientCert, KeyFile: files.ClientKey}
	forms(t, s, base, func(t *testing.T, c *hooks.Client) {
		res, err := c.Connect(bg(t), &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "c1", Transport: "websocket"}, Cookies: map[string]string{"session": cookie}})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetAccept().GetUser() != "ann" || res.GetAccept().GetInfo().GetFields()["name"].GetStringValue() != "ann" {
			t.Fatalf("connect = %v", res)
		}
		res, err = c.Connect(bg(t), &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "c2"}})
		if err != nil {
			t.Fatal(err)
		}
		if r := res.GetRefuse(); r.GetCode() != hooks.DefaultConnectCode || r.GetReason() != "log in first" {
			t.Fatalf("connect without a session = %v", res)
		}
		pub, err := c.Publish(bg(t), &hooksv1.PublishRequest{Session: &hooksv1.Session{User: "ann"}, Channel: "room:1", Payload: &hooksv1.PublishRequest_Json{Json: `{"text":"replace me"}`}})
		if err != nil {
			t.Fatal(err)
		}
		if got := pub.GetAllow().GetJson(); got != `{"text":"REPLACE ME","by":"ann","n":12345678901234567891}` {
			t.Fatalf("replaced = %q", got)
		}
		const text = `{"z":[1.0,-0,1e400],"a":"\u00e9\u2028"}`
		rpc, err := c.RPC(bg(t), &hooksv1.RPCRequest{Session: &hooksv1.Session{User: "ann"}, Method: "echo", Payload: &hooksv1.RPCRequest_Json{Json: text}})
		if err != nil {
			t.Fatal(err)
		}
		if got := rpc.GetResult().GetJson(); got != text {
			t.Fatalf("echo = %q, want %q", got, text)
		}
		if last := s.Last("rpc").(*hooksv1.RPCRequest); last.GetJson() != text {
			t.Fatalf("the backend got %q", last.GetJson())
		}
	})

	// Without the key the backend refuses every call: no answer.
	forms(t, s, config.Hooks{CAFile: files.CAFile, CertFile: files.ClientCert, KeyFile: files.ClientKey}, func(t *testing.T, c *hooks.Client) {
		_, err := c.Connect(bg(t), &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "c3"}})
		if hooks.KindOf(err) != hooks.Unavailable {
			t.Fatalf("without the key: err = %v, want unavailable", err)
		}
	})
}

// TestClientBadAnswers: garbage and answers that break a hook's rules are
// BadAnswer, never a yes.
func TestClientBadAnswers(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	forms(t, s, config.Hooks{CircuitFailures: 1000}, func(t *testing.T, c *hooks.Client) {
		s.SetGarbage(true)
		_, err := c.Connect(bg(t), &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "c"}})
		if hooks.KindOf(err) != hooks.BadAnswer {
			t.Fatalf("garbage: err = %v, want bad_answer", err)
		}
		s.SetGarbage(false)
		for name, tc := range map[string]struct {
			hook string
			resp proto.Message
			want string
		}{
			"connect close code":  {"connect", &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Refuse{Refuse: &hooksv1.Refusal{Code: 1000}}}, "4001, 4002, 4003 or 4100-4499"},
			"user name":           {"connect", &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Accept{Accept: &hooksv1.ConnectAccept{User: "a b"}}}, "accept.user"},
			"grant":               {"connect", &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Accept{Accept: &hooksv1.ConnectAccept{User: "a", Channels: []string{"chat:lob*"}}}}, "accept.channels"},
			"subscribe code":      {"subscribe", &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Refuse{Refuse: &hooksv1.Refusal{Code: 4001}}}, "104, 108, 110 or 1000-1999"},
			"publish json":        {"publish", &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Allow{Allow: &hooksv1.PublishAllow{Payload: &hooksv1.PublishAllow_Json{Json: `{"a":`}}}}, "json"},
			"rpc json":            {"rpc", &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Result{Result: &hooksv1.RPCResult{Payload: &hooksv1.RPCResult_Json{Json: "[1,2"}}}}, "json"},
			"refresh no decision": {"refresh", &hooksv1.RefreshResponse{}, "no decision"},
		} {
			resp := tc.resp
			s.Handle(tc.hook, func(context.Context, proto.Message) (proto.Message, error) { return resp, nil })
			var err error
			switch tc.hook {
			case "connect":
				_, err = c.Connect(bg(t), &hooksv1.ConnectRequest{})
			case "subscribe":
				_, err = c.Subscribe(bg(t), &hooksv1.SubscribeRequest{})
			case "publish":
				_, err = c.Publish(bg(t), &hooksv1.PublishRequest{})
			case "rpc":
				_, err = c.RPC(bg(t), &hooksv1.RPCRequest{})
			case "refresh":
				_, err = c.Refresh(bg(t), &hooksv1.RefreshRequest{})
			}
			s.Handle(tc.hook, nil)
			if hooks.KindOf(err) != hooks.BadAnswer || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want bad_answer mentioning %q", name, err, tc.want)
			}
		}
	})
}

// TestClientTimeoutAndInFlight: a backend slower than the timeout is a
// Timeout; with max_in_flight calls waiting, one more is refused at once
// (Overloaded) without reaching the backend.
func TestClientTimeoutAndInFlight(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	forms(t, s, config.Hooks{Timeout: config.Duration(300 * time.Millisecond), MaxInFlight: 2, CircuitFailures: 1000}, func(t *testing.T, c *hooks.Client) {
		s.SetDelay(time.Hour)
		defer s.SetDelay(0)
		_, err := c.Subscribe(bg(t), &hooksv1.SubscribeRequest{Channel: "room:1"})
		if hooks.KindOf(err) != hooks.Timeout {
			t.Fatalf("slow backend: err = %v, want timeout", err)
		}
		before := s.Calls("subscribe")
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = c.Subscribe(bg(t), &hooksv1.SubscribeRequest{Channel: "room:1"})
			}()
		}
		for s.Calls("subscribe") < before+2 {
			time.Sleep(5 * time.Millisecond)
		}
		_, err = c.Subscribe(bg(t), &hooksv1.SubscribeRequest{Channel: "room:1"})
		if hooks.KindOf(err) != hooks.Overloaded {
			t.Fatalf("over max_in_flight: err = %v, want overloaded", err)
		}
		if n := s.Calls("subscribe"); n != before+2 {
			t.Fatalf("the refused call reached the backend (%d calls, want %d)", n, before+2)
		}
		wg.Wait()
	})
}

func circuitState(t *testing.T, backend string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "herald_hook_circuit_state" {
			continue
		}
		for _, m := range mf.Metric {
			if labelIs(m, "backend", backend) {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestCircuit: after circuit_failures failed calls in a row the circuit
// opens (the metric says 2) and calls fail at once without reaching the
// backend; once circuit_open has passed one call probes: while the
// backend is down it opens again, once it is up it closes (0).
func TestCircuit(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	forms(t, s, config.Hooks{CircuitFailures: 3, CircuitOpen: config.Duration(200 * time.Millisecond)}, func(t *testing.T, c *hooks.Client) {
		defer s.Up()
		s.Down()
		for i := range 3 {
			if _, err := c.RPC(bg(t), &hooksv1.RPCRequest{Method: "echo"}); hooks.KindOf(err) != hooks.Unavailable {
				t.Fatalf("call %d to a backend that is down: err = %v, want unavailable", i, err)
			}
		}
		if st := circuitState(t, c.Backend()); st != 2 {
			t.Fatalf("circuit state %v after 3 failures, want 2 (open)", st)
		}
		s.Up()
		before := s.Calls("rpc")
		if _, err := c.RPC(bg(t), &hooksv1.RPCRequest{Method: "echo"}); hooks.KindOf(err) != hooks.CircuitOpen {
			t.Fatalf("open circuit: err = %v, want circuit_open", err)
		}
		if s.Calls("rpc") != before {
			t.Fatal("a call went through the open circuit")
		}
		// Poll: once circuit_open has passed, the next call probes and
		// closes the circuit.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err := c.RPC(bg(t), &hooksv1.RPCRequest{Method: "echo"})
			if err == nil {
				break
			}
			if hooks.KindOf(err) != hooks.CircuitOpen || time.Now().After(deadline) {
				t.Fatalf("probe: err = %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st := circuitState(t, c.Backend()); st != 0 {
			t.Fatalf("circuit state %v after a good probe, want 0 (closed)", st)
		}
	})
}

// BenchmarkClientCall is one hook call answered at once by a backend on
// loopback (internal/hooktest, in the same process): what a hook adds to
// the request that makes it, without the bridge around it.
func BenchmarkClientCall(b *testing.B) {
	s := hooktest.Start(b, hooktest.Options{})
	cookie := s.Login("ann")
	for _, form := range []string{"grpc", "http"} {
		cfg := config.Default().Hooks
		if form == "grpc" {
			cfg.GRPCAddr = s.GRPCAddr
		} else {
			cfg.HTTPURL = s.HTTPURL
		}
		c, err := hooks.New(cfg, hooks.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		ctx := context.Background()
		b.Run("connect/"+form, func(b *testing.B) {
			req := &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "c", Transport: "websocket"}, Cookies: map[string]string{"session": cookie}}
			for b.Loop() {
				if _, err := c.Connect(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("publish/"+form, func(b *testing.B) {
			req := &hooksv1.PublishRequest{Session: &hooksv1.Session{Client: "c", User: "ann"}, Channel: "room:1", Payload: &hooksv1.PublishRequest_Json{Json: `{"text":"hi"}`}}
			for b.Loop() {
				if _, err := c.Publish(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestClientPayloadBound: an answer's payload beyond MaxPayload (the
// bridge passes limits.max_payload) is a BadAnswer, not a frame too large
// for the browser's queue.
func TestClientPayloadBound(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	for _, form := range []string{"grpc", "http"} {
		cfg := config.Default().Hooks
		if form == "grpc" {
			cfg.GRPCAddr = s.GRPCAddr
		} else {
			cfg.HTTPURL = s.HTTPURL
		}
		c, err := hooks.New(cfg, hooks.Options{MaxPayload: 16})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.RPC(bg(t), &hooksv1.RPCRequest{Method: "echo", Payload: &hooksv1.RPCRequest_Json{Json: `"0123456789abcdef"`}}); hooks.KindOf(err) != hooks.BadAnswer || !strings.Contains(err.Error(), "max_payload") {
			t.Fatalf("%s: an 18-byte answer with MaxPayload 16: %v", form, err)
		}
		if _, err := c.RPC(bg(t), &hooksv1.RPCRequest{Method: "echo", Payload: &hooksv1.RPCRequest_Json{Json: `"0123456789abc"`}}); err != nil {
			t.Fatalf("%s: a 15-byte answer: %v", form, err)
		}
	}
}
