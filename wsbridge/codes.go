package wsbridge

import (
	"errors"
	"fmt"
	"strings"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/hooks"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorCode is the numeric code of an ErrorFrame: 100-199 are the client's
// errors, 200-299 the server's. docs/protocol.md lists every one; a test
// checks that it does.
type ErrorCode uint32

// Error codes of ErrorFrame.
const (
	ErrBadFrame          ErrorCode = 100 // malformed frame: bad JSON/protobuf, unknown field or frame, missing id
	ErrNotConnected      ErrorCode = 101 // a request before connect
	ErrAlreadyConnected  ErrorCode = 102 // connect sent twice
	ErrInvalidToken      ErrorCode = 103 // refresh with a bad, expired or foreign token
	ErrPermissionDenied  ErrorCode = 104 // the token or namespace does not allow it
	ErrBadChannel        ErrorCode = 105 // invalid channel name or unknown namespace
	ErrAlreadySubscribed ErrorCode = 106
	ErrNotSubscribed     ErrorCode = 107
	ErrRateLimited       ErrorCode = 108 // too many requests; temporary
	ErrTooManyChannels   ErrorCode = 109 // max_channels reached
	ErrBadRequest        ErrorCode = 110 // a valid frame with invalid arguments (payload, limit, position)
	ErrNotAvailable      ErrorCode = 111 // the feature is off for the namespace (history, presence)
	ErrInternal          ErrorCode = 200 // unexpected server error
	ErrUnavailable       ErrorCode = 201 // the core cannot be reached or refuses the bridge; temporary
	ErrTimeout           ErrorCode = 202 // the core did not answer in time; temporary
	ErrBackendDown       ErrorCode = 203 // the application's backend (a hook) failed; temporary
	ErrBackendTimeout    ErrorCode = 204 // the application's backend (a hook) did not answer in time; temporary
)

// Application codes: a hook's refusal may use error codes 1000-1999 and
// close codes 4100-4499 (hooks.proto, Refusal); Herald never does.
const (
	minAppError, maxAppError = 1000, 1999
	minAppClose, maxAppClose = 4100, 4499
)

// errorCodes describes every error code, for docs and tests.
var errorCodes = []struct {
	Code      ErrorCode
	Name      string
	Temporary bool
	Meaning   string
}{
	{ErrBadFrame, "bad_frame", false, "the frame could not be decoded (bad JSON or protobuf, wrong type, unknown field, no frame body, missing id)"},
	{ErrNotConnected, "not_connected", false, "a request other than connect before the connection is authenticated"},
	{ErrAlreadyConnected, "already_connected", false, "connect sent on an authenticated connection"},
	{ErrInvalidToken, "invalid_token", false, "refresh with a token that is invalid, expired or for another user"},
	{ErrPermissionDenied, "permission_denied", false, "the token's claims and the namespace's options do not allow the request"},
	{ErrBadChannel, "bad_channel", false, "invalid channel name or unknown namespace"},
	{ErrAlreadySubscribed, "already_subscribed", false, "subscribe to a channel the connection is subscribed to"},
	{ErrNotSubscribed, "not_subscribed", false, "unsubscribe from a channel the connection is not subscribed to"},
	{ErrRateLimited, "rate_limited", true, "more requests than request_rate (burst 4x) allows; repeated abuse closes with 4008"},
	{ErrTooManyChannels, "too_many_channels", false, "the connection has max_channels subscriptions"},
	{ErrBadRequest, "bad_request", false, "invalid arguments: payload, history limit, position, idempotency key"},
	{ErrNotAvailable, "not_available", false, "history or presence is off for the namespace"},
	{ErrInternal, "internal", false, "unexpected server error"},
	{ErrUnavailable, "unavailable", true, "the core cannot be reached, or refuses the bridge's own credentials (the operator is told in the bridge's log and /readyz); retry later"},
	{ErrTimeout, "timeout", true, "the core did not answer in time; retry later"},
	{ErrBackendDown, "backend_unavailable", true, "the application's backend did not answer a hook (unreachable, an error, an invalid answer), its circuit is open after failures, or too many hook calls are in flight (`hooks.max_in_flight`); retry later"},
	{ErrBackendTimeout, "backend_timeout", true, "the application's backend did not answer a hook within `hooks.timeout`; retry later"},
}

// CloseCode is a WebSocket close code sent by the bridge.
type CloseCode int

// Close codes. Every close by the bridge is preceded by a DisconnectFrame
// push with the same code; on SSE and HTTP streaming that push is the
// stream's last frame.
const (
	CloseNormal          CloseCode = 1000
	CloseProtocolError   CloseCode = 1002 // the client broke RFC 6455 (WebSocket only)
	CloseUnsupportedData CloseCode = 1003 // a binary message on herald.json, a text message on herald.proto
	CloseInvalidPayload  CloseCode = 1007 // a text message that is not UTF-8
	CloseMessageTooBig   CloseCode = 1009 // a message larger than max_frame
	CloseBadFrame        CloseCode = 4000 // protocol violation: first frame not connect, undecodable frames repeatedly
	CloseInvalidToken    CloseCode = 4001 // missing, malformed or unverifiable token; connect timeout
	CloseTokenExpired    CloseCode = 4002 // token expired (at connect, or later without refresh)
	CloseForbidden       CloseCode = 4003 // refresh for another user
	CloseSlowConsumer    CloseCode = 4004 // the outbound queue overflowed
	CloseDisconnected    CloseCode = 4005 // the backend called Disconnect for the user
	CloseShutdown        CloseCode = 4006 // the bridge is shutting down; reconnect after reconnect_delay_ms
	CloseTooManyConns    CloseCode = 4007 // max_conns_per_user reached
	CloseRateLimited     CloseCode = 4008 // request rate abused
	CloseNoPong          CloseCode = 4009 // no pong within ping_interval
	CloseBackendDown     CloseCode = 4010 // the connect or refresh hook failed; reconnect later
)

// closeCodes describes every close code, for docs and tests.
var closeCodes = []struct {
	Code      CloseCode
	Name      string
	Reconnect bool
	Meaning   string
}{
	{CloseNormal, "normal", false, "the client closed, or the bridge acknowledges its close"},
	{CloseProtocolError, "protocol_error", false, "the client broke the WebSocket protocol (RFC 6455): an unmasked frame, a bad opcode or close code..."},
	{CloseUnsupportedData, "unsupported_data", false, "a binary message on herald.json, or a text message on herald.proto"},
	{CloseInvalidPayload, "invalid_payload", false, "a text message (herald.json) that is not valid UTF-8"},
	{CloseMessageTooBig, "message_too_big", true, "a message larger than max_frame (a WebSocket message, a command POST or the body of an HTTP stream's connect)"},
	{CloseBadFrame, "bad_frame", false, "protocol violation: first frame not connect, or too many undecodable frames"},
	{CloseInvalidToken, "invalid_token", false, "missing (where anonymous is off), malformed or unverifiable token, or no connect within 10s"},
	{CloseTokenExpired, "token_expired", true, "the token expired (at connect, or later without refresh): reconnect with a fresh token"},
	{CloseForbidden, "forbidden", false, "refresh with a token of another user"},
	{CloseSlowConsumer, "slow_consumer", true, "the connection's outbound queue overflowed (queue_frames / queue_bytes): reconnect and recover"},
	{CloseDisconnected, "disconnected", false, "the backend disconnected the user; DisconnectFrame.reconnect says whether to retry"},
	{CloseShutdown, "shutdown", true, "the bridge is shutting down: reconnect after reconnect_delay_ms"},
	{CloseTooManyConns, "too_many_connections", true, "the user has max_conns_per_user connections on this bridge"},
	{CloseRateLimited, "rate_limited", true, "requests kept coming after rate-limit errors"},
	{CloseNoPong, "no_pong", true, "no pong (or any message) within ping_interval"},
	{CloseBackendDown, "backend_unavailable", true, "the application's backend did not answer the connect or refresh hook (down, slow past `hooks.timeout`, an invalid answer, its circuit open, or `hooks.max_in_flight` calls in flight): reconnect later"},
}

// requestError is a failed request: its code and message reach the client
// as an ErrorFrame; the connection stays open.
type requestError struct {
	code ErrorCode
	msg  string
	// temp, with tempSet, overrides the code's own temporary flag: an
	// application code's comes from the hook's refusal.
	temp, tempSet bool
}

// temporary reports whether retrying the request later may succeed.
func (e *requestError) temporary() bool {
	if e.tempSet {
		return e.temp
	}
	return e.code.temporary()
}

func (e *requestError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.msg) }

func reqErr(code ErrorCode, format string, args ...any) *requestError {
	return &requestError{code: code, msg: validUTF8(fmt.Sprintf(format, args...))}
}

// validUTF8 replaces invalid UTF-8 in a message for the client: decoder
// errors quote the client's bytes, and a frame or close reason that is not
// UTF-8 cannot be encoded (protobuf strings, JSON) or is refused by the
// client's WebSocket (close frames).
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

func (c ErrorCode) temporary() bool {
	for _, e := range errorCodes {
		if e.Code == c {
			return e.Temporary
		}
	}
	return false
}

// closeError asks for the connection to be closed with code and reason.
type closeError struct {
	code      CloseCode
	reason    string
	reconnect bool
}

func (e *closeError) Error() string { return fmt.Sprintf("close %d: %s", e.code, e.reason) }

// fromStatus maps an error of a core call to what the client sees. Status
// messages for client errors are the core's own, written for clients;
// internal errors reach the client only as "internal error". The core's
// UNAUTHENTICATED and PERMISSION_DENIED refuse the bridge's own API key
// (browser permissions are the bridge's to check): the browser gets 201,
// unavailable, and the operator the bridge's log (coreaccess.go).
func fromStatus(err error) *requestError {
	var re *requestError
	if errors.As(err, &re) {
		return re
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		return reqErr(ErrBadRequest, "%s", st.Message())
	case codes.FailedPrecondition:
		if strings.Contains(st.Message(), "limits.max_grpc_message") {
			// The core's refusal of an answer over its message limit
			// (a presence list of tens of thousands): the same request
			// fails every time.
			return reqErr(ErrInternal, "the answer is larger than limits.max_grpc_message allows; raise it on the core (and on a split bridge)")
		}
		return reqErr(ErrNotAvailable, "%s", st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return reqErr(ErrUnavailable, "service unavailable; retry later")
	case codes.ResourceExhausted:
		if strings.Contains(st.Message(), "message larger than max") {
			// grpc-go's refusal of a message over limits.max_grpc_message,
			// the core's answer sent or received (a split bridge's
			// presence list of tens of thousands): the same request fails
			// every time, so it is not "temporary" (108 made clients retry).
			return reqErr(ErrInternal, "the answer is larger than limits.max_grpc_message allows between the bridge and its core; raise it on both")
		}
		return reqErr(ErrRateLimited, "%s", st.Message())
	case codes.Unavailable, codes.Aborted, codes.Canceled:
		return reqErr(ErrUnavailable, "core unavailable; retry later")
	case codes.DeadlineExceeded:
		return reqErr(ErrTimeout, "core did not answer in time; retry later")
	default:
		return reqErr(ErrInternal, "internal error")
	}
}

// fromHook maps a hook call that has no answer to what the client sees:
// 204 past the timeout, 203 otherwise. The cause, which may quote the
// backend, stays in the bridge's log (the hooks client logs it).
func fromHook(err error) *requestError {
	if hooks.KindOf(err) == hooks.Timeout {
		return reqErr(ErrBackendTimeout, "the application's backend did not answer in time; retry later")
	}
	return reqErr(ErrBackendDown, "the application's backend is unavailable; retry later")
}

// fromRefusal is a hook's refusal of a request as the client sees it: the
// backend's code (checked by the hooks client) and reason.
func fromRefusal(r *hooksv1.Refusal, fallback string) *requestError {
	msg := r.GetReason()
	if msg == "" {
		msg = fallback
	}
	e := reqErr(ErrorCode(r.GetCode()), "%s", msg)
	e.temp, e.tempSet = r.GetTemporary(), true
	return e
}
