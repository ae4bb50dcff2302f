package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/wsbridge"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var metricHTTPRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "herald_http_refused_total",
	Help: "HTTP requests refused by the front door before any handler, by reason (host, origin, content_type, unauthenticated, body_too_large, body_timeout).",
}, []string{"reason"})

func init() { prometheus.MustRegister(metricHTTPRefused) }

// frontDoor guards the HTTP listener before any handler runs:
//
//   - Without API keys on a loopback listener (the keyless default), the
//     Host header must name this node (config.OwnHosts): a DNS rebinding
//     page reaches 127.0.0.1 under its own name, and is refused (403).
//   - REST writes (every method but GET and HEAD under /v1/) from a page
//     must come from one of the node's own origins or
//     bridge.allowed_origins ("*" does not count here): a request whose
//     Origin is another, or which has no Origin and says Sec-Fetch-Site:
//     cross-site, is refused (403). Their Content-Type must be one that a
//     page cannot send without a CORS preflight: a missing one, text/plain
//     and the form encodings are refused (415). Preflights (OPTIONS) under
//     /v1/ are answered 405 without any CORS allowance, so a page of
//     another origin cannot send a JSON write at all.
//   - REST requests are authenticated (Authorization: Bearer, with the
//     core's own key check) before their body is read (401).
//   - A REST body is read up to restBodyLimit and no further (413).
//
// Refusals under /v1/ are JSON in the gateway's error shape. Each kind of
// refusal is logged at info (the first few, then at most every 30 s) with
// what was refused and the option to set.
type frontDoor struct {
	next      http.Handler
	log       *slog.Logger
	checkHost bool
	hosts     map[string]bool
	origins   map[string]bool
	checkKey  func(authorization string) error // nil: no REST routes
	maxBody   int64
	logged    map[string]*rate.Sometimes
}

// newFrontDoor guards next for a node with cfg whose HTTP listener is
// bound to httpAddr. checkKey is the core's CheckAPIKey (nil without a
// core).
func newFrontDoor(cfg config.Config, httpAddr string, checkKey func(string) error, log *slog.Logger, next http.Handler) *frontDoor {
	d := &frontDoor{
		next:      next,
		log:       log,
		checkHost: len(cfg.APIKeys) == 0 && config.Loopback(cfg.HTTPAddr),
		hosts:     make(map[string]bool),
		origins:   make(map[string]bool),
		checkKey:  checkKey,
		maxBody:   restBodyLimit(cfg.Limits.MaxPayload),
		logged:    make(map[string]*rate.Sometimes),
	}
	for _, h := range cfg.OwnHosts(httpAddr) {
		d.hosts[strings.ToLower(h)] = true
	}
	for _, o := range append(cfg.OwnOrigins(httpAddr), cfg.Bridge.AllowedOrigins...) {
		if n, err := config.NormalizeOrigin(o); err == nil {
			d.origins[n] = true
		}
	}
	for _, reason := range []string{"host", "origin", "content_type", "unauthenticated", "body_too_large", "body_timeout"} {
		d.logged[reason] = &rate.Sometimes{First: 3, Interval: 30 * time.Second}
	}
	return d
}

// ownAddr is the address the node's own origins are made of: the
// configured host (a name stays a name) with the bound port (the
// configured one may be 0).
func ownAddr(configured string, bound net.Addr) string {
	host, _, err := net.SplitHostPort(configured)
	_, port, err2 := net.SplitHostPort(bound.String())
	if err != nil || err2 != nil {
		return bound.String()
	}
	return net.JoinHostPort(host, port)
}

// restBodyLimit is the largest REST request body: enough for the largest
// Broadcast, whose binary payload of max_payload bytes is base64 in JSON
// (4 bytes per 3), with 1000 channel names of 255 bytes (quoted, with a
// comma), 32 tags of 256-byte keys and values (quoted, with ':' and ','),
// and 4 KiB for the idempotency key, field names and punctuation:
//
//	4*ceil(max_payload/3) + 1000*258 + 32*518 + 4096
//
// 366,056 bytes with the default max_payload of 65536. A JSON payload's
// text is counted as sent: whitespace and escapes count.
func restBodyLimit(maxPayload int) int64 {
	return int64(4*((maxPayload+2)/3) + 1000*258 + 32*518 + 4096)
}

func (d *frontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest := strings.HasPrefix(r.URL.Path, "/v1/")
	if d.checkHost && !d.hosts[strings.ToLower(r.Host)] {
		d.refuse(w, r, rest, "host", http.StatusForbidden, codes.PermissionDenied,
			"this node does not answer to host "+quoteLimited(r.Host)+": without API keys it answers only to its listen address; add the origin browsers use to public_origins (--public-origins)")
		return
	}
	if !rest || d.checkKey == nil {
		d.next.ServeHTTP(w, r)
		return
	}
	allow, known, takes := restRoutes.takes(r.URL.EscapedPath(), r.Method)
	if r.Method == http.MethodOptions {
		// A preflight: no CORS allowance, ever, for the REST API.
		if known {
			w.Header().Set("Allow", strings.Join(allow, ", "))
		}
		writeRESTError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "the REST API answers no CORS preflight: call it from a backend")
		return
	}
	write := r.Method != http.MethodGet && r.Method != http.MethodHead
	if write {
		if origin := r.Header.Get("Origin"); origin != "" {
			if n, err := config.NormalizeOrigin(origin); err != nil || !d.origins[n] {
				d.refuse(w, r, rest, "origin", http.StatusForbidden, codes.PermissionDenied,
					"REST writes from pages of origin "+quoteLimited(origin)+" are refused: publish from your backend, or add the origin to bridge.allowed_origins (or public_origins)")
				return
			}
		} else if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			d.refuse(w, r, rest, "origin", http.StatusForbidden, codes.PermissionDenied,
				"cross-site REST writes are refused: publish from your backend")
			return
		}
	}
	if err := d.checkKey(r.Header.Get("Authorization")); err != nil {
		d.refuse(w, r, rest, "unauthenticated", http.StatusUnauthorized, codes.Unauthenticated, status.Convert(err).Message())
		return
	}
	if known && !takes {
		// Before the body's checks: a method the route does not take is
		// 405, whatever its body (the gateway answers the same).
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeRESTError(w, http.StatusMethodNotAllowed, codes.Unimplemented, http.StatusText(http.StatusMethodNotAllowed))
		return
	}
	if !write {
		r.Body = http.NoBody
		d.next.ServeHTTP(w, r)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt == "text/plain" || mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data" {
		d.refuse(w, r, rest, "content_type", http.StatusUnsupportedMediaType, codes.InvalidArgument,
			"send the body as JSON with Content-Type: application/json (curl --json '…', or -H 'Content-Type: application/json'); a missing Content-Type, text/plain and form encodings are refused so that no web page can send one without a CORS preflight")
		return
	}
	tooLarge := func() string { // only when refusing: a publish should not format it
		return fmt.Sprintf("the request body is larger than %d bytes, the limit set by limits.max_payload", d.maxBody)
	}
	if r.ContentLength > d.maxBody {
		w.Header().Set("Connection", "close")
		d.refuse(w, r, rest, "body_too_large", http.StatusRequestEntityTooLarge, codes.InvalidArgument, tooLarge())
		return
	}
	// The body has wsbridge.BodyTimeout to arrive: ReadHeaderTimeout covers only
	// the headers, and a body sent a byte a minute would hold the
	// connection and its goroutine for as long as the client liked.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(wsbridge.BodyTimeout))
	body, err := readBody(r.Body, r.ContentLength, d.maxBody)
	_ = rc.SetReadDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		w.Header().Set("Connection", "close")
		d.refuse(w, r, rest, "body_timeout", http.StatusRequestTimeout, codes.DeadlineExceeded,
			fmt.Sprintf("the request body did not arrive within %v", wsbridge.BodyTimeout))
		return
	}
	if err != nil {
		writeRESTError(w, http.StatusBadRequest, codes.InvalidArgument, "reading the request body failed")
		return
	}
	if int64(len(body)) > d.maxBody {
		w.Header().Set("Connection", "close")
		d.refuse(w, r, rest, "body_too_large", http.StatusRequestEntityTooLarge, codes.InvalidArgument, tooLarge())
		return
	}
	r.Body = &readBodyBytes{Reader: bytes.NewReader(body), b: body}
	r.ContentLength = int64(len(body))
	d.next.ServeHTTP(w, r)
}

// readBody reads a body of up to max bytes, and one more if there is
// more: in one buffer of the size the request announced (Content-Length,
// when it is within max), else growing as io.ReadAll does.
func readBody(r io.Reader, length, max int64) ([]byte, error) {
	if length < 0 || length > max {
		return io.ReadAll(io.LimitReader(r, max+1))
	}
	b := make([]byte, 0, length+1) // +1: room to see a body longer than announced
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			if int64(len(b)) > max {
				return b, nil
			}
			b = append(b, 0)[:len(b)]
		}
	}
}

// readBodyBytes is a REST body the front door has read: the gateway's
// decoder takes its bytes (readBodyBytes.bytes) instead of reading them
// again.
type readBodyBytes struct {
	*bytes.Reader
	b []byte
}

func (*readBodyBytes) Close() error { return nil }

// unread returns the bytes not read yet (all of them, before anyone
// reads) and marks them read.
func (r *readBodyBytes) unread() []byte {
	rest := r.b[len(r.b)-r.Len():]
	_, _ = r.Seek(0, io.SeekEnd)
	return rest
}

// refuse answers a refused request, counts it and logs it (rate-limited).
func (d *frontDoor) refuse(w http.ResponseWriter, r *http.Request, rest bool, reason string, httpStatus int, code codes.Code, msg string) {
	metricHTTPRefused.WithLabelValues(reason).Inc()
	if reason != "unauthenticated" && reason != "body_too_large" {
		d.logged[reason].Do(func() {
			d.log.Info("HTTP request refused", "status", httpStatus, "method", r.Method, "path", limited(r.URL.Path),
				"host", limited(r.Host), "origin", limited(r.Header.Get("Origin")), "remote", r.RemoteAddr, "reason", msg)
		})
	}
	if rest {
		writeRESTError(w, httpStatus, code, msg)
		return
	}
	http.Error(w, msg, httpStatus)
}

// writeRESTError writes an error in the REST gateway's shape.
func writeRESTError(w http.ResponseWriter, httpStatus int, code codes.Code, msg string) {
	b, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Details []any  `json:"details"`
	}{int(code), msg, []any{}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	_, _ = w.Write(b)
}

// limited makes a client's string safe to log: valid UTF-8, 200 bytes.
func limited(s string) string {
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func quoteLimited(s string) string { return fmt.Sprintf("%q", limited(s)) }
