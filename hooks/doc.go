// Package hooks calls the application's backend on behalf of a bridge:
// the herald.hooks.v1.HooksService that the application implements
// (proto/herald/hooks/v1/hooks.proto), over gRPC or as protobuf JSON over
// HTTP (POST per hook), with the same semantics either way.
//
// A Client bounds every call: a timeout (config.Hooks.Timeout), a bound on
// the calls in flight that refuses a call at once when full
// (MaxInFlight), and a circuit breaker that opens after CircuitFailures
// failed calls in a row, refuses every call at once while open
// (CircuitOpen), then lets one call probe the backend. A call either
// returns a checked answer (a decision is set, its codes are the ones the
// hook may use, its JSON is valid and compact, its user and channel names
// are valid) or an *Error whose Kind says why there is none; a refusal by
// the backend is an answer, not an error.
//
// The HTTP form's JSON mapping (payloads as `data`, their exact JSON text)
// is written once here, both ways: Client uses it to call, HTTPHandler to
// serve a HooksServiceServer over HTTP (what a Go backend, the example
// backend and the tests use).
//
// Metrics (herald_hook_*) are process-wide; docs/operations.md lists them.
package hooks
