// Package inproc is a gRPC channel inside one process: a
// grpc.ClientConnInterface whose calls run the registered service's
// handlers directly, through the server's interceptors, with no
// serialization, no HTTP/2 and no network in between.
//
// It exists for `herald serve`, where the bridge and the REST gateway
// speak the core's gRPC API to a core in the same process: they keep
// coding against the generated client (the same code that, in a split
// deployment, runs over a real gRPC connection), and the embedded default
// does not pay for a network it does not have.
//
// # What a call sees
//
// As over gRPC: the handler's context carries the caller's outgoing
// metadata (and the channel's own, see Client) as incoming metadata, the
// caller's deadline and cancellation, and a grpc.ServerTransportStream
// (grpc.SetHeader, grpc.SetTrailer and grpc.Method work); it is canceled
// once the handler returns. The interceptors given to New run around
// every call, in order. Errors reach the caller as gRPC statuses (a
// context error as CANCELED or DEADLINE_EXCEEDED, anything else that is
// not a status as UNKNOWN); grpc.Header and grpc.Trailer call options are
// filled. A request larger than MaxRecvMsgSize is refused with
// RESOURCE_EXHAUSTED, as a gRPC server refuses it.
//
// # Who owns a message
//
// What the caller sends (a unary request, a stream's messages to the
// server) is copied: the handler owns its copy, as it owns what a gRPC
// server unmarshals, and may keep or modify it. What the server sends (a
// unary response, a stream's messages to the caller) is handed over
// without a copy: the caller's message gets the server's field values
// (the same nested messages, byte slices and lists). Both sides must
// therefore treat it as immutable once sent: the server must not modify
// a message after sending it (it may share it with others, as Herald's
// core shares a publication between its history and every stream), and
// the caller must not modify what it receives. Herald's core and bridge
// never modify a message they sent or received; the race detector would
// see it in the tests that run `herald serve`.
package inproc

import (
	"context"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Options configure a Channel. The zero value works: no interceptors and
// gRPC's default limit of 4 MiB per received message.
type Options struct {
	// Unary and Stream are the server's interceptors, outermost first
	// (as grpc.ChainUnaryInterceptor and grpc.ChainStreamInterceptor
	// order them).
	Unary  []grpc.UnaryServerInterceptor
	Stream []grpc.StreamServerInterceptor
	// MaxRecvMsgSize is the largest request message the server takes,
	// in bytes (proto.Size). Default 4 MiB.
	MaxRecvMsgSize int
	// StreamBuffer is how many messages each direction of a stream
	// holds before the sender waits for the receiver (gRPC's flow
	// control). Default 256.
	StreamBuffer int
	// HandOver, if set, gives dst the field values of src, a message of
	// the same type, and reports whether it knew the type; for the
	// others, and without it, the fields are set through protobuf
	// reflection. It is the fast path of the messages a server sends
	// most (reflection costs a few hundred nanoseconds a message).
	HandOver func(dst, src proto.Message) bool
}

// Receive is a call option of a stream on a Channel (ignored by other
// connections, as any grpc.EmptyCallOption): the handler's messages are
// given to f, in the order sent, on the goroutine of the handler's
// SendMsg, instead of being queued for the caller's RecvMsg, which then
// only waits for the stream's end and reports it. That takes a goroutine
// hand-off off each message of a stream that the caller reads in a loop
// anyway (Herald's bridge, its SubscribeMany stream).
//
// f owns nothing: the message is the handler's own (see "Who owns a
// message"); it must not block, since the handler's SendMsg waits for it.
// No call of f starts once the stream ended, and RecvMsg reports the end
// only after the call of f in progress, if any, returned: a caller that
// opens a new stream when one ends never sees messages of the old one
// after it.
func Receive(f func(proto.Message)) grpc.CallOption { return receiveOption{f: f} }

type receiveOption struct {
	grpc.EmptyCallOption
	f func(proto.Message)
}

// Channel is an in-process gRPC channel to the services registered on
// it. Register services with RegisterService (it is a
// grpc.ServiceRegistrar), then call them through Client. Safe for
// concurrent use.
type Channel struct {
	unary   grpc.UnaryServerInterceptor  // nil: none
	stream  grpc.StreamServerInterceptor // nil: none
	maxRecv int
	buffer  int
	assign  func(dst, src proto.Message) bool

	mu      sync.Mutex
	methods map[string]*method // by full method name, /pkg.Service/Method
	open    map[*serverStream]struct{}
	closed  bool
}

type method struct {
	impl   any
	unary  *grpc.MethodDesc
	stream *grpc.StreamDesc
}

// New returns a channel with no services.
func New(o Options) *Channel {
	c := &Channel{
		unary:   chainUnary(o.Unary),
		stream:  chainStream(o.Stream),
		maxRecv: o.MaxRecvMsgSize,
		buffer:  o.StreamBuffer,
		assign:  o.HandOver,
		methods: make(map[string]*method),
		open:    make(map[*serverStream]struct{}),
	}
	if c.maxRecv <= 0 {
		c.maxRecv = 4 << 20
	}
	if c.buffer <= 0 {
		c.buffer = 256
	}
	return c
}

// RegisterService implements grpc.ServiceRegistrar: impl serves desc's
// methods on the channel.
func (c *Channel) RegisterService(desc *grpc.ServiceDesc, impl any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range desc.Methods {
		c.methods["/"+desc.ServiceName+"/"+desc.Methods[i].MethodName] = &method{impl: impl, unary: &desc.Methods[i]}
	}
	for i := range desc.Streams {
		c.methods["/"+desc.ServiceName+"/"+desc.Streams[i].StreamName] = &method{impl: impl, stream: &desc.Streams[i]}
	}
}

var errClosed = status.Error(codes.Unavailable, "the in-process link to the core is closed")

// Close ends every open stream (the caller gets UNAVAILABLE, the handler
// a canceled context) and refuses later calls with UNAVAILABLE, as
// grpc.Server.Stop does. Unary calls in progress finish. Idempotent.
func (c *Channel) Close() {
	c.mu.Lock()
	c.closed = true
	open := c.open
	c.open = make(map[*serverStream]struct{})
	c.mu.Unlock()
	for s := range open {
		s.abort(errClosed)
	}
}

func (c *Channel) lookup(name string) (*method, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	m := c.methods[name]
	if m == nil {
		return nil, status.Errorf(codes.Unimplemented, "unknown method %s", name)
	}
	return m, nil
}

// Client returns a client connection on the channel whose every call
// carries md (an API key, say) in addition to its context's outgoing
// metadata, as a grpc.ClientConn with per-RPC credentials would. md may
// be nil.
func (c *Channel) Client(md metadata.MD) grpc.ClientConnInterface {
	return &client{c: c, md: md}
}

// client is a view of the channel with its own call metadata.
type client struct {
	c  *Channel
	md metadata.MD
}

// incoming builds the handler's context from the caller's: its outgoing
// metadata (with the client's) becomes incoming, and it has none of its
// own outgoing, as a server's context has none. FromOutgoingContext
// returns a copy, which the client's pairs extend in place; without
// outgoing metadata the client's own map is the incoming metadata, shared
// by every call and never modified (metadata.FromIncomingContext hands a
// handler a copy).
func (cl *client) incoming(ctx context.Context) context.Context {
	md, ok := metadata.FromOutgoingContext(ctx)
	if !ok {
		return metadata.NewIncomingContext(ctx, cl.md)
	}
	for k, v := range cl.md {
		md[k] = append(md[k], v...)
	}
	ctx = metadata.NewIncomingContext(ctx, md)
	return metadata.NewOutgoingContext(ctx, nil)
}

// toStatus is the error a caller sees for a handler's error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.FromContextError(err).Err()
}

// Invoke implements grpc.ClientConnInterface.
func (cl *client) Invoke(ctx context.Context, name string, args, reply any, opts ...grpc.CallOption) error {
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	m, err := cl.c.lookup(name)
	if err != nil {
		return err
	}
	if m.unary == nil {
		return status.Errorf(codes.Unimplemented, "%s is a streaming method", name)
	}
	req, ok := args.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process call %s: request %T is not a protobuf message", name, args)
	}
	if err := cl.c.checkSize(req); err != nil {
		return err
	}
	sts := &transportStream{method: name}
	hctx, cancel := context.WithCancel(grpc.NewContextWithServerTransportStream(cl.incoming(ctx), sts))
	dec := func(in any) error {
		dst, ok := in.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "in-process call %s: %T is not a protobuf message", name, in)
		}
		proto.Merge(dst, req)
		return nil
	}
	resp, herr := m.unary.Handler(m.impl, hctx, dec, cl.c.unary)
	cancel()
	sts.finish(opts)
	if herr != nil {
		return toStatus(herr)
	}
	if resp == nil {
		return status.Errorf(codes.Internal, "in-process call %s: the handler answered nothing", name)
	}
	return cl.c.handOver(reply, resp)
}

func (c *Channel) checkSize(m proto.Message) error {
	if n := proto.Size(m); n > c.maxRecv {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, c.maxRecv)
	}
	return nil
}

// handOver gives dst the field values of src, a message of the same type:
// the same nested messages, slices and maps, no copy.
func (c *Channel) handOver(dst, src any) error {
	d, ok1 := dst.(proto.Message)
	s, ok2 := src.(proto.Message)
	if !ok1 || !ok2 {
		return status.Errorf(codes.Internal, "in-process call: %T or %T is not a protobuf message", dst, src)
	}
	if c.assign != nil && c.assign(d, s) {
		return nil
	}
	dm, sm := d.ProtoReflect(), s.ProtoReflect()
	if dm.Descriptor() != sm.Descriptor() {
		return status.Errorf(codes.Internal, "in-process call: the handler answered %s, the caller expects %s", sm.Descriptor().FullName(), dm.Descriptor().FullName())
	}
	sm.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dm.Set(fd, v)
		return true
	})
	return nil
}

// transportStream is a unary call's grpc.ServerTransportStream: the
// header and trailer its handler sets, for the grpc.Header and
// grpc.Trailer call options.
type transportStream struct {
	method  string
	mu      sync.Mutex
	header  metadata.MD
	trailer metadata.MD
	sent    bool
}

func (t *transportStream) Method() string { return t.method }

func (t *transportStream) SetHeader(md metadata.MD) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sent {
		return status.Error(codes.Internal, "transport: the header was already sent")
	}
	t.header = metadata.Join(t.header, md)
	return nil
}

func (t *transportStream) SendHeader(md metadata.MD) error {
	if err := t.SetHeader(md); err != nil {
		return err
	}
	t.mu.Lock()
	t.sent = true
	t.mu.Unlock()
	return nil
}

func (t *transportStream) SetTrailer(md metadata.MD) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.trailer = metadata.Join(t.trailer, md)
	return nil
}

// finish fills the call's grpc.Header and grpc.Trailer options.
func (t *transportStream) finish(opts []grpc.CallOption) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = t.header
		case *grpc.HeaderCallOption:
			*o.HeaderAddr = t.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = t.trailer
		case *grpc.TrailerCallOption:
			*o.TrailerAddr = t.trailer
		}
	}
}

// NewStream implements grpc.ClientConnInterface. The handler runs in a
// goroutine of its own, as a gRPC server runs each stream.
func (cl *client) NewStream(ctx context.Context, desc *grpc.StreamDesc, name string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	m, err := cl.c.lookup(name)
	if err != nil {
		return nil, err
	}
	if m.stream == nil {
		return nil, status.Errorf(codes.Unimplemented, "%s is a unary method", name)
	}
	c := cl.c
	hctx, cancel := context.WithCancel(cl.incoming(ctx))
	s := &serverStream{
		c:         c,
		method:    name,
		cancel:    cancel,
		toServer:  make(chan proto.Message, c.buffer),
		sendDone:  make(chan struct{}),
		toClient:  make(chan proto.Message, c.buffer),
		ended:     make(chan struct{}),
		headerOut: make(chan struct{}),
	}
	for _, o := range opts {
		if r, ok := o.(receiveOption); ok {
			s.receive = r.f
		}
	}
	s.ctx = grpc.NewContextWithServerTransportStream(hctx, streamTransport{s})
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cancel()
		return nil, errClosed
	}
	c.open[s] = struct{}{}
	c.mu.Unlock()
	info := &grpc.StreamServerInfo{FullMethod: name, IsClientStream: m.stream.ClientStreams, IsServerStream: m.stream.ServerStreams}
	go func() {
		var err error
		if c.stream != nil {
			err = c.stream(m.impl, s, info, m.stream.Handler)
		} else {
			err = m.stream.Handler(m.impl, s)
		}
		s.end(toStatus(err))
		c.mu.Lock()
		delete(c.open, s)
		c.mu.Unlock()
	}()
	return &clientStream{s: s, ctx: ctx, opts: opts}, nil
}

// serverStream is both ends of one stream: the handler's grpc.ServerStream
// (and grpc.ServerTransportStream), and the state clientStream reads.
type serverStream struct {
	c      *Channel
	method string
	ctx    context.Context // the handler's
	cancel context.CancelFunc

	toServer  chan proto.Message // the caller's messages, copies
	sendDone  chan struct{}      // closed by CloseSend: no more toServer
	closeSend sync.Once
	toClient  chan proto.Message // the handler's messages, handed over

	// receive, when set (Receive), takes the handler's messages instead
	// of toClient; recvMu is held while it runs, and taken by the
	// caller's RecvMsg before it reports the end.
	receive func(proto.Message)
	recvMu  sync.Mutex

	mu        sync.Mutex
	header    metadata.MD
	trailer   metadata.MD
	headerOut chan struct{} // closed once the header is sent (or the stream ended)
	hdrSent   bool
	status    error         // the stream's end: nil for OK; set before ended closes
	ended     chan struct{} // closed once the handler returned (or the stream was aborted)
	endOnce   sync.Once
}

// end records the stream's status and ends it. The first end counts.
func (s *serverStream) end(err error) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.status = err
		s.sendHeaderLocked()
		s.mu.Unlock()
		close(s.ended)
		s.cancel()
	})
}

// abort ends the stream from outside (Close).
func (s *serverStream) abort(err error) { s.end(err) }

func (s *serverStream) sendHeaderLocked() {
	if !s.hdrSent {
		s.hdrSent = true
		close(s.headerOut)
	}
}

// streamTransport is a stream's grpc.ServerTransportStream, for
// grpc.SetHeader and grpc.SetTrailer on its context.
type streamTransport struct{ s *serverStream }

func (t streamTransport) Method() string                  { return t.s.method }
func (t streamTransport) SetHeader(md metadata.MD) error  { return t.s.SetHeader(md) }
func (t streamTransport) SendHeader(md metadata.MD) error { return t.s.SendHeader(md) }
func (t streamTransport) SetTrailer(md metadata.MD) error { t.s.SetTrailer(md); return nil }

func (s *serverStream) SetHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hdrSent {
		return status.Error(codes.Internal, "transport: the header was already sent")
	}
	s.header = metadata.Join(s.header, md)
	return nil
}

func (s *serverStream) SendHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hdrSent {
		return status.Error(codes.Internal, "transport: the header was already sent")
	}
	s.header = metadata.Join(s.header, md)
	s.sendHeaderLocked()
	return nil
}

func (s *serverStream) SetTrailer(md metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trailer = metadata.Join(s.trailer, md)
}

func (s *serverStream) Context() context.Context { return s.ctx }

// SendMsg hands m to the caller, waiting while the caller has
// StreamBuffer messages unread.
func (s *serverStream) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process stream: %T is not a protobuf message", m)
	}
	s.mu.Lock()
	s.sendHeaderLocked()
	s.mu.Unlock()
	if s.receive != nil {
		return s.handTo(pm)
	}
	select {
	case s.toClient <- pm:
		return nil
	case <-s.ended:
		return status.FromContextError(context.Canceled).Err()
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	}
}

// handTo gives m to the caller's receive function, unless the stream
// ended.
func (s *serverStream) handTo(m proto.Message) error {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	select {
	case <-s.ended:
		return status.FromContextError(context.Canceled).Err()
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	default:
	}
	s.receive(m)
	return nil
}

// RecvMsg fills m with the caller's next message (it owns it); io.EOF once
// the caller closed its side.
func (s *serverStream) RecvMsg(m any) error {
	dst, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process stream: %T is not a protobuf message", m)
	}
	select {
	case msg := <-s.toServer:
		proto.Merge(dst, msg)
		return nil
	default:
	}
	select {
	case msg := <-s.toServer:
		proto.Merge(dst, msg)
		return nil
	case <-s.sendDone:
		// Messages sent before CloseSend come first.
		select {
		case msg := <-s.toServer:
			proto.Merge(dst, msg)
			return nil
		default:
			return io.EOF
		}
	case <-s.ctx.Done():
		return status.FromContextError(s.ctx.Err()).Err()
	}
}

// clientStream is the caller's grpc.ClientStream.
type clientStream struct {
	s    *serverStream
	ctx  context.Context
	opts []grpc.CallOption
	done bool // RecvMsg returned the end; owned by the receiving goroutine
}

func (c *clientStream) Context() context.Context { return c.ctx }

// Header waits for the handler's header (or the stream's end: then,
// as for a gRPC response with trailers only, it may be nil, and RecvMsg
// tells the status).
func (c *clientStream) Header() (metadata.MD, error) {
	select {
	case <-c.s.headerOut:
	case <-c.ctx.Done():
		return nil, status.FromContextError(c.ctx.Err()).Err()
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.header.Copy(), nil
}

// Trailer returns the handler's trailer once the stream has ended.
func (c *clientStream) Trailer() metadata.MD {
	select {
	case <-c.s.ended:
	default:
		return nil
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.s.trailer.Copy()
}

// CloseSend ends the caller's side: the handler's RecvMsg then returns
// io.EOF after what was sent before.
func (c *clientStream) CloseSend() error {
	c.s.closeSend.Do(func() { close(c.s.sendDone) })
	return nil
}

// SendMsg copies m to the handler, waiting while the handler has
// StreamBuffer messages unread. Once the stream has ended it returns
// io.EOF, and RecvMsg the stream's status, as over gRPC.
func (c *clientStream) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "in-process stream: %T is not a protobuf message", m)
	}
	select {
	case <-c.s.sendDone:
		return status.Error(codes.Internal, "SendMsg called after CloseSend")
	default:
	}
	if err := c.s.c.checkSize(pm); err != nil {
		return err
	}
	cp := proto.Clone(pm)
	select {
	case c.s.toServer <- cp:
		return nil
	case <-c.s.ended:
		return io.EOF
	case <-c.ctx.Done():
		return io.EOF
	}
}

// RecvMsg gives m the handler's next message (handed over, see the
// package doc); at the end, io.EOF for OK or the stream's status.
func (c *clientStream) RecvMsg(m any) error {
	if c.done {
		return c.endErr()
	}
	select {
	case msg := <-c.s.toClient:
		return c.s.c.handOver(m, msg)
	default:
	}
	select {
	case msg := <-c.s.toClient:
		return c.s.c.handOver(m, msg)
	case <-c.s.ended:
		// What the handler sent before it returned comes first.
		select {
		case msg := <-c.s.toClient:
			return c.s.c.handOver(m, msg)
		default:
		}
		c.done = true
		c.finish()
		return c.endErr()
	case <-c.ctx.Done():
		c.s.end(status.FromContextError(c.ctx.Err()).Err())
		c.done = true
		c.finish()
		return c.endErr()
	}
}

func (c *clientStream) endErr() error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.status == nil {
		return io.EOF
	}
	return c.s.status
}

// finish fills the stream's grpc.Header and grpc.Trailer call options.
func (c *clientStream) finish() {
	if c.s.receive != nil {
		// The stream ended, so no call of receive starts any more: wait
		// for the one in progress, if any (see Receive).
		c.s.recvMu.Lock()
		c.s.recvMu.Unlock()
	}
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	for _, o := range c.opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = c.s.header.Copy()
		case grpc.TrailerCallOption:
			*o.TrailerAddr = c.s.trailer.Copy()
		}
	}
}

// chainUnary composes interceptors, the first outermost; nil for none.
func chainUnary(is []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return is[0](ctx, req, info, unaryNext(is[1:], info, h))
	}
}

func unaryNext(is []grpc.UnaryServerInterceptor, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) grpc.UnaryHandler {
	if len(is) == 0 {
		return h
	}
	return func(ctx context.Context, req any) (any, error) {
		return is[0](ctx, req, info, unaryNext(is[1:], info, h))
	}
}

// chainStream composes interceptors, the first outermost; nil for none.
func chainStream(is []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	switch len(is) {
	case 0:
		return nil
	case 1:
		return is[0]
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return is[0](srv, ss, info, streamNext(is[1:], info, h))
	}
}

func streamNext(is []grpc.StreamServerInterceptor, info *grpc.StreamServerInfo, h grpc.StreamHandler) grpc.StreamHandler {
	if len(is) == 0 {
		return h
	}
	return func(srv any, ss grpc.ServerStream) error {
		return is[0](srv, ss, info, streamNext(is[1:], info, h))
	}
}
