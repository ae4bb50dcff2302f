package wsbridge

import (
	"context"
	"errors"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
)

// subscribe subscribes the session to a channel and queues the reply
// (id != 0) or the `subscribed` push (id 0), followed, with since, by the
// missed publications, then live ones: no gap and no duplicate, or
// recovered=false.
func (s *session) subscribe(id uint32, name string, since *heraldv1.StreamPosition) error {
	ns, err := s.b.ns.lookup(name)
	if err != nil {
		return err
	}
	s.subMu.Lock()
	dup := s.subIndex(name) >= 0
	s.subMu.Unlock()
	if dup {
		return reqErr(ErrAlreadySubscribed, "already subscribed to %q", name)
	}
	info, err := s.permitSubscribe(ns, name)
	if err != nil {
		return err
	}
	personal := s.user != "" && name == personalChannel(s.user)
	s.subMu.Lock()
	if s.subIndex(name) >= 0 {
		s.subMu.Unlock()
		return reqErr(ErrAlreadySubscribed, "already subscribed to %q", name)
	}
	n := len(s.subs)
	if s.user != "" && s.subIndex(personalChannel(s.user)) >= 0 {
		n-- // the personal channel does not count
	}
	if !personal && n >= s.b.cfg.MaxChannels {
		s.subMu.Unlock()
		return reqErr(ErrTooManyChannels, "too many channels: the limit is %d per connection", s.b.cfg.MaxChannels)
	}
	ch, sb, ready := s.b.hub.join(name, ns, s)
	s.subs = append(s.subs, ch)
	s.subMu.Unlock()

	undo := func() {
		s.subMu.Lock()
		if i := s.subIndex(name); i >= 0 && s.subs[i] == ch {
			s.removeSub(i)
		}
		s.subMu.Unlock()
		s.b.hub.leave(ch, s)
	}
	t := time.NewTimer(callTimeout)
	select {
	case <-ready:
		t.Stop()
	case <-t.C:
		undo()
		return reqErr(ErrTimeout, "the core did not answer in time; retry later")
	}
	if ch.err != nil {
		undo()
		if errors.Is(ch.err, context.Canceled) {
			return reqErr(ErrUnavailable, "subscription ended; retry later")
		}
		return fromStatus(ch.err)
	}
	if err := ch.subscribe(s, sb, id, since); err != nil {
		undo()
		return err
	}
	s.b.control.join(name, s, info)
	return nil
}

// subIndex returns the index of a channel in s.subs, or -1. s.subMu must
// be held.
func (s *session) subIndex(name string) int {
	for i, ch := range s.subs {
		if ch.name == name {
			return i
		}
	}
	return -1
}

// removeSub removes s.subs[i]. s.subMu must be held.
func (s *session) removeSub(i int) {
	last := len(s.subs) - 1
	s.subs[i] = s.subs[last]
	s.subs[last] = nil
	s.subs = s.subs[:last]
	if len(s.subs) == 0 {
		s.subs = nil
	}
}

// unsubscribe ends a subscription at the client's request.
func (s *session) unsubscribe(name string) (*heraldv1.ServerFrame, error) {
	if !s.dropSub(name) {
		return nil, reqErr(ErrNotSubscribed, "not subscribed to %q", name)
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribedFrame{Channel: name}}}, nil
}

// serverUnsubscribe ends a subscription at the core's command, with an
// `unsubscribed` push.
func (s *session) serverUnsubscribe(name, reason string) {
	if s.dropSub(name) {
		s.send(&heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Unsubscribed{Unsubscribed: &heraldv1.UnsubscribedFrame{Channel: name, Reason: reason}}})
	}
}

func (s *session) dropSub(name string) bool {
	var ch *channel
	s.subMu.Lock()
	if i := s.subIndex(name); i >= 0 {
		ch = s.subs[i]
		s.removeSub(i)
	}
	s.subMu.Unlock()
	if ch == nil {
		return false
	}
	s.b.hub.leave(ch, s)
	s.b.control.leave(name, s)
	return true
}

// publish forwards a browser's publication to the core, naming the
// session as its publisher.
func (s *session) publish(f *heraldv1.PublishFrame) (*heraldv1.ServerFrame, error) {
	ns, err := s.b.ns.lookup(f.Channel)
	if err != nil {
		return nil, err
	}
	if !ns.PublishHook && !canPublish(s.ident, ns) {
		return nil, reqErr(ErrPermissionDenied, "not allowed to publish to %q", f.Channel)
	}
	if err := s.b.lim.allowPublish(s); err != nil {
		return nil, err
	}
	req := &heraldv1.PublishRequest{Channel: f.Channel, IdempotencyKey: f.IdempotencyKey, Publisher: s.clientInfo()}
	switch p := f.Payload.(type) {
	case *heraldv1.PublishFrame_Json:
		// The exact text of `data` in a herald.json frame, or `json` in a
		// herald.proto frame; checked here, since a text that is not
		// UTF-8 cannot even be sent to the core in a string field.
		if err := payload.Check([]byte(p.Json)); err != nil {
			field := "data"
			if s.format == formatProto {
				field = "json"
			}
			return nil, reqErr(ErrBadRequest, "%s: %s", field, err.Error())
		}
		req.Payload = &heraldv1.PublishRequest_Json{Json: p.Json}
	case *heraldv1.PublishFrame_Data:
		req.Payload = &heraldv1.PublishRequest_Data{Data: p.Data}
	case *heraldv1.PublishFrame_Binary:
		req.Payload = &heraldv1.PublishRequest_Binary{Binary: p.Binary}
	default:
		return nil, reqErr(ErrBadRequest, "payload is required: set data (JSON) or binary")
	}
	if ns.PublishHook {
		if reply, err := s.publishHook(ns, req); reply != nil || err != nil {
			return reply, err
		}
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.core.Publish(ctx, req)
	if err != nil {
		return nil, err
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Publish{Publish: res}}, nil
}

// readable checks that the session may read a channel's history or
// presence: it must be allowed to subscribe and the namespace must allow it.
func (s *session) readable(channel string, history bool) error {
	ns, err := s.b.ns.lookup(channel)
	if err != nil {
		return err
	}
	if ns.SubscribeHook && !granted(s.ident, channel) {
		// The backend decides subscriptions here; reading needs one.
		s.subMu.Lock()
		subscribed := s.subIndex(channel) >= 0
		s.subMu.Unlock()
		if !subscribed {
			return reqErr(ErrPermissionDenied, "subscribe to %q first: its namespace's subscriptions are decided by the application", channel)
		}
	} else if !canSubscribe(s.ident, ns, channel) {
		return reqErr(ErrPermissionDenied, "not allowed to read %q", channel)
	}
	if history {
		if !ns.AllowHistory {
			return reqErr(ErrPermissionDenied, "history is not allowed for namespace %q", ns.Name)
		}
		if ns.HistorySize == 0 {
			return reqErr(ErrNotAvailable, "namespace %q keeps no history", ns.Name)
		}
		return nil
	}
	if !ns.AllowPresence {
		return reqErr(ErrPermissionDenied, "presence is not allowed for namespace %q", ns.Name)
	}
	if !ns.Presence {
		return reqErr(ErrNotAvailable, "presence is off for namespace %q", ns.Name)
	}
	return nil
}

func (s *session) history(f *heraldv1.HistoryFrame) (*heraldv1.ServerFrame, error) {
	if err := s.readable(f.Channel, true); err != nil {
		return nil, err
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	// JSON payloads as their exact text, as in live publications: in
	// `herald.json` frames they are written as `data` (encodeFrame).
	res, err := s.b.core.History(ctx, &heraldv1.HistoryRequest{Channel: f.Channel, Since: f.Since, Limit: f.Limit, Reverse: f.Reverse, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW})
	if err != nil {
		return nil, err
	}
	res.Publications = checkedPubs(s.b.log, res.Publications)
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_History{History: res}}, nil
}

func (s *session) presence(channel string) (*heraldv1.ServerFrame, error) {
	if err := s.readable(channel, false); err != nil {
		return nil, err
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.core.Presence(ctx, &heraldv1.PresenceRequest{Channel: channel})
	if err != nil {
		return nil, err
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Presence{Presence: res}}, nil
}

func (s *session) presenceStats(channel string) (*heraldv1.ServerFrame, error) {
	if err := s.readable(channel, false); err != nil {
		return nil, err
	}
	ctx, cancel := s.b.callContext()
	defer cancel()
	res, err := s.b.core.PresenceStats(ctx, &heraldv1.PresenceStatsRequest{Channel: channel})
	if err != nil {
		return nil, err
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_PresenceStats{PresenceStats: res}}, nil
}
