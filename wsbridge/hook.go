package wsbridge

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/protobuf/types/known/structpb"
)

// The application's backend decides, where the configuration says so
// (config.Hooks): who a browser is (hookAuth, the Connect hook), whether
// its session goes on (Refresh), whether it may subscribe to a channel of
// a namespace with subscribe_hook (permitSubscribe), what becomes of its
// publications to a namespace with publish_hook (publishHook), and what
// its `rpc` frames answer (rpc). A hook without an answer (the backend
// down, slow, broken, its circuit open, too many calls in flight) is error
// 203 or 204 for a request, close 4010 for a connect or refresh: at once,
// never a hang (the hooks client bounds every call). A hook's refusal
// reaches the browser with the backend's code and reason.

// hookAuth authenticates with the connect hook, and with JWTs where they
// apply: a connection that presents a token is verified as a JWT when JWT
// keys are configured (the hook is not asked); every other connection
// (no token, or no JWT key) is the hook's to decide, with the token if
// any.
type hookAuth struct {
	b         *Bridge
	jwt       *jwtAuth
	keys      bool // JWT keys are configured
	refreshOn bool // the refresh hook is on
}

func (a *hookAuth) authenticate(ctx context.Context, c *credentials) (*identity, error) {
	if c.token != "" && a.keys {
		return a.jwt.authenticate(ctx, c)
	}
	req := &hooksv1.ConnectRequest{
		Session: &hooksv1.Session{Client: c.client, Transport: c.kind.String(), Subprotocol: subprotocolNames[c.format], RemoteAddr: c.remoteAddr, Bridge: a.b.id},
		Token:   c.token,
		Name:    c.name,
	}
	for name, vs := range c.header {
		if req.Headers == nil {
			req.Headers = make(map[string]*hooksv1.Header, len(c.header))
		}
		req.Headers[strings.ToLower(name)] = &hooksv1.Header{Values: vs}
	}
	for _, ck := range c.cookies {
		if req.Cookies == nil {
			req.Cookies = make(map[string]string, len(c.cookies))
		}
		req.Cookies[ck.Name] = ck.Value
	}
	res, err := a.b.hooks.Connect(ctx, req)
	if err != nil {
		return nil, &refusal{code: CloseBackendDown, reason: "the application's backend is unavailable; reconnect later", reconnect: true, delayMs: 1000, metric: "hook_unavailable", err: err}
	}
	if r := res.GetRefuse(); r != nil {
		reason := r.Reason
		if reason == "" {
			reason = "refused by the application"
		}
		return nil, &refusal{code: CloseCode(r.Code), reason: reason, reconnect: r.Temporary || r.Code == uint32(CloseTokenExpired), metric: "hook_refused"}
	}
	acc := res.GetAccept()
	id := &identity{user: acc.User, hook: true, nSubscribe: int32(len(acc.Subscribe))}
	// Channels the backend subscribes the session to are granted too.
	id.channels = append(append(id.channels, acc.Channels...), acc.Subscribe...)
	if acc.Info != nil {
		id.info = structpb.NewStructValue(acc.Info)
	}
	if acc.ExpiresIn > 0 {
		id.setExpiry(time.Now().Add(time.Duration(acc.ExpiresIn) * time.Second))
	}
	return id, nil
}

// refresh extends a JWT session through its JWT. Sessions of the connect
// hook are extended by the refresh hook (session.refresh asks it).
func (a *hookAuth) refresh(ctx context.Context, cur *identity, token string) (*identity, error) {
	if cur.hook {
		return nil, reqErr(ErrNotAvailable, "this session is refreshed by the application's backend")
	}
	return a.jwt.refresh(ctx, cur, token)
}

// hookSession describes s to the backend.
func (s *session) hookSession() *hooksv1.Session {
	return &hooksv1.Session{Client: s.id, User: s.user, Transport: s.t.kind.String(), Subprotocol: subprotocolNames[s.format], RemoteAddr: s.remote, Bridge: s.b.id}
}

// refreshByHook asks the refresh hook whether s goes on, and returns its
// identity with the new expiry; token is the client's (empty at expiry).
// A refusal ends the session (a *closeError); no answer is error 203/204.
func (s *session) refreshByHook(id *identity, token string) (*identity, error) {
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.hooks.Refresh(ctx, &hooksv1.RefreshRequest{Session: s.hookSession(), Token: token})
	if err != nil {
		return nil, fromHook(err)
	}
	if r := res.GetRefuse(); r != nil {
		reason := r.Reason
		if reason == "" {
			reason = "session ended by the application; reconnect"
		}
		return nil, &closeError{code: CloseCode(r.Code), reason: reason, reconnect: r.Temporary || r.Code == uint32(CloseTokenExpired)}
	}
	next := *id
	next.expires = 0
	if sec := res.GetExtend().GetExpiresIn(); sec > 0 {
		next.setExpiry(time.Now().Add(time.Duration(sec) * time.Second))
	}
	return &next, nil
}

// expired runs when the session's identity id expires: the refresh hook
// extends it (and the timer is armed again) or ends it; without the
// refresh hook, the session closes with 4002.
func (s *session) expired(id *identity, gen uint32) {
	if !id.hook || s.b.hookAuth == nil || !s.b.hookAuth.refreshOn {
		s.closeWith(CloseTokenExpired, "token expired; reconnect with a fresh token", true, 0)
		return
	}
	next, err := s.refreshByHook(id, "")
	var ce *closeError
	switch {
	case errors.As(err, &ce):
		s.closeWith(ce.code, ce.reason, ce.reconnect, 0)
		return
	case err != nil:
		s.closeWith(CloseBackendDown, "the application's backend could not extend the session; reconnect later", true, 1000)
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	if s.expGen != gen || s.closed() {
		return // the client refreshed meanwhile, or the session ended
	}
	s.armLocked(next)
}

// permitSubscribe decides whether s may subscribe to channel name of ns,
// and returns the presence info the subscribe hook gave (nil: the
// session's).
func (s *session) permitSubscribe(ns *config.Namespace, name string) (*structpb.Value, error) {
	if granted(s.ident, name) {
		return nil, nil
	}
	if !ns.SubscribeHook {
		if !canSubscribe(s.ident, ns, name) {
			return nil, reqErr(ErrPermissionDenied, "not allowed to subscribe to %q", name)
		}
		return nil, nil
	}
	if s.b.hooks == nil {
		return nil, errNoHooks(ns, "subscribe_hook")
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.hooks.Subscribe(ctx, &hooksv1.SubscribeRequest{Session: s.hookSession(), Channel: name})
	if err != nil {
		return nil, fromHook(err)
	}
	if r := res.GetRefuse(); r != nil {
		return nil, fromRefusal(r, "not allowed to subscribe to "+name)
	}
	if info := res.GetAllow().GetInfo(); info != nil {
		return structpb.NewStructValue(info), nil
	}
	return nil, nil
}

// errNoHooks refuses a request a namespace wants the application's backend
// asked about, on a bridge with no hooks configured: a split bridge whose
// core's namespaces use hooks its own configuration does not have.
func errNoHooks(ns *config.Namespace, hook string) error {
	return reqErr(ErrInternal, "namespace %q asks the application's backend (%s), and this bridge has no hooks configured", ns.Name, hook)
}

// publishHook asks the publish hook about req (its payload as the browser
// sent it), and changes req as the backend says: a new payload, tags. It
// returns a reply when the backend published the publication itself.
func (s *session) publishHook(ns *config.Namespace, req *heraldv1.PublishRequest) (*heraldv1.ServerFrame, error) {
	if s.b.hooks == nil {
		return nil, errNoHooks(ns, "publish_hook")
	}
	hreq := &hooksv1.PublishRequest{Session: s.hookSession(), Channel: req.Channel, IdempotencyKey: req.IdempotencyKey}
	switch p := req.Payload.(type) {
	case *heraldv1.PublishRequest_Json:
		hreq.Payload = &hooksv1.PublishRequest_Json{Json: p.Json}
	case *heraldv1.PublishRequest_Binary:
		hreq.Payload = &hooksv1.PublishRequest_Binary{Binary: p.Binary}
	case *heraldv1.PublishRequest_Data:
		text, err := payload.FromValue(p.Data)
		if err != nil {
			return nil, reqErr(ErrBadRequest, "data: %s", err.Error())
		}
		hreq.Payload = &hooksv1.PublishRequest_Json{Json: string(text)}
		req.Payload = &heraldv1.PublishRequest_Json{Json: string(text)}
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.hooks.Publish(ctx, hreq)
	if err != nil {
		return nil, fromHook(err)
	}
	switch d := res.Decision.(type) {
	case *hooksv1.PublishResponse_Refuse:
		return nil, fromRefusal(d.Refuse, "not allowed to publish to "+req.Channel)
	case *hooksv1.PublishResponse_Skip:
		return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Publish{Publish: &heraldv1.PublishResponse{
			Position: &heraldv1.StreamPosition{Offset: d.Skip.Offset, Epoch: d.Skip.Epoch},
		}}}, nil
	case *hooksv1.PublishResponse_Allow:
		switch p := d.Allow.Payload.(type) {
		case *hooksv1.PublishAllow_Json:
			req.Payload = &heraldv1.PublishRequest_Json{Json: p.Json}
		case *hooksv1.PublishAllow_Binary:
			req.Payload = &heraldv1.PublishRequest_Binary{Binary: p.Binary}
		}
		if len(d.Allow.Tags) > 0 {
			req.Tags = d.Allow.Tags
		}
	}
	return nil, nil
}

// rpc passes an `rpc` frame to the backend's RPC hook and returns its
// answer.
func (s *session) rpc(f *heraldv1.RPCFrame) (*heraldv1.ServerFrame, error) {
	h := s.b.hcfg
	if len(h.RPCMethods) == 0 {
		return nil, reqErr(ErrNotAvailable, "rpc is off on this bridge (hooks.rpc_methods lists no method)")
	}
	if !config.ValidRPCMethod(f.Method) {
		return nil, reqErr(ErrBadRequest, "method must be 1-255 letters, digits or _-.:/")
	}
	if !h.AllowsRPC(f.Method) {
		return nil, reqErr(ErrPermissionDenied, "rpc method %q is not allowed", f.Method)
	}
	req := &hooksv1.RPCRequest{Session: s.hookSession(), Method: f.Method}
	switch p := f.Payload.(type) {
	case *heraldv1.RPCFrame_Json:
		if err := payload.Check([]byte(p.Json)); err != nil {
			field := "data"
			if s.format == formatProto {
				field = "json"
			}
			return nil, reqErr(ErrBadRequest, "%s: %s", field, err.Error())
		}
		req.Payload = &hooksv1.RPCRequest_Json{Json: p.Json}
	case *heraldv1.RPCFrame_Data:
		text, err := payload.FromValue(p.Data)
		if err != nil {
			return nil, reqErr(ErrBadRequest, "data: %s", err.Error())
		}
		req.Payload = &hooksv1.RPCRequest_Json{Json: string(text)}
	case *heraldv1.RPCFrame_Binary:
		req.Payload = &hooksv1.RPCRequest_Binary{Binary: p.Binary}
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.hooks.RPC(ctx, req)
	if err != nil {
		return nil, fromHook(err)
	}
	if e := res.GetError(); e != nil {
		return nil, fromRefusal(e, "the method failed")
	}
	out := &heraldv1.RPCResultFrame{Payload: &heraldv1.RPCResultFrame_Json{Json: "null"}}
	switch p := res.GetResult().Payload.(type) {
	case *hooksv1.RPCResult_Json:
		out.Payload = &heraldv1.RPCResultFrame_Json{Json: p.Json}
	case *hooksv1.RPCResult_Binary:
		out.Payload = &heraldv1.RPCResultFrame_Binary{Binary: p.Binary}
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Rpc{Rpc: out}}, nil
}
