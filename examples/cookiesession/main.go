// Command cookiesession is an application backend for Herald's hooks
// with cookie sessions and no JWT: a login form sets a `session` cookie,
// and Herald's bridge asks this program (herald.hooks.v1.HooksService,
// over gRPC on -grpc, or as JSON over HTTP at -http/hooks/) who each
// browser is, whether it may enter a room, what its messages become, and
// what its rpc calls answer. The README's "Hooks: your backend decides"
// walks through it:
//
//	go run ./examples/cookiesession                       # this backend: gRPC :7600, app :8080
//	herald serve --config examples/cookiesession/herald.yaml
//	open http://127.0.0.1:8080, log in, chat
package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/hooks"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

func main() {
	var cfg options
	flag.StringVar(&cfg.grpcAddr, "grpc", "127.0.0.1:7600", "listen address of the hooks over gRPC")
	flag.StringVar(&cfg.httpAddr, "http", "127.0.0.1:8080", "listen address of the app (login, page) and of the hooks over HTTP (/hooks/)")
	flag.StringVar(&cfg.herald, "herald", "http://127.0.0.1:7401", "Herald's HTTP address, as browsers reach it")
	flag.StringVar(&cfg.key, "key", os.Getenv("HOOKS_API_KEY"), "hooks.api_key Herald sends; empty: not checked ($HOOKS_API_KEY)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("cookiesession", "err", err)
		os.Exit(1)
	}
}

type options struct {
	grpcAddr, httpAddr, herald, key string
}

// run serves until ctx ends; ready, when set, receives the bound
// addresses and the app (the tests listen on port 0).
func run(ctx context.Context, cfg options, log *slog.Logger, ready func(grpcAddr, httpAddr string, a *app)) error {
	app := &app{key: cfg.key, sessions: map[string]*session{}}
	app.setHerald(cfg.herald)
	gl, err := net.Listen("tcp", cfg.grpcAddr)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		gl.Close()
		return err
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(app.checkKey))
	hooksv1.RegisterHooksServiceServer(gs, app)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", app.page)
	mux.HandleFunc("POST /login", app.login)
	mux.HandleFunc("POST /logout", app.logout)
	mux.Handle("/hooks/", hooks.HTTPHandler(app))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("cookiesession backend", "grpc", gl.Addr().String(), "app", "http://"+hl.Addr().String(), "herald", cfg.herald)
	if ready != nil {
		ready(gl.Addr().String(), hl.Addr().String(), app)
	}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() { errc <- hs.Serve(hl) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	gs.GracefulStop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// sessionTTL is how long a Herald session lasts before the bridge asks
// Refresh whether it goes on.
const sessionTTL = 10 * time.Minute

type session struct {
	user  string
	since time.Time
}

// app is the application: its cookie sessions, and the hooks.
type app struct {
	hooksv1.UnimplementedHooksServiceServer
	key string

	mu       sync.Mutex
	herald   string              // Herald's base URL, for the page
	sessions map[string]*session // by cookie value
}

func (a *app) setHerald(u string) {
	a.mu.Lock()
	a.herald = strings.TrimSuffix(u, "/")
	a.mu.Unlock()
}

// checkKey refuses calls without hooks.api_key, when one is set. (Over
// HTTP, hooks.HTTPHandler passes the Authorization header the same way.)
func (a *app) checkKey(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.authorized(ctx); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *app) authorized(ctx context.Context) error {
	if a.key == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get("authorization")
	if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), []byte("Bearer "+a.key)) != 1 {
		return status.Error(codes.Unauthenticated, "not Herald")
	}
	return nil
}

func (a *app) user(cookie string) (*session, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[cookie]
	return s, ok
}

// login starts a cookie session: what the application already has, with
// or without Herald.
func (a *app) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.FormValue("user"))
	if !validUser(name) {
		http.Error(w, "user: 1-32 letters, digits, '-' or '_'", http.StatusBadRequest)
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	v := hex.EncodeToString(b)
	a.mu.Lock()
	a.sessions[v] = &session{user: name, since: time.Now()}
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "session", Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie("session"); err == nil {
		a.mu.Lock()
		delete(a.sessions, ck.Value)
		a.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: "session", Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func validUser(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func refuse(code uint32, reason string) *hooksv1.Refusal {
	return &hooksv1.Refusal{Code: code, Reason: reason}
}

// Connect: the session cookie names the user; no cookie, no connection.
func (a *app) Connect(ctx context.Context, req *hooksv1.ConnectRequest) (*hooksv1.ConnectResponse, error) {
	if err := a.authorized(ctx); err != nil {
		return nil, err
	}
	s, ok := a.user(req.Cookies["session"])
	if !ok {
		return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Refuse{
			Refuse: refuse(4001, "log in first"),
		}}, nil
	}
	info, _ := structpb.NewStruct(map[string]any{"name": s.user})
	return &hooksv1.ConnectResponse{Decision: &hooksv1.ConnectResponse_Accept{Accept: &hooksv1.ConnectAccept{
		User:      s.user,
		Info:      info,
		Subscribe: []string{"room:lobby"},
		ExpiresIn: uint32(sessionTTL / time.Second),
	}}}, nil
}

// Refresh: the Herald session goes on while the cookie session does.
func (a *app) Refresh(ctx context.Context, req *hooksv1.RefreshRequest) (*hooksv1.RefreshResponse, error) {
	if err := a.authorized(ctx); err != nil {
		return nil, err
	}
	a.mu.Lock()
	active := false
	for _, s := range a.sessions {
		active = active || s.user == req.Session.User
	}
	a.mu.Unlock()
	if !active {
		return &hooksv1.RefreshResponse{Decision: &hooksv1.RefreshResponse_Refuse{
			Refuse: refuse(4002, "logged out"),
		}}, nil
	}
	return &hooksv1.RefreshResponse{Decision: &hooksv1.RefreshResponse_Extend{
		Extend: &hooksv1.RefreshExtend{ExpiresIn: uint32(sessionTTL / time.Second)},
	}}, nil
}

// Subscribe: signed-in users enter any room but room:staff, which is for
// admin; their role shows in the room's presence.
func (a *app) Subscribe(ctx context.Context, req *hooksv1.SubscribeRequest) (*hooksv1.SubscribeResponse, error) {
	if err := a.authorized(ctx); err != nil {
		return nil, err
	}
	user := req.Session.User
	if user == "" || req.Channel == "room:staff" && user != "admin" {
		return &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Refuse{
			Refuse: refuse(1403, "this room is for staff"),
		}}, nil
	}
	role := "member"
	if user == "admin" {
		role = "admin"
	}
	info, _ := structpb.NewStruct(map[string]any{"name": user, "role": role})
	return &hooksv1.SubscribeResponse{Decision: &hooksv1.SubscribeResponse_Allow{
		Allow: &hooksv1.SubscribeAllow{Info: info},
	}}, nil
}

// Publish: a message is {"text": "..."} of at most 500 characters; the
// backend publishes its own version, stamped with who sent it and when.
func (a *app) Publish(ctx context.Context, req *hooksv1.PublishRequest) (*hooksv1.PublishResponse, error) {
	if err := a.authorized(ctx); err != nil {
		return nil, err
	}
	var msg struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal([]byte(req.GetJson()), &msg); err != nil || strings.TrimSpace(msg.Text) == "" {
		return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Refuse{
			Refuse: refuse(110, `a message is {"text": "..."}`),
		}}, nil
	}
	text := strings.TrimSpace(msg.Text)
	if utf8.RuneCountInString(text) > 500 {
		return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Refuse{
			Refuse: refuse(1413, "at most 500 characters"),
		}}, nil
	}
	stamped, _ := json.Marshal(map[string]any{"text": text, "from": req.Session.User, "at": time.Now().UnixMilli()})
	return &hooksv1.PublishResponse{Decision: &hooksv1.PublishResponse_Allow{Allow: &hooksv1.PublishAllow{
		Payload: &hooksv1.PublishAllow_Json{Json: string(stamped)},
	}}}, nil
}

// RPC: profile.get answers who the caller is, from the backend's records.
func (a *app) RPC(ctx context.Context, req *hooksv1.RPCRequest) (*hooksv1.RPCResponse, error) {
	if err := a.authorized(ctx); err != nil {
		return nil, err
	}
	if req.Method != "profile.get" {
		return &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Error{Error: refuse(1404, "no method "+req.Method)}}, nil
	}
	a.mu.Lock()
	var since time.Time
	for _, s := range a.sessions {
		if s.user == req.Session.User && (since.IsZero() || s.since.Before(since)) {
			since = s.since
		}
	}
	a.mu.Unlock()
	out, _ := json.Marshal(map[string]any{"user": req.Session.User, "signed_in": since.UTC().Format(time.RFC3339), "transport": req.Session.Transport})
	return &hooksv1.RPCResponse{Decision: &hooksv1.RPCResponse_Result{Result: &hooksv1.RPCResult{
		Payload: &hooksv1.RPCResult_Json{Json: string(out)},
	}}}, nil
}

// page is the app's page: a login form, or the chat room over Herald.
func (a *app) page(w http.ResponseWriter, r *http.Request) {
	var user string
	if ck, err := r.Cookie("session"); err == nil {
		if s, ok := a.user(ck.Value); ok {
			user = s.user
		}
	}
	a.mu.Lock()
	herald := a.herald
	a.mu.Unlock()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, map[string]string{"User": user, "Herald": herald}); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<meta charset="utf-8">
<title>cookiesession</title>
{{if not .User}}
<form method="post" action="/login"><input name="user" placeholder="your name" autofocus> <button>Log in</button></form>
{{else}}
<p>Signed in as <b id="me">{{.User}}</b>. <form method="post" action="/logout" style="display:inline"><button>Log out</button></form></p>
<p id="state">connecting…</p>
<ul id="log"></ul>
<form id="say"><input id="text" placeholder="say something" autocomplete="off"> <button>Send</button></form>
<script type="module">
  // No token: the session cookie goes with the WebSocket, and Herald asks
  // this backend who it belongs to.
  import { Herald } from "{{.Herald}}/herald.js";
  const herald = (window.herald = new Herald("{{.Herald}}/ws"));
  const log = document.getElementById("log");
  const line = (text) => log.appendChild(document.createElement("li")).textContent = text;
  herald.on("connected", async () => {
    const profile = await herald.rpc("profile.get");
    document.getElementById("state").textContent = "connected as " + profile.user + ", signed in " + profile.signed_in;
  });
  herald.on("disconnected", (c) => { document.getElementById("state").textContent = "disconnected: " + c.code + " " + c.reason; });
  // room:lobby is subscribed by the backend at connect (Connect's
  // subscribe); its messages arrive as the client's own publications.
  herald.on("publication", (p) => { if (p.channel === "room:lobby") line(p.data.from + ": " + p.data.text); });
  document.getElementById("say").onsubmit = async (e) => {
    e.preventDefault();
    const input = document.getElementById("text");
    try { await herald.publish("room:lobby", { text: input.value }); input.value = ""; }
    catch (err) { line("refused: " + err.code + " " + err.message); }
  };
  herald.connect();
</script>
{{end}}
`))
