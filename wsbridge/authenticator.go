package wsbridge

import (
	"context"
	"net/http"
)

// authenticator decides who a client is from what it presented at connect,
// and whether a refresh extends its session. The JWT verifier is one
// (jwtAuth); the application backend's connect hook is another.
// Implementations must be safe for concurrent use and honour ctx (a
// session's connect waits for them).
type authenticator interface {
	// authenticate returns the identity of a client (nil: anonymous), a
	// *refusal with the close code the client gets, or another error
	// (the authenticator is unavailable: the client is told to retry).
	authenticate(ctx context.Context, c *credentials) (*identity, error)
	// refresh returns the identity that token gives the session of cur,
	// a *requestError for a token the session keeps its old identity
	// over, or a *closeError that ends the session.
	refresh(ctx context.Context, cur *identity, token string) (*identity, error)
}

// credentials are what a client presented at connect.
type credentials struct {
	kind       transportKind
	token      string // the token from the connect frame, the URL or a cookie; may be empty
	name       string // the client's name and version, from the connect frame
	remoteAddr string // the TCP peer (X-Forwarded-For is not trusted)
	client     string // the session's id, set at connect
	format     format // the session's subprotocol, set at connect
	// header and cookies hold only what the bridge was configured to pass
	// to its authenticator (hooks.headers, hooks.cookies); nil without
	// such configuration. They are dropped after connect.
	header  http.Header
	cookies []*http.Cookie
}

// presented returns the credentials of request r: the remote address and
// the allowlisted headers and cookies.
func (b *Bridge) presented(kind transportKind, r *http.Request) *credentials {
	c := &credentials{kind: kind, remoteAddr: r.RemoteAddr}
	for _, h := range b.presentHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			if c.header == nil {
				c.header = make(http.Header)
			}
			c.header[http.CanonicalHeaderKey(h)] = v
		}
	}
	for _, name := range b.presentCookies {
		if ck, err := r.Cookie(name); err == nil {
			c.cookies = append(c.cookies, ck)
		}
	}
	return c
}

// refusal is an authenticator's answer that the client may not connect:
// the session closes with code (after a DisconnectFrame with reason,
// reconnect and delayMs).
type refusal struct {
	code      CloseCode
	reason    string // for the client: never a token
	reconnect bool
	delayMs   uint32
	metric    string // the herald_ws_auth_failures_total reason
	err       error  // logged at debug level; may be nil
}

func (r *refusal) Error() string { return r.reason }
