package wsbridge

import (
	"net/http"
	"unicode/utf8"
)

// HTTP-streaming transport, at /stream, for a fetch() with a streaming
// response body:
//
//	POST /stream
//	Content-Type: application/json          (herald.json; or application/x-protobuf: herald.proto)
//
//	{"id":1,"connect":{"token":"eyJ..."}}
//	{"id":2,"subscribe":{"channel":"chat:lobby"}}
//
// The body is a client message as on a WebSocket (frames separated by
// "\n", or each preceded by its varint length), at most max_frame bytes,
// beginning with connect. The response is the session's stream of server
// frames: NDJSON (application/x-ndjson, one frame per line) or
// length-prefixed protobuf (application/x-protobuf), with empty lines (or
// zero-length frames) as heartbeats, ending after the `disconnect` frame.
// Later commands go by POST to /command with the session_token of the
// `connect` reply.

// HTTPStream returns the handler of the HTTP-streaming endpoint (/stream).
func (b *Bridge) HTTPStream() http.Handler { return http.HandlerFunc(b.serveHTTPStream) }

func (b *Bridge) serveHTTPStream(w http.ResponseWriter, r *http.Request) {
	if !b.cors(w, r, "POST") {
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "POST a connect frame (and more client frames) to open a stream", http.StatusMethodNotAllowed)
		return
	}
	f := formatJSON
	contentType := "application/x-ndjson"
	if isBinary(r.Header.Get("Content-Type")) {
		f, contentType = formatProto, "application/x-protobuf"
	}
	body, ok := readBody(w, r, b.cfg.MaxFrame, nil)
	if !ok {
		return
	}
	if f == formatJSON && !utf8.Valid(body) {
		http.Error(w, "a JSON body must be UTF-8", http.StatusBadRequest)
		return
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
	c.init(b, c, transportHTTPStream, f)
	s := newSession(b, &c.transport, b.presented(transportHTTPStream, r))
	s.cmds = newCommandQueue(s.id)
	if !c.open(w, r, contentType) {
		adm.release()
		return
	}
	b.nAccepted.Add(1)
	metricConns[transportHTTPStream][f].Add(1)
	b.log.Debug("connection opened", "conn", s.id, "transport", "http_stream", "remote", r.RemoteAddr, "subprotocol", subprotocolNames[f])
	s.start()
	s.creds.token = requestToken(r) // a connect frame's own token wins
	s.handleMessage(body)
	if !s.authed.Load() {
		s.closeWith(CloseBadFrame, "the request body must begin with a connect frame", false, 0)
	}
	s.cmds.release(s)
	c.serve(r, adm)
}
