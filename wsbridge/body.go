package wsbridge

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// BodyTimeout bounds how long the bridge waits for the body of a POST to
// /stream (the connect frame) or /command, and the node's front door for
// a REST body. Without it, anyone could open
// such a request, announce a body and send it a byte a minute: a
// descriptor and a goroutine held for as long as they liked, before any
// token is checked (net/http's ReadHeaderTimeout covers the headers
// only).
const BodyTimeout = connectTimeout

// readBody reads a request's body, at most max bytes within BodyTimeout.
// When it fails it has answered (413 too large, 408 too slow, 400) and
// returns false; metric, if not nil, counts the refusal by reason.
func readBody(w http.ResponseWriter, r *http.Request, max int, metric func(reason string)) ([]byte, bool) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(BodyTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(max)))
	// The response may stream for hours (/stream), and nothing read after
	// the body should meet this deadline. Today nothing would (over
	// HTTP/1.1 the stream's connection is hijacked; over HTTP/2 the
	// deadline is the body's), so this is a guard, and
	// TestSlowBodiesRefused checks that a stream outlives BodyTimeout.
	_ = rc.SetReadDeadline(time.Time{})
	if err == nil {
		return body, true
	}
	var mb *http.MaxBytesError
	reason, code, msg := "bad_body", http.StatusBadRequest, "reading the body: "+err.Error()
	switch {
	case errors.As(err, &mb):
		reason, code, msg = "too_large", http.StatusRequestEntityTooLarge, "body larger than max_frame"
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason, code, msg = "body_timeout", http.StatusRequestTimeout, fmt.Sprintf("the body did not arrive within %v", BodyTimeout)
		w.Header().Set("Connection", "close")
	}
	if metric != nil {
		metric(reason)
	}
	http.Error(w, msg, code)
	return nil, false
}
