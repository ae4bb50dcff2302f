package wsbridge

import (
	"context"
	"errors"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/payload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func (b *Bridge) callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, callTimeout)
}

// subscribe subscribes the connection to a channel and queues the reply
// (id != 0) or the `subscribed` push (id 0), followed, with since, by the
// missed publications, then live ones: no gap and no duplicate, or
// recovered=false.
func (c *conn) subscribe(id uint32, name string, since *heraldv1.StreamPosition) error {
	ns, err := c.b.ns.lookup(name)
	if err != nil {
		return err
	}
	if !canSubscribe(c.ident, ns, name) {
		return reqErr(ErrPermissionDenied, "not allowed to subscribe to %q", name)
	}
	personal := c.user != "" && name == "user:"+c.user
	c.subMu.Lock()
	if c.subIndex(name) >= 0 {
		c.subMu.Unlock()
		return reqErr(ErrAlreadySubscribed, "already subscribed to %q", name)
	}
	n := len(c.subs)
	if c.user != "" && c.subIndex("user:"+c.user) >= 0 {
		n-- // the personal channel does not count
	}
	if !personal && n >= c.b.cfg.MaxChannels {
		c.subMu.Unlock()
		return reqErr(ErrTooManyChannels, "too many channels: the limit is %d per connection", c.b.cfg.MaxChannels)
	}
	ch, s, ready := c.b.hub.join(name, ns, c)
	c.subs = append(c.subs, ch)
	c.subMu.Unlock()

	undo := func() {
		c.subMu.Lock()
		if i := c.subIndex(name); i >= 0 && c.subs[i] == ch {
			c.removeSub(i)
		}
		c.subMu.Unlock()
		c.b.hub.leave(ch, c)
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
	if since == nil || ns.HistorySize == 0 {
		ch.goLive(c, s, id, nil, false)
	} else if err := c.catchUp(ch, s, id, since); err != nil {
		undo()
		return err
	}
	c.b.session.join(name, c)
	return nil
}

// goLive makes s live and queues the reply, then frames (replayed
// publications), under the channel's lock so that no live publication can
// come between them.
func (ch *channel) goLive(c *conn, s *sub, id uint32, frames [][]byte, recovered bool) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	s.live, s.pending = true, nil
	c.send(subscribedFrame(id, ch.name, ch.epoch, ch.last, recovered, ch.ns.HistorySize > 0))
	for _, f := range frames {
		c.enqueue(f)
	}
}

// catchUp resumes a subscription from since: it reads the missed
// publications from the core's History while live ones wait in s.pending,
// then merges both by offset.
func (c *conn) catchUp(ch *channel, s *sub, id uint32, since *heraldv1.StreamPosition) error {
	ch.mu.Lock()
	epoch, last, gen := ch.epoch, ch.last, ch.gen
	ch.mu.Unlock()
	if since.Epoch != epoch || since.Offset > last {
		ch.goLive(c, s, id, nil, false)
		return nil
	}
	var replay []*heraldv1.Publication
	from := since.Offset
	page := uint32(min(1000, max(c.b.limits.MaxHistoryPage, 1)))
	format := heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW
	for from < last {
		ctx, cancel := c.b.callContext()
		res, err := c.b.core.History(ctx, &heraldv1.HistoryRequest{
			Channel: ch.name, Since: &heraldv1.StreamPosition{Offset: from, Epoch: epoch}, Limit: page, PayloadFormat: format,
		})
		cancel()
		if status.Code(err) == codes.FailedPrecondition {
			ch.goLive(c, s, id, nil, false) // epoch changed meanwhile
			return nil
		}
		if err != nil {
			return err
		}
		pubs := res.Publications
		if len(pubs) == 0 || pubs[0].Offset != from+1 || res.GetPosition().GetEpoch() != epoch {
			ch.goLive(c, s, id, nil, false) // the gap is older than history
			return nil
		}
		replay = append(replay, pubs...)
		from = pubs[len(pubs)-1].Offset
	}

	ch.mu.Lock()
	defer ch.mu.Unlock()
	ok := ch.gen == gen && ch.epoch == epoch && !s.overflow && ch.subOf(c) == s
	next := since.Offset
	var frames [][]byte
	for _, p := range replay {
		if !ok {
			break
		}
		if p.Offset <= next {
			continue
		}
		if p.Offset != next+1 {
			ok = false
			break
		}
		frames = append(frames, (&encodedPub{pub: p, log: c.b.log}).bytes(c.format))
		next = p.Offset
	}
	for _, ep := range s.pending {
		if !ok {
			break
		}
		if ep.pub.Offset <= next {
			continue
		}
		if ep.pub.Offset != next+1 {
			ok = false
			break
		}
		frames = append(frames, ep.bytes(c.format))
		next = ep.pub.Offset
	}
	// History may run ahead of what the upstream stream has delivered
	// here: those publications are skipped when they arrive live.
	pos := ch.last
	switch {
	case ok && next > ch.last:
		s.skip, pos = next, next
	case ok && next < ch.last:
		ok = false
	}
	s.live, s.pending = true, nil
	c.send(subscribedFrame(id, ch.name, ch.epoch, pos, ok, true))
	if ok {
		for _, f := range frames {
			c.enqueue(f)
		}
	}
	return nil
}

// subIndex returns the index of a channel in c.subs, or -1. c.subMu must
// be held.
func (c *conn) subIndex(name string) int {
	for i, ch := range c.subs {
		if ch.name == name {
			return i
		}
	}
	return -1
}

// removeSub removes c.subs[i]. c.subMu must be held.
func (c *conn) removeSub(i int) {
	last := len(c.subs) - 1
	c.subs[i] = c.subs[last]
	c.subs[last] = nil
	c.subs = c.subs[:last]
	if len(c.subs) == 0 {
		c.subs = nil
	}
}

// unsubscribe ends a subscription at the client's request.
func (c *conn) unsubscribe(name string) (*heraldv1.ServerFrame, error) {
	if !c.dropSub(name) {
		return nil, reqErr(ErrNotSubscribed, "not subscribed to %q", name)
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Unsubscribe{Unsubscribe: &heraldv1.UnsubscribedFrame{Channel: name}}}, nil
}

// serverUnsubscribe ends a subscription at the core's command, with an
// `unsubscribed` push.
func (c *conn) serverUnsubscribe(name, reason string) {
	if c.dropSub(name) {
		c.send(&heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Unsubscribed{Unsubscribed: &heraldv1.UnsubscribedFrame{Channel: name, Reason: reason}}})
	}
}

func (c *conn) dropSub(name string) bool {
	var ch *channel
	c.subMu.Lock()
	if i := c.subIndex(name); i >= 0 {
		ch = c.subs[i]
		c.removeSub(i)
	}
	c.subMu.Unlock()
	if ch == nil {
		return false
	}
	c.b.hub.leave(ch, c)
	c.b.session.leave(name, c)
	return true
}

// publish forwards a browser's publication to the core. The core's
// PublishRequest has no publisher field, so the publication reaches
// subscribers without `publisher`.
func (c *conn) publish(f *heraldv1.PublishFrame) (*heraldv1.ServerFrame, error) {
	ns, err := c.b.ns.lookup(f.Channel)
	if err != nil {
		return nil, err
	}
	if !canPublish(c.ident, ns) {
		return nil, reqErr(ErrPermissionDenied, "not allowed to publish to %q", f.Channel)
	}
	if err := c.b.lim.allowPublish(c); err != nil {
		return nil, err
	}
	req := &heraldv1.PublishRequest{Channel: f.Channel, IdempotencyKey: f.IdempotencyKey, Publisher: c.clientInfo()}
	switch p := f.Payload.(type) {
	case *heraldv1.PublishFrame_Json:
		// The exact text of `data` in a herald.json frame, or `json` in a
		// herald.proto frame; checked here, since a text that is not
		// UTF-8 cannot even be sent to the core in a string field.
		if err := payload.Check([]byte(p.Json)); err != nil {
			field := "data"
			if c.format == formatProto {
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
	ctx, cancel := c.b.callContext()
	defer cancel()
	res, err := c.b.core.Publish(ctx, req)
	if err != nil {
		return nil, err
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Publish{Publish: res}}, nil
}

// readable checks that the connection may read a channel's history or
// presence: it must be allowed to subscribe and the namespace must allow it.
func (c *conn) readable(channel string, history bool) error {
	ns, err := c.b.ns.lookup(channel)
	if err != nil {
		return err
	}
	if !canSubscribe(c.ident, ns, channel) {
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

func (c *conn) history(f *heraldv1.HistoryFrame) (*heraldv1.ServerFrame, error) {
	if err := c.readable(f.Channel, true); err != nil {
		return nil, err
	}
	ctx, cancel := c.b.callContext()
	defer cancel()
	// JSON payloads as their exact text, as in live publications: in
	// `herald.json` frames they are written as `data` (encodeFrame).
	res, err := c.b.core.History(ctx, &heraldv1.HistoryRequest{Channel: f.Channel, Since: f.Since, Limit: f.Limit, Reverse: f.Reverse, PayloadFormat: heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW})
	if err != nil {
		return nil, err
	}
	res.Publications = checkedPubs(c.b.log, res.Publications)
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_History{History: res}}, nil
}

func (c *conn) presence(channel string) (*heraldv1.ServerFrame, error) {
	if err := c.readable(channel, false); err != nil {
		return nil, err
	}
	ctx, cancel := c.b.callContext()
	defer cancel()
	res, err := c.b.core.Presence(ctx, &heraldv1.PresenceRequest{Channel: channel})
	if err != nil {
		return nil, err
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_Presence{Presence: res}}, nil
}

func (c *conn) presenceStats(channel string) (*heraldv1.ServerFrame, error) {
	if err := c.readable(channel, false); err != nil {
		return nil, err
	}
	ctx, cancel := c.b.callContext()
	defer cancel()
	res, err := c.b.core.PresenceStats(ctx, &heraldv1.PresenceStatsRequest{Channel: channel})
	if err != nil {
		return nil, err
	}
	return &heraldv1.ServerFrame{Body: &heraldv1.ServerFrame_PresenceStats{PresenceStats: res}}, nil
}
