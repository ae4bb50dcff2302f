package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/buildinfo"
	"github.com/herald-io/herald/internal/recovery"
	"github.com/herald-io/herald/payload"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// Version is Herald's version as Info and the browser's ConnectedFrame
// report it: the module version, or "devel-<revision>[-dirty]" for a
// build from a source tree (see internal/buildinfo).
var Version = buildinfo.Version()

// Limits on what a publisher controls, beyond the configured payload size.
const (
	maxIdempotencyKey = 128
	maxTags           = 32
	maxTagLen         = 256
	maxBroadcast      = 1000
	defaultPage       = 100
)

// Server implements herald.v1.HeraldService on an Engine.
type Server struct {
	heraldv1.UnimplementedHeraldServiceServer

	cfg    config.Config
	ns     config.Namespaces
	engine Engine
	hub    *hub
	log    *slog.Logger
	node   string
	start  time.Time

	mu       sync.Mutex
	sessions map[*bridgeSession]struct{}
	nsList   *heraldv1.NamespaceList // the first message of every BridgeSession
	clients  atomic.Int64            // presence entries held by attached bridges

	closing atomic.Bool
	muxes   muxSet // open SubscribeMany streams

	publishDuration     prometheus.Observer
	publishEngineErrors prometheus.Counter
	published           map[string]prometheus.Counter // herald_publications_total by configured namespace
}

// New returns a core server on engine. cfg must have passed Validate.
func New(cfg config.Config, engine Engine, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	published := make(map[string]prometheus.Counter, len(cfg.Namespaces))
	for _, ns := range cfg.Namespaces {
		// Looked up once: WithLabelValues hashes its labels on every call,
		// ~1 µs of every publish in profiles of the notification bench.
		published[ns.Name] = metricPublications.WithLabelValues(ns.Name)
	}
	ns := cfg.NamespaceIndex()
	return &Server{
		cfg:      cfg,
		ns:       ns,
		nsList:   ns.NamespaceList(),
		engine:   engine,
		hub:      newHub(engine, cfg.Limits.SubscriberQueue, cfg.Limits.SubscriberQueueBytes),
		log:      log,
		node:     newNodeID(),
		start:    time.Now(),
		sessions: make(map[*bridgeSession]struct{}),

		publishDuration:     metricEngineDuration.WithLabelValues(engine.Name(), "publish"),
		publishEngineErrors: metricEngineErrors.WithLabelValues(engine.Name(), "publish"),
		published:           published,
	}
}

func newNodeID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Start connects the server to its engine's deliveries.
func (s *Server) Start(ctx context.Context) error { return s.engine.Start(ctx, s) }

// Node is the node's unique id.
func (s *Server) Node() string { return s.node }

// Engine returns the server's engine.
func (s *Server) Engine() Engine { return s.engine }

var errShutdown = status.Error(codes.Unavailable, "node shutting down; resubscribe from the last position you received")

// Close ends every open Subscribe and SubscribeMany stream and bridge
// session with UNAVAILABLE, so that clients resume elsewhere. It is
// idempotent; call it before grpc.Server.GracefulStop, which waits for
// streams to end.
func (s *Server) Close() {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	s.muxes.endAll(errShutdown)
	s.hub.stopAll(errShutdown)
	s.mu.Lock()
	for b := range s.sessions {
		b.stop(status.Error(codes.Unavailable, "node shutting down"))
	}
	s.mu.Unlock()
}

// HandlePublication implements Handler.
func (s *Server) HandlePublication(pub *heraldv1.Publication) { s.hub.HandlePublication(pub) }

// HandlePresence implements Handler.
func (s *Server) HandlePresence(ev *heraldv1.PresenceEvent, join bool) {
	s.hub.HandlePresence(ev, join)
}

// HandleReset implements Handler.
func (s *Server) HandleReset(channel string) { s.hub.HandleReset(channel) }

// HandleCommand implements Handler: it passes the command to every
// attached bridge.
func (s *Server) HandleCommand(cmd *heraldv1.BridgeSessionResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for b := range s.sessions {
		select {
		case b.out <- cmd:
		default:
			b.stop(status.Error(codes.ResourceExhausted, "bridge too slow reading commands"))
		}
	}
}

// validPayload is a validated payload: compact JSON text or binary.
type validPayload struct {
	json   []byte
	binary []byte
}

// rawPayload is the payload oneof of a PublishRequest or BroadcastRequest:
// which field is set and what it holds.
type rawPayload struct {
	field string          // "data", "json", "raw_json" or "binary"; "" when none is set
	data  *structpb.Value // data
	bytes []byte          // json, raw_json or binary
}

func publishPayload(req *heraldv1.PublishRequest) rawPayload {
	switch p := req.Payload.(type) {
	case *heraldv1.PublishRequest_Data:
		return rawPayload{field: "data", data: p.Data}
	case *heraldv1.PublishRequest_Json:
		return rawPayload{field: "json", bytes: []byte(p.Json)}
	case *heraldv1.PublishRequest_RawJson:
		return rawPayload{field: "raw_json", bytes: p.RawJson}
	case *heraldv1.PublishRequest_Binary:
		return rawPayload{field: "binary", bytes: p.Binary}
	}
	return rawPayload{}
}

func broadcastPayload(req *heraldv1.BroadcastRequest) rawPayload {
	switch p := req.Payload.(type) {
	case *heraldv1.BroadcastRequest_Data:
		return rawPayload{field: "data", data: p.Data}
	case *heraldv1.BroadcastRequest_Json:
		return rawPayload{field: "json", bytes: []byte(p.Json)}
	case *heraldv1.BroadcastRequest_RawJson:
		return rawPayload{field: "raw_json", bytes: p.RawJson}
	case *heraldv1.BroadcastRequest_Binary:
		return rawPayload{field: "binary", bytes: p.Binary}
	}
	return rawPayload{}
}

// toPayload validates the payload of a publish: the one door of every
// publish path (Publish, PublishStream, Broadcast; the REST gateway and the
// bridge call these). A JSON payload, in whichever field it came, becomes
// compact JSON text once, here, or is refused: it must be valid JSON in
// UTF-8, since every reader gets it as text (a WebSocket text frame cannot
// carry anything else). Subscribers get the same bytes.
func (s *Server) toPayload(in rawPayload) (validPayload, error) {
	var p validPayload
	var err error
	switch in.field {
	case "":
		return p, errors.New("payload is required: set json (JSON text), data (a google.protobuf.Value), raw_json or binary")
	case "data":
		p.json, err = payload.FromValue(in.data)
	case "binary":
		p.binary = in.bytes
		if p.binary == nil {
			p.binary = []byte{}
		}
	default:
		p.json, err = payload.Compact(in.bytes)
	}
	if err != nil {
		return p, fmt.Errorf("%s: %w", in.field, err)
	}
	if n := len(p.json) + len(p.binary); n > s.cfg.Limits.MaxPayload {
		return p, fmt.Errorf("payload is %d bytes; the limit is %d", n, s.cfg.Limits.MaxPayload)
	}
	return p, nil
}

// jsonPublication and binaryPublication are a publication and its
// payload's oneof member made in one allocation instead of two (every
// publication is one of them). Payload is set once, never replaced.
type jsonPublication struct {
	pub heraldv1.Publication
	raw heraldv1.Publication_RawJson
}

type binaryPublication struct {
	pub heraldv1.Publication
	bin heraldv1.Publication_Binary
}

// publication returns a new publication carrying p.
func (p validPayload) publication() *heraldv1.Publication {
	if p.json != nil {
		jp := &jsonPublication{raw: heraldv1.Publication_RawJson{RawJson: p.json}}
		jp.pub.Payload = &jp.raw
		return &jp.pub
	}
	bp := &binaryPublication{bin: heraldv1.Publication_Binary{Binary: p.binary}}
	bp.pub.Payload = &bp.bin
	return &bp.pub
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func validateMeta(key string, tags map[string]string) error {
	if len(key) > maxIdempotencyKey {
		return fmt.Errorf("idempotency_key is %d bytes; the limit is %d", len(key), maxIdempotencyKey)
	}
	if len(tags) > maxTags {
		return fmt.Errorf("%d tags; the limit is %d", len(tags), maxTags)
	}
	for k, v := range tags {
		if len(k) > maxTagLen || len(v) > maxTagLen {
			return fmt.Errorf("tag %q: keys and values are limited to %d bytes", truncate(k, 32), maxTagLen)
		}
	}
	return nil
}

// prepared is a validated, authorized publication ready for the engine.
type prepared struct {
	pub  *heraldv1.Publication
	opts PublishOptions
	ns   string
}

// prepare checks a publication and builds it; with finish, it is the one
// path of every publication, from any API.
func (s *Server) prepare(ctx context.Context, channel string, p validPayload, key string, tags map[string]string, from *heraldv1.ClientInfo) (prepared, error) {
	ns, err := s.ns.Lookup(channel)
	if err != nil {
		return prepared{}, invalid(err)
	}
	if err := authorize(ctx, permPublish, channel); err != nil {
		return prepared{}, err
	}
	pub := p.publication()
	pub.Channel, pub.Tags, pub.Publisher, pub.TimeUnixMs = channel, tags, from, time.Now().UnixMilli()
	return prepared{pub: pub, ns: ns.Name, opts: PublishOptions{
		HistorySize:    ns.HistorySize,
		HistoryTTL:     ns.HistoryTTL.D(),
		IdempotencyKey: key,
		DedupeWindow:   s.cfg.Limits.DedupeWindow.D(),
	}}, nil
}

// finish turns the engine's answer into the client's, counting it.
func (s *Server) finish(pr prepared, res PublishResult, err error) (*heraldv1.PublishResponse, error) {
	if err != nil {
		s.publishEngineErrors.Inc()
		return nil, toStatus(s.log, err)
	}
	if res.Duplicate {
		metricPublishDuplicates.Inc()
	} else {
		if c := s.published[pr.ns]; c != nil {
			c.Inc()
		} else {
			metricPublications.WithLabelValues(pr.ns).Inc()
		}
	}
	return &heraldv1.PublishResponse{Position: res.Position, Duplicate: res.Duplicate}, nil
}

func (s *Server) publish(ctx context.Context, channel string, p validPayload, key string, tags map[string]string, from *heraldv1.ClientInfo) (*heraldv1.PublishResponse, error) {
	pr, err := s.prepare(ctx, channel, p, key, tags, from)
	if err != nil {
		return nil, err
	}
	return s.commit(ctx, pr)
}

// commit hands one prepared publication to the engine.
func (s *Server) commit(ctx context.Context, pr prepared) (*heraldv1.PublishResponse, error) {
	start := time.Now()
	res, err := s.engine.Publish(ctx, pr.pub, pr.opts)
	s.publishDuration.Observe(time.Since(start).Seconds())
	return s.finish(pr, res, err)
}

// prepareRequest validates a PublishRequest's payload and metadata, then
// prepares it.
func (s *Server) prepareRequest(ctx context.Context, req *heraldv1.PublishRequest) (prepared, error) {
	if req == nil {
		return prepared{}, status.Error(codes.InvalidArgument, "publish is required")
	}
	if err := validateMeta(req.IdempotencyKey, req.Tags); err != nil {
		return prepared{}, invalid(err)
	}
	p, err := s.toPayload(publishPayload(req))
	if err != nil {
		return prepared{}, invalid(err)
	}
	if req.Publisher != nil {
		if err := authorize(ctx, permBridge, ""); err != nil {
			return prepared{}, status.Error(codes.PermissionDenied, "only a bridge may set publisher")
		}
	}
	return s.prepare(ctx, req.Channel, p, req.IdempotencyKey, req.Tags, req.Publisher)
}

func (s *Server) publishRequest(ctx context.Context, req *heraldv1.PublishRequest) (resp *heraldv1.PublishResponse, err error) {
	defer func() {
		if err != nil {
			metricPublishErrors.WithLabelValues(codeName(err)).Inc()
		}
	}()
	pr, err := s.prepareRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	return s.commit(ctx, pr)
}

// Publish implements HeraldService.Publish.
func (s *Server) Publish(ctx context.Context, req *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	return s.publishRequest(ctx, req)
}

// PublishStream implements HeraldService.PublishStream. Requests are
// published in the order they arrive and acknowledged in that order. A
// reader goroutine receives them; the handler takes whatever has arrived
// (up to maxBatch) and, on an engine that can (Redis), publishes it in one
// round trip; a third goroutine writes the acknowledgements, so that neither
// reading nor writing waits for the engine.
func (s *Server) PublishStream(stream grpc.BidiStreamingServer[heraldv1.PublishStreamRequest, heraldv1.PublishStreamResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	reqs := make(chan *heraldv1.PublishStreamRequest, maxBatch)
	recvErr := make(chan error, 1)
	go func() {
		defer close(reqs)
		for {
			req, err := stream.Recv()
			if err != nil {
				if err != io.EOF {
					recvErr <- err
				}
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	acks := make(chan *heraldv1.PublishStreamResponse, maxBatch)
	sendErr := make(chan error, 1)
	go func() {
		for resp := range acks {
			if err := stream.Send(resp); err != nil {
				sendErr <- err
				cancel()
				for range acks { // let the publisher finish
				}
				return
			}
		}
		sendErr <- nil
	}()
	err := s.publishBatches(ctx, reqs, acks)
	close(acks)
	if serr := <-sendErr; err == nil {
		err = serr
	}
	if err == nil {
		select {
		case err = <-recvErr:
		default:
		}
	}
	return err
}

// maxBatch bounds how many PublishStream requests go to the engine at once.
const maxBatch = 256

// batchPublisher is an engine that can publish many publications in one
// round trip, in order (the Redis engine pipelines its script).
type batchPublisher interface {
	PublishBatch(ctx context.Context, pubs []*heraldv1.Publication, opts []PublishOptions) ([]PublishResult, []error)
}

// publishBatches publishes what arrives on reqs, in order, and queues one
// acknowledgement per request on acks.
func (s *Server) publishBatches(ctx context.Context, reqs <-chan *heraldv1.PublishStreamRequest, acks chan<- *heraldv1.PublishStreamResponse) error {
	batcher, _ := s.engine.(batchPublisher)
	batch := make([]*heraldv1.PublishStreamRequest, 0, maxBatch)
	preps := make([]prepared, maxBatch)
	errs := make([]error, maxBatch)
	var pubs []*heraldv1.Publication
	var opts []PublishOptions
	var idx []int
	for {
		req, ok := <-reqs
		if !ok {
			return nil
		}
		batch = append(batch[:0], req)
	fill:
		for len(batch) < maxBatch {
			select {
			case req, ok := <-reqs:
				if !ok {
					break fill
				}
				batch = append(batch, req)
			default:
				break fill
			}
		}
		pubs, opts, idx = pubs[:0], opts[:0], idx[:0]
		for i, req := range batch {
			preps[i], errs[i] = s.prepareRequest(ctx, req.Publish)
			if errs[i] == nil {
				pubs, opts, idx = append(pubs, preps[i].pub), append(opts, preps[i].opts), append(idx, i)
			}
		}
		results := make([]PublishResult, len(pubs))
		engineErrs := make([]error, len(pubs))
		start := time.Now()
		if batcher != nil && len(pubs) > 1 {
			results, engineErrs = batcher.PublishBatch(ctx, pubs, opts)
		} else {
			for j := range pubs {
				results[j], engineErrs[j] = s.engine.Publish(ctx, pubs[j], opts[j])
			}
		}
		if len(pubs) > 0 {
			s.publishDuration.Observe(time.Since(start).Seconds() / float64(len(pubs)))
		}
		j := 0
		for i, req := range batch {
			resp := &heraldv1.PublishStreamResponse{Sequence: req.Sequence}
			var ok *heraldv1.PublishResponse
			err := errs[i]
			if err == nil {
				ok, err = s.finish(preps[i], results[j], engineErrs[j])
				j++
			}
			if err != nil {
				metricPublishErrors.WithLabelValues(codeName(err)).Inc()
				resp.Result = &heraldv1.PublishStreamResponse_Error{Error: statusError(err)}
			} else {
				resp.Result = &heraldv1.PublishStreamResponse_Ok{Ok: ok}
			}
			select {
			case acks <- resp:
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
	}
}

func statusError(err error) *heraldv1.Error {
	return &heraldv1.Error{Code: codeName(err), Message: status.Convert(err).Message()}
}

// Broadcast implements HeraldService.Broadcast.
func (s *Server) Broadcast(ctx context.Context, req *heraldv1.BroadcastRequest) (*heraldv1.BroadcastResponse, error) {
	if len(req.Channels) == 0 {
		return nil, status.Error(codes.InvalidArgument, "channels is empty")
	}
	if len(req.Channels) > maxBroadcast {
		return nil, status.Errorf(codes.InvalidArgument, "%d channels; the limit is %d", len(req.Channels), maxBroadcast)
	}
	if err := validateMeta(req.IdempotencyKey, req.Tags); err != nil {
		return nil, invalid(err)
	}
	p, err := s.toPayload(broadcastPayload(req))
	if err != nil {
		return nil, invalid(err)
	}
	resp := &heraldv1.BroadcastResponse{Results: make([]*heraldv1.PublishStreamResponse, len(req.Channels))}
	for i, ch := range req.Channels {
		r := &heraldv1.PublishStreamResponse{Sequence: uint64(i)}
		if ok, err := s.publish(ctx, ch, p, req.IdempotencyKey, req.Tags, nil); err != nil {
			r.Result = &heraldv1.PublishStreamResponse_Error{Error: statusError(err)}
		} else {
			r.Result = &heraldv1.PublishStreamResponse_Ok{Ok: ok}
		}
		resp.Results[i] = r
	}
	return resp, nil
}

// forFormat returns pub as a reader asked for it. JSON payloads are stored
// as compact text in raw_json; they go out as that text: in `json` by
// default, untouched in `raw_json` with PAYLOAD_FORMAT_RAW, and through a
// google.protobuf.Value only with PAYLOAD_FORMAT_VALUE.
func forFormat(pub *heraldv1.Publication, f heraldv1.PayloadFormat) *heraldv1.Publication {
	raw, ok := pub.Payload.(*heraldv1.Publication_RawJson)
	if !ok || f == heraldv1.PayloadFormat_PAYLOAD_FORMAT_RAW {
		return pub
	}
	out := &heraldv1.Publication{
		Channel: pub.Channel, Offset: pub.Offset, Epoch: pub.Epoch,
		Tags: pub.Tags, Publisher: pub.Publisher, TimeUnixMs: pub.TimeUnixMs,
	}
	if f == heraldv1.PayloadFormat_PAYLOAD_FORMAT_VALUE {
		v := &structpb.Value{}
		if err := v.UnmarshalJSON(raw.RawJson); err == nil {
			out.Payload = &heraldv1.Publication_Data{Data: v}
			return out
		}
		// What a Value cannot hold (1e400, a repeated key) stays text.
	}
	if !utf8.Valid(raw.RawJson) {
		// Stored before payloads were checked: a string field cannot
		// carry it (the stream would fail to marshal), so it goes as the
		// bytes it is.
		out.Payload = &heraldv1.Publication_Binary{Binary: raw.RawJson}
		return out
	}
	out.Payload = &heraldv1.Publication_Json{Json: string(raw.RawJson)}
	return out
}

// Subscribe implements HeraldService.Subscribe. The subscriber is
// registered before history is read, so nothing published meanwhile is
// missed; what the replay already covered is skipped by offset.
func (s *Server) Subscribe(req *heraldv1.SubscribeRequest, stream grpc.ServerStreamingServer[heraldv1.SubscribeResponse]) error {
	ctx := stream.Context()
	ns, err := s.ns.Lookup(req.Channel)
	if err != nil {
		return invalid(err)
	}
	if err := checkSubscribe(req); err != nil {
		return invalid(err)
	}
	if err := authorize(ctx, permRead, req.Channel); err != nil {
		return err
	}
	if s.closing.Load() {
		return status.Error(codes.Unavailable, "node shutting down")
	}
	sub := &subscriber{
		channel:        req.Channel,
		presenceEvents: req.PresenceEvents && ns.JoinLeave,
		q:              newSubQueue(s.hub.queue, s.hub.queueBytes),
		done:           make(chan struct{}),
	}
	if err := s.hub.add(ctx, sub); err != nil {
		return toStatus(s.log, err)
	}
	defer s.hub.remove(sub)
	metricStreams.Inc()
	defer metricStreams.Dec()

	pos, replay, recovered, err := s.recover(ctx, req.Channel, req.Since)
	if err != nil {
		return toStatus(s.log, err)
	}
	// The stream is written by a goroutine of its own, so that a client
	// that stops reading (its Send blocks) is still cut off when its queue
	// is full: this handler returns, gRPC ends the stream, and the blocked
	// Send returns with it.
	sent := make(chan error, 1)
	go func() {
		defer func() { // gRPC's recovery covers the handler's goroutine only
			if r := recover(); r != nil {
				s.log.Error("panic in Subscribe sender", "panic", r)
				sent <- status.Error(codes.Internal, "internal error")
			}
		}()
		sent <- s.sendStream(stream, req, sub, pos, replay, recovered)
	}()
	// The stream ends when the subscriber is stopped (done), the client
	// goes (ctx), or the sender fails. The sender also stops, with nil,
	// once the subscriber's queue is closed, which is a moment before the
	// subscriber is done (stop closes the queue, then done): a nil from it
	// means "wait for the reason". Returning that nil ended the stream OK
	// (io.EOF to the client, which then need not resubscribe) where the
	// node was closing or had cut off a slow subscriber; seen once in a
	// full test run.
	select {
	case err := <-sent:
		if err != nil {
			return err
		}
	case <-sub.done:
	case <-ctx.Done():
	}
	select {
	case <-sub.done:
		metricStreamEnds.WithLabelValues(endReason(sub.err)).Inc()
		return sub.err
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// sendStream writes a Subscribe stream: the subscribed event, the replay,
// then what the hub queues, until the subscriber stops or the stream ends.
func (s *Server) sendStream(stream grpc.ServerStreamingServer[heraldv1.SubscribeResponse], req *heraldv1.SubscribeRequest, sub *subscriber, pos *heraldv1.StreamPosition, replay []*heraldv1.Publication, recovered bool) error {
	if err := stream.Send(&heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Subscribed{
		Subscribed: &heraldv1.Subscribed{Position: pos, Recovered: recovered},
	}}); err != nil {
		return err
	}
	for _, pub := range replay {
		if err := stream.Send(&heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Publication{Publication: forFormat(pub, req.PayloadFormat)}}); err != nil {
			return err
		}
	}
	seam := recovery.Seam{Offset: pos.Offset, Epoch: pos.Epoch}
	var batch []event
	for {
		batch = sub.q.take(batch, sub.done, stream.Context().Done())
		if batch == nil {
			return nil // the handler returns why
		}
		for i, ev := range batch {
			batch[i] = event{}
			var resp *heraldv1.SubscribeResponse
			switch {
			case ev.pub != nil:
				switch seam.Step(ev.pub) {
				case recovery.NewEpoch:
					return errEpochChanged
				case recovery.Duplicate:
					continue // replayed already, or older than the subscription
				case recovery.Broken:
					return errReset
				}
				resp = &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Publication{Publication: forFormat(ev.pub, req.PayloadFormat)}}
			case ev.join:
				resp = &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Join{Join: ev.presence}}
			default:
				resp = &heraldv1.SubscribeResponse{Event: &heraldv1.SubscribeResponse_Leave{Leave: ev.presence}}
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		if cap(batch) > 1024 {
			batch = nil // after a burst: let the queue shrink back
		}
	}
}

// endReason names why the server ended a stream, for metrics.
func endReason(err error) string {
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return "slow"
	case codes.Aborted:
		return "reset"
	default:
		return "shutdown"
	}
}

// History implements HeraldService.History.
func (s *Server) History(ctx context.Context, req *heraldv1.HistoryRequest) (*heraldv1.HistoryResponse, error) {
	if _, err := s.ns.Lookup(req.Channel); err != nil {
		return nil, invalid(err)
	}
	if err := checkPosition("since", req.Since); err != nil {
		return nil, invalid(err)
	}
	if err := checkFormat(req.PayloadFormat); err != nil {
		return nil, invalid(err)
	}
	if err := authorize(ctx, permRead, req.Channel); err != nil {
		return nil, err
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = min(defaultPage, s.cfg.Limits.MaxHistoryPage)
	}
	if limit > s.cfg.Limits.MaxHistoryPage {
		return nil, status.Errorf(codes.InvalidArgument, "limit %d is above the maximum page of %d", limit, s.cfg.Limits.MaxHistoryPage)
	}
	res, err := s.engine.History(ctx, req.Channel, HistoryQuery{Since: req.Since, Limit: limit, Reverse: req.Reverse})
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	out := &heraldv1.HistoryResponse{Position: res.Position, Publications: make([]*heraldv1.Publication, 0, len(res.Publications))}
	// A page is what one gRPC message may carry (limits.max_grpc_message):
	// the publications that fit, at least one, and the caller pages on
	// from the last (as the bridge's recovery does). Larger pages failed
	// where the response crosses a network, and only there: a split
	// bridge's history page or recovery of 100 publications of 60 KB got
	// `trying to send message larger than max`, every time, while
	// `herald serve`'s in-process bridge delivered it.
	size := proto.Size(&heraldv1.HistoryResponse{Position: res.Position})
	for _, p := range res.Publications {
		q := forFormat(p, req.PayloadFormat)
		n := proto.Size(q)
		size += protowire.SizeTag(1) + protowire.SizeBytes(n)
		if size > s.cfg.Limits.MaxGRPCMessage && len(out.Publications) > 0 {
			break
		}
		out.Publications = append(out.Publications, q)
	}
	return out, nil
}

func (s *Server) presenceNamespace(ctx context.Context, channel string) (*config.Namespace, error) {
	ns, err := s.ns.Lookup(channel)
	if err != nil {
		return nil, invalid(err)
	}
	if err := authorize(ctx, permRead, channel); err != nil {
		return nil, err
	}
	if !ns.Presence {
		return nil, status.Errorf(codes.FailedPrecondition, "presence is off for namespace %q", ns.Name)
	}
	return ns, nil
}

// Presence implements HeraldService.Presence.
func (s *Server) Presence(ctx context.Context, req *heraldv1.PresenceRequest) (*heraldv1.PresenceResponse, error) {
	if _, err := s.presenceNamespace(ctx, req.Channel); err != nil {
		return nil, err
	}
	if req.PageSize < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	after, err := decodePageToken(presenceTokenPrefix, req.Channel, req.PageToken, "Presence", "channel")
	if err != nil {
		return nil, err
	}
	clients, err := s.engine.Presence(ctx, req.Channel)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	resp := &heraldv1.PresenceResponse{}
	if req.PageSize == 0 && after == nil {
		resp.Clients = clients // the whole list, as the engine gave it
	} else {
		resp.Clients = make([]*heraldv1.ClientInfo, 0, len(clients))
		for _, c := range clients {
			if after == nil || c.Client > *after {
				resp.Clients = append(resp.Clients, c)
			}
		}
		sort.Slice(resp.Clients, func(i, j int) bool { return resp.Clients[i].Client < resp.Clients[j].Client })
		if size := int(min(req.PageSize, maxPage)); size > 0 && len(resp.Clients) > size {
			resp.Clients = resp.Clients[:size]
			resp.NextPageToken = encodePageToken(presenceTokenPrefix, req.Channel, resp.Clients[size-1].Client)
		}
	}
	// One message, as Channels: refused here, with words, rather than by
	// grpc-go with RESOURCE_EXHAUSTED (429 over REST).
	if n := proto.Size(resp); n > s.cfg.Limits.MaxGRPCMessage {
		return nil, status.Errorf(codes.FailedPrecondition,
			"the answer lists %d clients in %d bytes, over limits.max_grpc_message (%d); ask for pages (page_size, up to %d), count them with PresenceStats, or raise the limit",
			len(resp.Clients), n, s.cfg.Limits.MaxGRPCMessage, maxPage)
	}
	return resp, nil
}

// PresenceStats implements HeraldService.PresenceStats.
func (s *Server) PresenceStats(ctx context.Context, req *heraldv1.PresenceStatsRequest) (*heraldv1.PresenceStatsResponse, error) {
	if _, err := s.presenceNamespace(ctx, req.Channel); err != nil {
		return nil, err
	}
	clients, err := s.engine.Presence(ctx, req.Channel)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	users := make(map[string]struct{}, len(clients))
	for _, c := range clients {
		users[c.User] = struct{}{}
	}
	return &heraldv1.PresenceStatsResponse{Clients: uint32(len(clients)), Users: uint32(len(users))}, nil
}

// Channels implements HeraldService.Channels.
func (s *Server) Channels(ctx context.Context, req *heraldv1.ChannelsRequest) (*heraldv1.ChannelsResponse, error) {
	if err := authorize(ctx, permAdmin, ""); err != nil {
		return nil, err
	}
	if len(req.Pattern) > channelname.MaxLen {
		return nil, status.Errorf(codes.InvalidArgument, "pattern is longer than %d bytes", channelname.MaxLen)
	}
	if req.PageSize < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	after, err := decodePageToken(channelsTokenPrefix, req.Pattern, req.PageToken, "Channels", "pattern")
	if err != nil {
		return nil, err
	}
	// Only what this page can list is read: the first page_size names
	// after the token's that match the pattern (engines seek to its
	// literal beginning).
	limit := int(min(req.PageSize, maxPage))
	q := ChannelsQuery{Limit: limit}
	if after != nil {
		q.After = *after
	}
	if req.Pattern != "" {
		q.Prefix = req.Pattern[:strings.IndexAny(req.Pattern+"*", "*?")]
		q.Keep = func(name string) bool { return channelname.Match(req.Pattern, name) }
	}
	states, more, err := s.engine.Channels(ctx, q)
	if err != nil {
		return nil, toStatus(s.log, err)
	}
	if limit == 0 && more {
		return nil, status.Errorf(codes.FailedPrecondition,
			"the %s engine lists at most %d channels in one answer; ask for pages (page_size, up to %d), or narrow it with pattern (e.g. \"chat:*\")",
			s.engine.Name(), len(states), maxPage)
	}
	byName := make(map[string]*heraldv1.ChannelInfo, len(states))
	for _, st := range states {
		byName[st.Name] = &heraldv1.ChannelInfo{Name: st.Name, Clients: uint32(st.Clients), Position: st.Position}
	}
	// Channels with a stream and no state: the union's first page_size
	// names are among the engine's first page_size and these.
	for name, n := range s.hub.channelStreams() {
		if !q.Selects(name) {
			continue
		}
		ci := byName[name]
		if ci == nil {
			ci = &heraldv1.ChannelInfo{Name: name}
			byName[name] = ci
		}
		ci.Streams = uint32(n)
	}
	out := &heraldv1.ChannelsResponse{Channels: make([]*heraldv1.ChannelInfo, 0, len(byName))}
	for _, ci := range byName {
		out.Channels = append(out.Channels, ci)
	}
	sort.Slice(out.Channels, func(i, j int) bool { return out.Channels[i].Name < out.Channels[j].Name })
	if limit > 0 && (len(out.Channels) > limit || more) {
		out.Channels = out.Channels[:min(limit, len(out.Channels))]
		out.NextPageToken = encodePageToken(channelsTokenPrefix, req.Pattern, out.Channels[len(out.Channels)-1].Name)
	}
	// The list is one message. Over the limit grpc-go would refuse to
	// send it with RESOURCE_EXHAUSTED (429 over REST: "retry later"), and
	// it would fail the same way every time. A page of 1000 names of the
	// longest kind is ~300 KB.
	if n := proto.Size(out); n > s.cfg.Limits.MaxGRPCMessage {
		return nil, status.Errorf(codes.FailedPrecondition,
			"the answer lists %d channels in %d bytes, over limits.max_grpc_message (%d); ask for pages (page_size, up to %d), narrow it with pattern (e.g. \"chat:*\") or raise the limit",
			len(out.Channels), n, s.cfg.Limits.MaxGRPCMessage, maxPage)
	}
	return out, nil
}

// maxPage bounds a page of Channels and of Presence.
const maxPage = 1000

// A page token is a prefix naming the call and the token's version, a
// fingerprint of what the call was asked about (the pattern of Channels,
// the channel of Presence), then the last name or client id its page
// listed. A token given with another pattern or channel is refused: the
// list it continues is not the one asked for.
const (
	channelsTokenPrefix = "c2:"
	presenceTokenPrefix = "p2:"
)

// tokenScopeLen is the length of a page token's fingerprint.
const tokenScopeLen = 8

// tokenScope is the fingerprint of scope in a page token: the first
// bytes of its SHA-256, in hex.
func tokenScope(scope string) string {
	sum := sha256.Sum256([]byte(scope))
	return hex.EncodeToString(sum[:tokenScopeLen/2])
}

// encodePageToken is the page token continuing after key, in the list
// of scope.
func encodePageToken(prefix, scope, key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(prefix + tokenScope(scope) + key))
}

// decodePageToken returns the key a page token of the call continues
// after; nil for no token. what names the scope in the error ("pattern",
// "channel").
func decodePageToken(prefix, scope, tok, call, what string) (*string, error) {
	if tok == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	rest, ok := strings.CutPrefix(string(b), prefix)
	if err != nil || !ok || len(rest) < tokenScopeLen {
		return nil, status.Errorf(codes.InvalidArgument, "page_token is not a next_page_token of %s", call)
	}
	if rest[:tokenScopeLen] != tokenScope(scope) {
		return nil, status.Errorf(codes.InvalidArgument, "page_token continues a list of %s for another %s: ask with the same %s as the call that returned it, or without page_token to start again", call, what, what)
	}
	key := rest[tokenScopeLen:]
	return &key, nil
}

// Disconnect implements HeraldService.Disconnect.
func (s *Server) Disconnect(ctx context.Context, req *heraldv1.DisconnectRequest) (*heraldv1.DisconnectResponse, error) {
	if err := authorize(ctx, permAdmin, ""); err != nil {
		return nil, err
	}
	if req.User == "" {
		return nil, status.Error(codes.InvalidArgument, "user is required")
	}
	if len(req.Reason) > 256 {
		return nil, status.Error(codes.InvalidArgument, "reason is longer than 256 bytes")
	}
	if err := s.engine.Command(ctx, &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Disconnect{Disconnect: req}}); err != nil {
		return nil, toStatus(s.log, err)
	}
	return &heraldv1.DisconnectResponse{}, nil
}

// Unsubscribe implements HeraldService.Unsubscribe.
func (s *Server) Unsubscribe(ctx context.Context, req *heraldv1.UnsubscribeRequest) (*heraldv1.UnsubscribeResponse, error) {
	if err := authorize(ctx, permAdmin, ""); err != nil {
		return nil, err
	}
	if req.User == "" {
		return nil, status.Error(codes.InvalidArgument, "user is required")
	}
	if _, err := s.ns.Lookup(req.Channel); err != nil {
		return nil, invalid(err)
	}
	if err := s.engine.Command(ctx, &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Unsubscribe{Unsubscribe: req}}); err != nil {
		return nil, toStatus(s.log, err)
	}
	return &heraldv1.UnsubscribeResponse{}, nil
}

// Info implements HeraldService.Info.
func (s *Server) Info(ctx context.Context, req *heraldv1.InfoRequest) (*heraldv1.InfoResponse, error) {
	if err := authorize(ctx, permAdmin, ""); err != nil {
		return nil, err
	}
	s.mu.Lock()
	bridges := len(s.sessions)
	s.mu.Unlock()
	return &heraldv1.InfoResponse{
		Node:          s.node,
		Version:       Version,
		Engine:        s.engine.Name(),
		UptimeSeconds: uint64(time.Since(s.start).Seconds()),
		Channels:      uint32(len(s.hub.channelStreams())),
		Streams:       uint32(s.hub.streams.Load()),
		Clients:       uint32(s.clients.Load()),
		Bridges:       uint32(bridges),
		Namespaces:    s.nsList.Namespaces,
	}, nil
}
