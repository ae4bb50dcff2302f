package hooks

import (
	"errors"
	"fmt"
)

// Kind says why a hook call has no answer.
type Kind uint8

// Kinds of Error.
const (
	// Unavailable: the backend could not be reached, or answered an
	// error (a gRPC status, an HTTP status other than 200).
	Unavailable Kind = iota + 1
	// Timeout: no answer within config.Hooks.Timeout.
	Timeout
	// BadAnswer: the answer could not be decoded, set no decision, or
	// broke the hook's rules (a code it may not use, invalid JSON, an
	// invalid user or channel name).
	BadAnswer
	// Overloaded: MaxInFlight calls were in flight; the call was not made.
	Overloaded
	// CircuitOpen: the circuit is open after failures in a row; the call
	// was not made.
	CircuitOpen
)

var kindNames = [...]string{Unavailable: "unavailable", Timeout: "timeout", BadAnswer: "bad_answer", Overloaded: "overloaded", CircuitOpen: "circuit_open"}

// String names the kind as the herald_hook_errors_total metric's code
// label does.
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", k)
}

var kinds = []Kind{Unavailable, Timeout, BadAnswer, Overloaded, CircuitOpen}

// Error is a hook call without an answer. Its message is for logs (it may
// quote the backend); browsers are told only its Kind (wsbridge maps it to
// an error or close code).
type Error struct {
	Kind Kind
	Hook string // connect, refresh, subscribe, publish, rpc
	Err  error  // the cause
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s hook: %s: %v", e.Hook, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of err if it is (or wraps) an *Error, else 0.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}
