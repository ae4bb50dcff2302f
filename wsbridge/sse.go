package wsbridge

import (
	"net/http"
	"strings"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// SSE (EventSource) transport, at /sse:
//
//	GET /sse?token=JWT&channel=chat:lobby&channel=news:1&name=my-app
//
// The session connects with the token of the URL (or the `herald_token`
// cookie, or `Authorization: Bearer`), is subscribed to its personal
// channel and to the URL's channels, each announced by a `subscribed`
// event, and receives every server frame as an event whose data is the
// frame in herald.json. Its event ids resume every channel named at
// connect (sseid.go): the browser's automatic reconnect sends the last one
// as Last-Event-ID, and the new stream replays exactly what was missed, or
// says `recovered: false`. Heartbeats are comment lines. A stream the
// bridge ends carries the `disconnect` frame as its last event, with
// `retry:` set to the reconnect delay (an hour when it should not
// reconnect: the page should close its EventSource on such a `disconnect`).
// After connect, the client sends commands (subscribe, publish...) by POST
// to /command with the session_token of its `connect` event.

// tokenCookie is the cookie an SSE or HTTP-stream client may carry its
// token in (set by the application's backend, ideally HttpOnly, Secure,
// SameSite=Strict and Path=/sse), instead of the URL.
const tokenCookie = "herald_token"

// SSE returns the handler of the SSE endpoint (/sse).
func (b *Bridge) SSE() http.Handler { return http.HandlerFunc(b.serveSSE) }

func (b *Bridge) serveSSE(w http.ResponseWriter, r *http.Request) {
	if !b.cors(w, r, "GET") {
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, OPTIONS")
		http.Error(w, "open with GET (new EventSource(url))", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	channels := q["channel"]
	if len(channels) > b.cfg.MaxChannels {
		http.Error(w, "too many channel parameters: the limit is max_channels", http.StatusBadRequest)
		return
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("last_event_id") // a client that reconnects by itself
	}
	if b.closing.Load() {
		refuse(w, "shutting_down", http.StatusServiceUnavailable, retryStorm, "bridge shutting down; reconnect to another node")
		return
	}
	adm, ok := b.lim.admit(w, r)
	if !ok {
		return
	}
	c := &httpConn{}
	c.init(b, c, transportSSE, formatJSON)
	c.sse = newSSEIDs(channels)
	s := newSession(b, &c.transport, b.presented(transportSSE, r))
	s.cmds = newCommandQueue(s.id)
	if !c.open(w, r, "text/event-stream; charset=utf-8") {
		adm.release()
		return
	}
	b.nAccepted.Add(1)
	metricConns[transportSSE][formatJSON].Add(1)
	b.log.Debug("connection opened", "conn", s.id, "transport", "sse", "remote", r.RemoteAddr, "resume", last != "")
	s.start()
	f := &heraldv1.ConnectFrame{Token: requestToken(r), Name: q.Get("name")}
	s.connect(0, f, func(user string) (*heraldv1.StreamPosition, []initialSub) { return c.sse.resume(user, last) })
	s.cmds.release(s)
	c.serve(r, adm)
}

// requestToken is the token of an SSE or HTTP-stream request: the `token`
// query parameter, the herald_token cookie, or an Authorization: Bearer
// header.
func requestToken(r *http.Request) string {
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if ck, err := r.Cookie(tokenCookie); err == nil && ck.Value != "" {
		return ck.Value
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return t
	}
	return ""
}
