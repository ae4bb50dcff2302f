package hooks

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/herald-io/herald/channelname"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/payload"
)

// Refusal codes each hook may use (hooks.proto, Refusal.code), and the
// default for 0. Connect and Refresh refuse with close codes; Subscribe,
// Publish and RPC with error codes. 4100-4499 and 1000-1999 are the
// application's own: Herald never uses them.
const (
	DefaultConnectCode = 4001 // invalid_token: not authenticated
	DefaultRefreshCode = 4002 // token_expired: the session is over; reconnect
	DefaultRequestCode = 104  // permission_denied

	// MaxReason is the longest refusal reason kept, in bytes.
	MaxReason = 256
)

// closeCodeOK reports whether a Connect or Refresh refusal may use code.
func closeCodeOK(code uint32) bool {
	return code == 4001 || code == 4002 || code == 4003 || code >= 4100 && code <= 4499
}

// errorCodeOK reports whether a Subscribe, Publish or RPC refusal may use
// code.
func errorCodeOK(code uint32) bool {
	return code == 104 || code == 108 || code == 110 || code >= 1000 && code <= 1999
}

// checkRefusal applies the default code and bounds the reason, or says
// why the refusal is invalid.
func checkRefusal(r *hooksv1.Refusal, def uint32, closing bool) error {
	if r.Code == 0 {
		r.Code = def
	}
	if closing && !closeCodeOK(r.Code) {
		return fmt.Errorf("refusal code %d: a connect or refresh refusal uses 4001, 4002, 4003 or 4100-4499", r.Code)
	}
	if !closing && !errorCodeOK(r.Code) {
		return fmt.Errorf("refusal code %d: a subscribe, publish or rpc refusal uses 104, 108, 110 or 1000-1999", r.Code)
	}
	if len(r.Reason) > MaxReason {
		cut := MaxReason
		for cut > 0 && !utf8.RuneStart(r.Reason[cut]) {
			cut--
		}
		r.Reason = r.Reason[:cut]
	}
	return nil
}

var errNoDecision = errors.New("the answer sets no decision")

// checkJSON checks and compacts a JSON answer payload in place.
func checkJSON(text *string, maxPayload int) error {
	b, err := payload.Compact([]byte(*text))
	if err != nil {
		return fmt.Errorf("json: %w", err)
	}
	*text = string(b)
	return checkSize(len(b), maxPayload)
}

// checkSize bounds a payload of an answer (0: no bound).
func checkSize(n, maxPayload int) error {
	if maxPayload > 0 && n > maxPayload {
		return fmt.Errorf("a payload of %d bytes: the limit is %d (limits.max_payload)", n, maxPayload)
	}
	return nil
}

func checkConnect(r *hooksv1.ConnectResponse) error {
	switch d := r.Decision.(type) {
	case *hooksv1.ConnectResponse_Accept:
		a := d.Accept
		if a == nil {
			return errNoDecision
		}
		if a.User != "" {
			if err := channelname.Validate(channelname.Personal(a.User)); err != nil {
				return errors.New("accept.user must be 1-250 letters, digits or _-.:@=,/+")
			}
		}
		for _, p := range a.Channels {
			if err := channelname.ValidateGrant(p); err != nil {
				return fmt.Errorf("accept.channels: %w", err)
			}
		}
		for _, name := range a.Subscribe {
			if err := channelname.Validate(name); err != nil {
				return fmt.Errorf("accept.subscribe: %w", err)
			}
		}
		return nil
	case *hooksv1.ConnectResponse_Refuse:
		if d.Refuse == nil {
			return errNoDecision
		}
		return checkRefusal(d.Refuse, DefaultConnectCode, true)
	}
	return errNoDecision
}

func checkRefresh(r *hooksv1.RefreshResponse) error {
	switch d := r.Decision.(type) {
	case *hooksv1.RefreshResponse_Extend:
		if d.Extend == nil {
			return errNoDecision
		}
		return nil
	case *hooksv1.RefreshResponse_Refuse:
		if d.Refuse == nil {
			return errNoDecision
		}
		return checkRefusal(d.Refuse, DefaultRefreshCode, true)
	}
	return errNoDecision
}

func checkSubscribe(r *hooksv1.SubscribeResponse) error {
	switch d := r.Decision.(type) {
	case *hooksv1.SubscribeResponse_Allow:
		if d.Allow == nil {
			return errNoDecision
		}
		return nil
	case *hooksv1.SubscribeResponse_Refuse:
		if d.Refuse == nil {
			return errNoDecision
		}
		return checkRefusal(d.Refuse, DefaultRequestCode, false)
	}
	return errNoDecision
}

func checkPublish(r *hooksv1.PublishResponse, maxPayload int) error {
	switch d := r.Decision.(type) {
	case *hooksv1.PublishResponse_Allow:
		if d.Allow == nil {
			return errNoDecision
		}
		switch p := d.Allow.Payload.(type) {
		case *hooksv1.PublishAllow_Json:
			return checkJSON(&p.Json, maxPayload)
		case *hooksv1.PublishAllow_Binary:
			return checkSize(len(p.Binary), maxPayload)
		}
		return nil
	case *hooksv1.PublishResponse_Refuse:
		if d.Refuse == nil {
			return errNoDecision
		}
		return checkRefusal(d.Refuse, DefaultRequestCode, false)
	case *hooksv1.PublishResponse_Skip:
		if d.Skip == nil {
			return errNoDecision
		}
		if !utf8.ValidString(d.Skip.Epoch) || len(d.Skip.Epoch) > 64 {
			return errors.New("skip.epoch: at most 64 bytes of UTF-8")
		}
		return nil
	}
	return errNoDecision
}

func checkRPC(r *hooksv1.RPCResponse, maxPayload int) error {
	switch d := r.Decision.(type) {
	case *hooksv1.RPCResponse_Result:
		if d.Result == nil {
			return errNoDecision
		}
		switch p := d.Result.Payload.(type) {
		case *hooksv1.RPCResult_Json:
			return checkJSON(&p.Json, maxPayload)
		case *hooksv1.RPCResult_Binary:
			return checkSize(len(p.Binary), maxPayload)
		}
		return nil
	case *hooksv1.RPCResponse_Error:
		if d.Error == nil {
			return errNoDecision
		}
		return checkRefusal(d.Error, DefaultRequestCode, false)
	}
	return errNoDecision
}

// refused reports whether a checked answer is the backend's no.
func refused(m any) bool {
	switch r := m.(type) {
	case *hooksv1.ConnectResponse:
		return r.GetRefuse() != nil
	case *hooksv1.RefreshResponse:
		return r.GetRefuse() != nil
	case *hooksv1.SubscribeResponse:
		return r.GetRefuse() != nil
	case *hooksv1.PublishResponse:
		return r.GetRefuse() != nil
	case *hooksv1.RPCResponse:
		return r.GetError() != nil
	}
	return false
}
