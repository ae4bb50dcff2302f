// Package hooktest runs a real application backend for tests of the
// hooks: a herald.hooks.v1.HooksService served over gRPC and in the HTTP
// form (hooks.HTTPHandler) on loopback, with cookie sessions (GET /login
// sets the `session` cookie), the answers below, and knobs to make it
// slow, broken or down. Tests may replace any hook's behaviour.
//
// Default answers:
//
//   - Connect: the `session` cookie of a logged-in user, or a token
//     "opaque:<user>", accepts that user with info {"name": user} and
//     ExpiresIn; anything else is refused (4001, "log in first").
//   - Refresh: extends by ExpiresIn while the user is logged in; refuses
//     (4002) after Logout.
//   - Subscribe: room:<x> is allowed with info {"room": x, "role":
//     "member"}, except room:secret* (refused, 104); other channels are
//     allowed without info.
//   - Publish: {"text":"refuse"} is refused (110); {"text":"replace…"} is
//     replaced by {"text":…,"by":user,"n":12345678901234567891}; a text
//     "skip" is skipped (offset 42, epoch "hooked"); the rest is allowed
//     as it is, with the tag checked=yes.
//   - RPC: echo (the data back), whoami ({"user":…,"transport":…}), fail
//     (error 1001, temporary), denied (error 104), binary (bytes 0,1,2).
package hooktest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/hooks"
	"github.com/herald-io/herald/internal/tlstest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Options configure a Server.
type Options struct {
	// APIKey, when set, must come with every call (authorization: Bearer).
	APIKey string
	// TLS serves gRPC and HTTPS with the files' server certificate;
	// with MTLS, client certificates signed by their CA are required.
	TLS  *tlstest.Files
	MTLS bool
}

// Server is a running test backend.
type Server struct {
	t    testing.TB
	opts Options
	impl *impl

	// GRPCAddr is the gRPC listener's host:port; HTTPURL the base URL of
	// the HTTP form (…/hooks; POST HTTPURL/connect…); LoginURL sets the
	// session cookie (GET LoginURL?user=ann).
	GRPCAddr, HTTPURL, LoginURL string
	httpAddr                    string

	mu    sync.Mutex
	gs    *grpc.Server
	hs    *http.Server
	downs bool
}

// Start starts a backend; it stops at the end of the test.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{t: t, opts: opts, impl: newImpl()}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.GRPCAddr, s.httpAddr = gl.Addr().String(), hl.Addr().String()
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	s.HTTPURL = scheme + "://" + s.httpAddr + "/hooks"
	s.LoginURL = scheme + "://" + s.httpAddr + "/login"
	s.serve(gl, hl)
	t.Cleanup(s.Down)
	return s
}

func (s *Server) serverTLS() *tls.Config {
	cert, err := tls.LoadX509KeyPair(s.opts.TLS.Cert, s.opts.TLS.Key)
	if err != nil {
		s.t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if s.opts.MTLS {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.opts.TLS.CA.PEM)
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc
}

func (s *Server) serve(gl, hl net.Listener) {
	var gopts []grpc.ServerOption
	if s.opts.TLS != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.serverTLS())))
		hl = tls.NewListener(hl, s.serverTLS())
	}
	gopts = append(gopts, grpc.UnaryInterceptor(s.impl.intercept(s.opts.APIKey)))
	gs := grpc.NewServer(gopts...)
	hooksv1.RegisterHooksServiceServer(gs, s.impl)
	mux := http.NewServeMux()
	mux.Handle("/hooks/", s.impl.httpGate(s.opts.APIKey, hooks.HTTPHandler(s.impl)))
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		http.SetCookie(w, &http.Cookie{Name: "session", Value: s.Login(user), Path: "/", HttpOnly: true})
		_, _ = fmt.Fprintf(w, "logged in as %s\n", user)
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.gs, s.hs, s.downs = gs, hs, false
	s.mu.Unlock()
	go func() { _ = gs.Serve(gl) }()
	go func() { _ = hs.Serve(hl) }()
}

// Down stops the backend: its listeners close, calls fail to connect.
func (s *Server) Down() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.downs {
		return
	}
	s.downs = true
	s.gs.Stop()
	_ = s.hs.Close()
}

// Up serves again on the same addresses after Down.
func (s *Server) Up() {
	s.t.Helper()
	s.mu.Lock()
	down := s.downs
	s.mu.Unlock()
	if !down {
		return
	}
	var gl, hl net.Listener
	var err error
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if gl == nil {
			gl, err = net.Listen("tcp", s.GRPCAddr)
		}
		if err == nil && hl == nil {
			hl, err = net.Listen("tcp", s.httpAddr)
		}
		if err == nil {
			break
		}
		if time.Now().After(end) {
			s.t.Fatalf("hooktest: listening again: %v", err)
		}
	}
	s.serve(gl, hl)
}

// Login starts a session for user and returns its cookie value.
func (s *Server) Login(user string) string { return s.impl.login(user) }

// Logout ends user's sessions: Connect and Refresh refuse them.
func (s *Server) Logout(user string) { s.impl.logout(user) }

// SetExpiresIn sets the expires_in (seconds) that Connect and Refresh give.
func (s *Server) SetExpiresIn(sec uint32) { s.impl.expiresIn.Store(sec) }

// SetDelay makes every call wait d before answering (or until its caller
// gives up).
func (s *Server) SetDelay(d time.Duration) { s.impl.delay.Store(int64(d)) }

// SetGarbage makes every answer garbage: over gRPC a response without a
// decision, over HTTP a 200 whose body is not JSON.
func (s *Server) SetGarbage(on bool) { s.impl.garbage.Store(on) }

// Calls returns how many calls of hook were answered or started.
func (s *Server) Calls(hook string) int64 { return s.impl.counter(hook).Load() }

// Last returns the last request of hook (nil: none yet).
func (s *Server) Last(hook string) proto.Message {
	s.impl.mu.Lock()
	defer s.impl.mu.Unlock()
	return s.impl.last[hook]
}

// Handle replaces the answer of hook (connect, refresh, subscribe,
// publish, rpc) with f, called with the request; nil restores the default.
func (s *Server) Handle(hook string, f func(ctx context.Context, req proto.Message) (proto.Message, error)) {
	s.impl.mu.Lock()
	defer s.impl.mu.Unlock()
	if f == nil {
		delete(s.impl.custom, hook)
	} else {
		s.impl.custom[hook] = f
	}
}

type impl struct {
	hooksv1.UnimplementedHooksServiceServer
	delay     atomic.Int64
	garbage   atomic.Bool
	expiresIn atomic.Uint32
	calls     sync.Map // hook → *atomic.Int64

	mu       sync.Mutex
	sessions map[string]string // cookie → user
	out      map[string]bool   // logged-out users
	last     map[string]proto.Message
	custom   map[string]func(context.Context, proto.Message) (proto.Message, error)
}

func newImpl() *impl {
	return &impl{sessions: map[string]string{}, out: map[string]bool{}, last: map[string]proto.Message{}, custom: map[string]func(context.Context, proto.Message) (proto.Message, error){}}
}

func (m *impl) counter(hook string) *atomic.Int64 {
	c, _ := m.calls.LoadOrStore(hook, new(atomic.Int64))
	return c.(*atomic.Int64)
}

func (m *impl) login(user string) string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	v := hex.EncodeToString(b)
	m.mu.Lock()
	m.sessions[v] = user
	delete(m.out, user)
	m.mu.Unlock()
	return v
}

func (m *impl) logout(user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.out[user] = true
	for k, u := range m.sessions {
		if u == user {
			delete(m.sessions, k)
		}
	}
}

func hookOf(fullMethod string) string {
	return strings.ToLower(fullMethod[strings.LastIndexByte(fullMethod, '/')+1:])
}

// wait applies the delay, or returns the context's error.
func (m *impl) wait(ctx context.Context) error {
	d := time.Duration(m.delay.Load())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *impl) intercept(key string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		hook := hookOf(info.FullMethod)
		m.counter(hook).Add(1)
		if key != "" {
			md, _ := metadata.FromIncomingContext(ctx)
			if a := md.Get("authorization"); len(a) != 1 || a[0] != "Bearer "+key {
				return nil, status.Error(codes.Unauthenticated, "wrong or missing hooks key")
			}
		}
		if err := m.wait(ctx); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		if m.garbage.Load() {
			return emptyOf(hook), nil
		}
		return h(ctx, req)
	}
}

func emptyOf(hook string) proto.Message {
	switch hook {
	case "connect":
		return &hooksv1.ConnectResponse{}
	case "refresh":
		return &hooksv1.RefreshResponse{}
	case "subscribe":
		return &hooksv1.SubscribeResponse{}
	case "publish":
		return &hooksv1.PublishResponse{}
	}
	return &hooksv1.RPCResponse{}
}

// httpGate applies the key check, the delay and garbage to the HTTP form.
func (m *impl) httpGate(key string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hook := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		m.counter(hook).Add(1)
		if key != "" && r.Header.Get("Authorization") != "Bearer "+key {
			http.Error(w, "wrong or missing hooks key", http.StatusUnauthorized)
			return
		}
		if m.wait(r.Context()) != nil {
			return
		}
		if m.garbage.Load() {
			_, _ = w.Write([]byte("<html>surprise</html>"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// answer runs a custom handler of hook if there is one.
func (m *impl) answer(ctx context.Context, hook string, req proto.Message) (proto.Message, bool, error) {
	m.mu.Lock()
	m.last[hook] = proto.Clone(req)
	f := m.custom[hook]
	m.mu.Unlock()
	if f == nil {
		return nil, false, nil
	}
	out, err := f(ctx, req)
	return out, true, err
}

func info(kv ...string) *structpb.Struct {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	s, _ := structpb.NewStruct(m)
	return s
}

func (m *impl) Connect(ctx context.Context, req *hooksv1.ConnectRequest) (*hooksv1.ConnectResponse, error) {
	if out, ok, err := m.answer(ctx, "connect", req); ok {
		r, _ := out.(*hooksv1.ConnectResponse)
		return r, err
	}
	m.mu.Lock()
	user, ok := m.sessions[req.Cookies["session"]]
	m.mu.Unlock()
	if u, opaque := strings.CutPrefix(req.Token, "opaque:"); !ok && opaque {
		user, ok = u, true
	}
	if !ok {
		return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Refuse{Refuse: &hooksv1.Refusal{Reason: "log in first"}}}, nil
	}
	return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Accept{Accept: &hooksv1.ConnectAccept{
		User: user, Info: info("name", user), ExpiresIn: m.expiresIn.Load(),
	}}}, nil
}

func (m *impl) Refresh(ctx context.Context, req *hooksv1.RefreshRequest) (*hooksv1.RefreshResponse, error) {
	if out, ok, err := m.answer(ctx, "refresh", req); ok {
		r, _ := out.(*hooksv1.RefreshResponse)
		return r, err
	}
	m.mu.Lock()
	gone := m.out[req.GetSession().GetUser()]
	m.mu.Unlock()
	if gone {
		return &hooksv1.RefreshResponse{Decision: &hooksv1.RefreshResponse_Refuse{Refuse: &hooksv1.Refusal{Reason: "logged out"}}}, nil
	}
	return &hooksv1.RefreshResponse{Decision: &hooksv1.RefreshResponse_Extend{Extend: &hooksv1.RefreshExtend{ExpiresIn: m.expiresIn.Load()}}}, nil
}

func (m *impl) Subscribe(ctx context.Context, req *hooksv1.SubscribeRequest) (*hooksv1.SubscribeResponse, error) {
	if out, ok, err := m.answer(ctx, "subscribe", req); ok {
		r, _ := out.(*hooksv1.SubscribeResponse)
		return r, err
	}
	room, isRoom := strings.CutPrefix(req.Channel, "room:")
	switch {
	case isRoom && strings.HasPrefix(room, "secret"):
		return &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Refuse{Refuse: &hooksv1.Refusal{Reason: "not a member of " + room}}}, nil
	case isRoom:
		return &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Allow{Allow: &hooksv1.SubscribeAllow{Info: info("room", room, "role", "member")}}}, nil
	}
	return &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Allow{Allow: &hooksv1.SubscribeAllow{}}}, nil
}

func (m *impl) Publish(ctx context.Context, req *hooksv1.PublishRequest) (*hooksv1.PublishResponse, error) {
	if out, ok, err := m.answer(ctx, "publish", req); ok {
		r, _ := out.(*hooksv1.PublishResponse)
		return r, err
	}
	var body struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal([]byte(req.GetJson()), &body)
	text := body.Text
	user := req.GetSession().GetUser()
	switch {
	case text == "refuse":
		return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Refuse{Refuse: &hooksv1.Refusal{Code: 110, Reason: "that text is not allowed"}}}, nil
	case strings.HasPrefix(text, "replace"):
		j := fmt.Sprintf(`{"text":%q,"by":%q,"n":12345678901234567891}`, strings.ToUpper(text), user)
		return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Allow{Allow: &hooksv1.PublishAllow{Payload: &hooksv1.PublishAllow_Json{Json: j}}}}, nil
	case text == "skip":
		return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Skip{Skip: &hooksv1.PublishSkip{Offset: 42, Epoch: "hooked"}}}, nil
	}
	return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Allow{Allow: &hooksv1.PublishAllow{Tags: map[string]string{"checked": "yes"}}}}, nil
}

func (m *impl) RPC(ctx context.Context, req *hooksv1.RPCRequest) (*hooksv1.RPCResponse, error) {
	if out, ok, err := m.answer(ctx, "rpc", req); ok {
		r, _ := out.(*hooksv1.RPCResponse)
		return r, err
	}
	result := func(r *hooksv1.RPCResult) *hooksv1.RPCResponse {
		return &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Result{Result: r}}
	}
	switch req.Method {
	case "echo":
		switch p := req.Payload.(type) {
		case *hooksv1.RPCRequest_Json:
			return result(&hooksv1.RPCResult{Payload: &hooksv1.RPCResult_Json{Json: p.Json}}), nil
		case *hooksv1.RPCRequest_Binary:
			return result(&hooksv1.RPCResult{Payload: &hooksv1.RPCResult_Binary{Binary: p.Binary}}), nil
		}
		return result(&hooksv1.RPCResult{}), nil
	case "whoami":
		s := req.GetSession()
		return result(&hooksv1.RPCResult{Payload: &hooksv1.RPCResult_Json{Json: fmt.Sprintf(`{"user":%q,"transport":%q}`, s.GetUser(), s.GetTransport())}}), nil
	case "fail":
		return &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Error{Error: &hooksv1.Refusal{Code: 1001, Reason: "it failed", Temporary: true}}}, nil
	case "denied":
		return &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Error{Error: &hooksv1.Refusal{Reason: "not for you"}}}, nil
	case "binary":
		return result(&hooksv1.RPCResult{Payload: &hooksv1.RPCResult_Binary{Binary: []byte{0, 1, 2}}}), nil
	}
	return nil, status.Error(codes.NotFound, "no such method")
}
