package engine

import (
	"errors"
	"fmt"
)

// ErrEpochMismatch is returned by History when Since belongs to another
// epoch than the channel's current one.
var ErrEpochMismatch = errors.New("position belongs to another epoch of the channel")

// ErrUnavailable wraps engine failures that a client may retry later. The
// core answers them with UNAVAILABLE and a fixed message (the error's own
// text is logged, never sent), unless the error is an *UnavailableError.
var ErrUnavailable = errors.New("engine unavailable")

// UnavailableError is an ErrUnavailable whose Msg reaches the client as it
// is: it tells the client something it must know to retry correctly.
type UnavailableError struct {
	Msg string
	Err error // the cause, for logs
}

func (e *UnavailableError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Is makes errors.Is(err, ErrUnavailable) hold.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

// MaybeStored returns the error of a publish that may have been stored,
// and delivered, although the engine cannot confirm it: the connection
// failed after the publication was sent, or (the Redis engine's
// wait_replicas) the replicas did not confirm it in time. reason says
// which, for the client. It wraps ErrUnavailable; its message tells the
// client to retry with the same idempotency key, so that a publication
// that was stored after all is not published twice.
func MaybeStored(reason string, err error) error {
	return &UnavailableError{Msg: reason + "; the publication may or may not have been stored: retry with the same idempotency key", Err: err}
}

// LimitError is an operation refused because it would go beyond a
// configured limit. Its message names the option and reaches the client
// as it is, with RESOURCE_EXHAUSTED; the core counts it by Option in
// herald_limit_refusals_total.
type LimitError struct {
	// Option is the configuration option, e.g. "limits.max_channels_per_node".
	Option string
	Msg    string
}

func (e *LimitError) Error() string { return e.Msg }

// Refuse returns a LimitError for option.
func Refuse(option, format string, args ...any) error {
	return &LimitError{Option: option, Msg: fmt.Sprintf(format, args...)}
}
