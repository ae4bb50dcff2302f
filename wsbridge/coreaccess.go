package wsbridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A bridge authenticates to its core with an API key: `herald bridge`
// with bridge.core_api_key, `herald serve` with a key of its own that no
// one configures. When the core refuses that key (UNAUTHENTICATED) or its
// scopes (PERMISSION_DENIED: the key lacks the bridge scope), no browser
// request can succeed until the operator fixes the configuration. Then the
// bridge logs what is wrong and what to set at ERROR (at once, then at
// most every refusalLogEvery while it lasts, whatever the number of
// browser requests), CoreError reports it (the node's /readyz answers 503
// with it), and browsers get error 201 (unavailable, temporary; see
// fromStatus). The refusal is cleared when the core accepts the bridge's
// BridgeSession, which needs the bridge scope.

// SessionAcceptedHeader is the header metadata key that the core sends on
// a BridgeSession stream once it has accepted the bridge's credentials
// (value "accepted"); a bridge takes it as the end of a refusal.
const SessionAcceptedHeader = "herald-bridge-session"

// refusalLogEvery is the longest silence of the log while the core keeps
// refusing the bridge.
const refusalLogEvery = time.Minute

// coreAccess tracks whether the core refuses the bridge. Safe for
// concurrent use.
type coreAccess struct {
	log *slog.Logger

	mu     sync.Mutex
	err    error     // the core's refusal; nil while not refused
	logged time.Time // when the refusal was last logged
}

// isRefusal reports a core error that says the bridge's own credentials
// are wrong: the browser cannot fix it, the operator must.
func isRefusal(err error) bool {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied:
		return true
	}
	return false
}

// refusalHint says what to set for a refusal with code.
func refusalHint(code codes.Code) string {
	if code == codes.PermissionDenied {
		return "give the API key in bridge.core_api_key the bridge scope on the core (scopes: [bridge])"
	}
	return "set bridge.core_api_key (--core-api-key, $HERALD_CORE_API_KEY) to one of the core's api_keys, with the bridge scope"
}

// refused records err if it is a refusal of the bridge by the core.
func (a *coreAccess) refused(err error) {
	if !isRefusal(err) {
		return
	}
	st := status.Convert(err)
	e := fmt.Errorf("the core refuses this bridge (%s: %s): %s", st.Code(), st.Message(), refusalHint(st.Code()))
	a.mu.Lock()
	now := time.Now()
	logIt := a.err == nil || now.Sub(a.logged) >= refusalLogEvery
	a.err = e
	if logIt {
		a.logged = now
	}
	a.mu.Unlock()
	if logIt {
		a.log.Error("the core refuses this bridge's credentials; browsers get error 201 (unavailable) and /readyz answers 503 until this is fixed",
			"code", st.Code().String(), "reason", st.Message(), "fix", refusalHint(st.Code()))
	}
}

// accepted clears a refusal: the core accepted the bridge's session.
func (a *coreAccess) accepted() {
	a.mu.Lock()
	was := a.err
	a.err = nil
	a.mu.Unlock()
	if was != nil {
		a.log.Info("the core accepts this bridge's credentials again")
	}
}

// CoreError returns why the bridge's core refuses it (a wrong or missing
// API key, or one without the bridge scope), with what to set; nil while
// it does not. Readiness checks report it.
func (b *Bridge) CoreError() error {
	b.access.mu.Lock()
	defer b.access.mu.Unlock()
	return b.access.err
}

// coreConn is the bridge's connection to its core, watching every call's
// outcome for refusals of the bridge itself.
type coreConn struct {
	cc grpc.ClientConnInterface
	a  *coreAccess
}

func (c *coreConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	err := c.cc.Invoke(ctx, method, args, reply, opts...)
	if err != nil {
		c.a.refused(err)
	}
	return err
}

func (c *coreConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := c.cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		c.a.refused(err)
		return nil, err
	}
	return &coreStream{ClientStream: s, a: c.a, session: method == heraldv1.HeraldService_BridgeSession_FullMethodName}, nil
}

// coreStream watches one stream: errors for refusals and, on the bridge
// session, the core's acceptance in the header.
type coreStream struct {
	grpc.ClientStream
	a       *coreAccess
	session bool
}

func (s *coreStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && err != io.EOF {
		s.a.refused(err)
	}
	return err
}

func (s *coreStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	switch {
	case err != nil:
		s.a.refused(err)
	case s.session && len(md.Get(SessionAcceptedHeader)) > 0:
		s.a.accepted()
	}
	return md, err
}
