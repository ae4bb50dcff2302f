// Package client is the Go client of Herald for backend services: it
// publishes to channels and subscribes to them over Herald's gRPC API,
// and does what a backend otherwise writes by hand around the generated
// client:
//
//   - Publish gives every publication an idempotency key and retries it
//     when the node is unreachable, restarting or draining, with jittered
//     exponential backoff, without ever delivering it twice.
//   - PublishStream publishes at high rates over one stream with a bounded
//     window of unacknowledged publications (backpressure), a Result per
//     publication in order, and reconnects when the stream breaks, sending
//     again what was not acknowledged, with the same keys.
//   - Subscribe resumes by itself from its last position when its stream
//     ends, and says when the node could not replay what was missed
//     (Event.Unrecovered), so that the application reloads its state.
//   - Dial takes an API key, TLS (a CA file or the system's roots, a
//     client certificate for mTLS) and any grpc.DialOption, with a
//     keepalive the node accepts.
//
// Calls fail with *Error values carrying the gRPC status code: switch on
// CodeOf(err) (codes.InvalidArgument, codes.PermissionDenied, …), which
// also maps the sentinels ErrFull and ErrClosed and context errors.
//
// The package wraps the generated client (gen/herald/v1) and does not
// replace it: Client.Service returns it, on the same connection, for
// every call not wrapped here (History, Presence, Broadcast, Info, …).
//
// JSON payloads travel as text and arrive as published (numbers, strings
// and key order untouched): publish them in Message.JSON; a Subscription
// delivers them in Publication.raw_json unless SubscribeOptions.DecodeJSON
// asks for them decoded.
package client
