package client

import (
	"context"
	"errors"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is what the client's calls return when they fail: the gRPC status
// code (switch on it with CodeOf, or errors.As and Code) and the message,
// which is the node's (it never contains internal details: the node
// answers those as "internal error") or, for a call the client could not
// complete, the client's. It implements GRPCStatus, so status.FromError and
// status.Code work on it too.
type Error struct {
	st    *status.Status
	cause error // the caller's context error, when the call ended because of it
}

// Code returns the gRPC status code.
func (e *Error) Code() codes.Code { return e.st.Code() }

// Message returns the message, for people.
func (e *Error) Message() string { return e.st.Message() }

// Error returns "code: message", the code in lower snake case
// ("unavailable: node is draining; publish to another node").
func (e *Error) Error() string { return codeName(e.Code()) + ": " + e.Message() }

// GRPCStatus returns the status, with any details the node sent.
func (e *Error) GRPCStatus() *status.Status { return e.st }

// Unwrap returns the caller's context error (context.Canceled or
// context.DeadlineExceeded) when the call ended because of it, so that
// errors.Is(err, context.Canceled) works.
func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the gRPC status code of err: codes.OK for nil, the code
// of an *Error or of any error with a gRPC status, Canceled and
// DeadlineExceeded for context errors, ResourceExhausted for ErrFull,
// FailedPrecondition for ErrClosed, and Unknown for anything else.
func CodeOf(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrFull):
		return codes.ResourceExhausted
	case errors.Is(err, ErrClosed):
		return codes.FailedPrecondition
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code()
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	return codes.Unknown
}

var (
	// ErrFull is what Stream.TryPublish returns when the stream's window
	// of unacknowledged publications is full.
	ErrFull = errors.New("herald client: publish stream window is full")
	// ErrClosed is what a Stream's Publish returns once Close was called.
	ErrClosed = errors.New("herald client: publish stream is closed")
)

// newError returns an *Error with code and message.
func newError(code codes.Code, msg string) *Error { return &Error{st: status.New(code, msg)} }

// toError turns what a gRPC call returned into an *Error; ctx is the
// caller's, to tell its cancellation from the node's.
func toError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err) // Unknown unless a context error
	}
	e = &Error{st: st}
	if c := ctx.Err(); c != nil && (st.Code() == codes.Canceled || st.Code() == codes.DeadlineExceeded) {
		e.cause = c
	}
	return e
}

// codeName returns c in lower snake case ("invalid_argument"), the form
// of PublishStream's per-publication Error.code.
func codeName(c codes.Code) string {
	if c == codes.OK {
		return "ok"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// parseCode reads a lower snake case code name; unknown names are Unknown.
func parseCode(name string) codes.Code {
	if name == "canceled" { // grpc's table spells it CANCELLED
		return codes.Canceled
	}
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + strings.ToUpper(name) + `"`)); err != nil {
		return codes.Unknown
	}
	return c
}
