package inproc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/inproc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
)

// echo is a small HeraldService: Publish answers with what the call
// carried, SubscribeMany echoes each request's id, Subscribe streams a
// few events. Channel names choose failures.
type echo struct {
	heraldv1.UnimplementedHeraldServiceServer
	mu      sync.Mutex
	last    *heraldv1.PublishRequest // the handler's request, as it got it
	reply   *heraldv1.PublishResponse
	ctxDone chan error // a stream handler's context error, once it ended after return
}

func (e *echo) Publish(ctx context.Context, req *heraldv1.PublishRequest) (*heraldv1.PublishResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if out, ok := metadata.FromOutgoingContext(ctx); ok && len(out) > 0 {
		return nil, status.Errorf(codes.Internal, "the handler's context has outgoing metadata %v", out)
	}
	if m, ok := grpc.Method(ctx); !ok || m != heraldv1.HeraldService_Publish_FullMethodName {
		return nil, status.Errorf(codes.Internal, "grpc.Method = %q, %v", m, ok)
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("h", "1"))
	_ = grpc.SetTrailer(ctx, metadata.Pairs("t", "2"))
	switch req.Channel {
	case "status":
		return nil, status.Error(codes.PermissionDenied, "no")
	case "plain":
		return nil, errors.New("plain error")
	case "canceled":
		return nil, context.Canceled
	case "slow":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	req.Channel = "changed by the handler" // it owns its request
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = req
	e.reply = &heraldv1.PublishResponse{Position: &heraldv1.StreamPosition{Offset: 7, Epoch: strings.Join(md.Get("authorization"), ",") + "|" + strings.Join(md.Get("x-order"), ",")}}
	return e.reply, nil
}

func (e *echo) SubscribeMany(stream grpc.BidiStreamingServer[heraldv1.SubscribeManyRequest, heraldv1.SubscribeManyResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if err := stream.SendHeader(metadata.Pairs("auth", strings.Join(md.Get("authorization"), ","))); err != nil {
		return err
	}
	defer func() {
		ctx := stream.Context()
		go func() { <-ctx.Done(); e.ctxDone <- ctx.Err() }()
	}()
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			stream.SetTrailer(metadata.Pairs("end", "eof"))
			return nil
		}
		if err != nil {
			return err
		}
		if req.Id == idFail {
			return status.Error(codes.ResourceExhausted, "too slow")
		}
		if req.Id == idWait {
			<-stream.Context().Done()
			return stream.Context().Err()
		}
		if err := stream.Send(&heraldv1.SubscribeManyResponse{Id: req.Id}); err != nil {
			return err
		}
	}
}

// Request ids that make the echo's SubscribeMany fail, or wait for its
// context to end.
const (
	idFail = 1 << 40
	idWait = 1<<40 + 1
)

// conns returns the two ways of reaching the same service: over a gRPC
// connection (bufconn), and in process; with the same interceptor (which
// records its calls) and, on both, the metadata "authorization: key".
func conns(t *testing.T) map[string]struct {
	cc   grpc.ClientConnInterface
	svc  *echo
	link *inproc.Channel
	log  *[]string
} {
	out := map[string]struct {
		cc   grpc.ClientConnInterface
		svc  *echo
		link *inproc.Channel
		log  *[]string
	}{}
	for _, name := range []string{"grpc", "inproc"} {
		var mu sync.Mutex
		var log []string
		note := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
		unary := func(tag string) grpc.UnaryServerInterceptor {
			return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				note(tag + " " + info.FullMethod)
				return h(ctx, req)
			}
		}
		stream := func(tag string) grpc.StreamServerInterceptor {
			return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				note(tag + " " + info.FullMethod)
				return h(srv, ss)
			}
		}
		svc := &echo{ctxDone: make(chan error, 8)}
		switch name {
		case "grpc":
			lis := bufconn.Listen(1 << 20)
			gs := grpc.NewServer(grpc.ChainUnaryInterceptor(unary("a"), unary("b")), grpc.ChainStreamInterceptor(stream("a"), stream("b")), grpc.MaxRecvMsgSize(1024))
			heraldv1.RegisterHeraldServiceServer(gs, svc)
			go func() { _ = gs.Serve(lis) }()
			cc, err := grpc.NewClient("passthrough:///bufnet",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithPerRPCCredentials(key("key")))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close(); gs.Stop() })
			out[name] = struct {
				cc   grpc.ClientConnInterface
				svc  *echo
				link *inproc.Channel
				log  *[]string
			}{cc, svc, nil, &log}
		case "inproc":
			link := inproc.New(inproc.Options{Unary: []grpc.UnaryServerInterceptor{unary("a"), unary("b")}, Stream: []grpc.StreamServerInterceptor{stream("a"), stream("b")}, MaxRecvMsgSize: 1024})
			heraldv1.RegisterHeraldServiceServer(link, svc)
			t.Cleanup(link.Close)
			out[name] = struct {
				cc   grpc.ClientConnInterface
				svc  *echo
				link *inproc.Channel
				log  *[]string
			}{link.Client(metadata.Pairs("authorization", "Bearer key")), svc, link, &log}
		}
	}
	return out
}

type key string

func (k key) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(k)}, nil
}
func (k key) RequireTransportSecurity() bool { return false }

// TestUnaryAsOverGRPC: metadata, header and trailer, interceptors in
// order, and errors, the same in process as over gRPC; the handler owns
// a copy of the request, the caller gets the handler's response.
func TestUnaryAsOverGRPC(t *testing.T) {
	for name, c := range conns(t) {
		t.Run(name, func(t *testing.T) {
			client := heraldv1.NewHeraldServiceClient(c.cc)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-order", "1", "x-order", "2")
			req := &heraldv1.PublishRequest{Channel: "ok", Payload: &heraldv1.PublishRequest_RawJson{RawJson: []byte(`{"a":1}`)}}
			var header, trailer metadata.MD
			resp, err := client.Publish(ctx, req, grpc.Header(&header), grpc.Trailer(&trailer))
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetPosition().GetEpoch(); got != "Bearer key|1,2" {
				t.Fatalf("the handler saw authorization|x-order %q", got)
			}
			if req.Channel != "ok" {
				t.Fatalf("the caller's request was changed: %q", req.Channel)
			}
			if header.Get("h")[0] != "1" || trailer.Get("t")[0] != "2" {
				t.Fatalf("header %v, trailer %v", header, trailer)
			}
			if want := []string{"a /herald.v1.HeraldService/Publish", "b /herald.v1.HeraldService/Publish"}; !slices.Equal(*c.log, want) {
				t.Fatalf("interceptors ran %q, want %q", *c.log, want)
			}
			for _, tt := range []struct {
				channel string
				code    codes.Code
				msg     string
			}{
				{"status", codes.PermissionDenied, "no"},
				{"plain", codes.Unknown, "plain error"},
				{"canceled", codes.Canceled, "context canceled"},
			} {
				_, err := client.Publish(ctx, &heraldv1.PublishRequest{Channel: tt.channel})
				if st := status.Convert(err); st.Code() != tt.code || st.Message() != tt.msg {
					t.Errorf("%s: got %v %q, want %v %q", tt.channel, st.Code(), st.Message(), tt.code, tt.msg)
				}
			}
			dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			if _, err := client.Publish(dctx, &heraldv1.PublishRequest{Channel: "slow"}); status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("past the deadline: %v", err)
			}
			big := &heraldv1.PublishRequest{Channel: "ok", Payload: &heraldv1.PublishRequest_Binary{Binary: make([]byte, 2000)}}
			if _, err := client.Publish(ctx, big); status.Code(err) != codes.ResourceExhausted {
				t.Errorf("a request over the size limit: %v", err)
			}
			if _, err := client.History(ctx, &heraldv1.HistoryRequest{}); status.Code(err) != codes.Unimplemented {
				t.Errorf("an unimplemented method: %v", err)
			}
		})
	}
}

// TestUnaryHandsOverTheResponse: in process, the caller's response holds
// the handler's nested messages (no copy).
func TestUnaryHandsOverTheResponse(t *testing.T) {
	c := conns(t)["inproc"]
	resp, err := heraldv1.NewHeraldServiceClient(c.cc).Publish(context.Background(), &heraldv1.PublishRequest{Channel: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	c.svc.mu.Lock()
	defer c.svc.mu.Unlock()
	if resp.Position != c.svc.reply.Position {
		t.Fatal("the response's position was copied")
	}
	if c.svc.last.Channel != "changed by the handler" {
		t.Fatal("the handler's change to its request did not stay in its copy")
	}
}

// TestStreamAsOverGRPC: a bidirectional stream in process behaves as
// over gRPC: header, messages in order, the caller's half-close, the
// trailer, a handler's status after what it sent, cancellation, and the
// handler's context ending when it returns.
func TestStreamAsOverGRPC(t *testing.T) {
	for name, c := range conns(t) {
		t.Run(name, func(t *testing.T) {
			client := heraldv1.NewHeraldServiceClient(c.cc)
			ctx := context.Background()
			st, err := client.SubscribeMany(ctx)
			if err != nil {
				t.Fatal(err)
			}
			md, err := st.Header()
			if err != nil || md.Get("auth")[0] != "Bearer key" {
				t.Fatalf("header %v, %v", md, err)
			}
			for i := uint64(1); i <= 300; i++ { // beyond the stream buffer
				if err := st.Send(&heraldv1.SubscribeManyRequest{Id: i}); err != nil {
					t.Fatal(err)
				}
				got, err := st.Recv()
				if err != nil || got.Id != i {
					t.Fatalf("message %d: got %v, %v", i, got, err)
				}
			}
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != io.EOF {
				t.Fatalf("after the caller's half-close: %v, want io.EOF", err)
			}
			if tr := st.Trailer(); tr.Get("end")[0] != "eof" {
				t.Fatalf("trailer %v", tr)
			}
			if err := <-c.svc.ctxDone; err == nil {
				t.Fatal("the handler's context did not end after it returned")
			}
			if want := []string{"a /herald.v1.HeraldService/SubscribeMany", "b /herald.v1.HeraldService/SubscribeMany"}; !slices.Equal(*c.log, want) {
				t.Fatalf("interceptors ran %q, want %q", *c.log, want)
			}

			// The handler's status comes after what it sent.
			st, err = client.SubscribeMany(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range []uint64{1, 2, idFail} {
				if err := st.Send(&heraldv1.SubscribeManyRequest{Id: id}); err != nil {
					t.Fatal(err)
				}
			}
			for _, id := range []uint64{1, 2} {
				if got, err := st.Recv(); err != nil || got.Id != id {
					t.Fatalf("want %d, got %v, %v", id, got, err)
				}
			}
			if _, err := st.Recv(); status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("the handler's status: %v", err)
			}
			waitFor(t, func() bool { return st.Send(&heraldv1.SubscribeManyRequest{Id: 3}) == io.EOF })
			<-c.svc.ctxDone

			// The caller cancels: the handler's context ends, Recv says so.
			cctx, cancel := context.WithCancel(ctx)
			st, err = client.SubscribeMany(cctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&heraldv1.SubscribeManyRequest{Id: idWait}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Header(); err != nil {
				t.Fatal(err)
			}
			cancel()
			if _, err := st.Recv(); status.Code(err) != codes.Canceled {
				t.Fatalf("after cancel: %v", err)
			}
			if err := <-c.svc.ctxDone; !errors.Is(err, context.Canceled) {
				t.Fatalf("the handler's context: %v", err)
			}
		})
	}
}

// TestCloseEndsStreams: Close ends open streams with UNAVAILABLE and
// refuses new calls, as grpc.Server.Stop does.
func TestCloseEndsStreams(t *testing.T) {
	c := conns(t)["inproc"]
	client := heraldv1.NewHeraldServiceClient(c.cc)
	st, err := client.SubscribeMany(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	c.link.Close()
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("an open stream after Close: %v", err)
	}
	if _, err := client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "ok"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("a call after Close: %v", err)
	}
	if _, err := client.SubscribeMany(context.Background()); status.Code(err) != codes.Unavailable {
		t.Fatalf("a stream after Close: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("condition not met within 10s")
		}
	}
}

// TestReceive: with inproc.Receive a stream's messages go to the function,
// in order, and RecvMsg only reports the end, after them; over a gRPC
// connection the option changes nothing.
func TestReceive(t *testing.T) {
	for name, c := range conns(t) {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var got []uint64
			recv := inproc.Receive(func(m proto.Message) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, m.(*heraldv1.SubscribeManyResponse).Id)
			})
			st, err := heraldv1.NewHeraldServiceClient(c.cc).SubscribeMany(context.Background(), recv)
			if err != nil {
				t.Fatal(err)
			}
			const n = 300 // beyond the stream buffer
			for i := uint64(1); i <= n; i++ {
				if err := st.Send(&heraldv1.SubscribeManyRequest{Id: i}); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Send(&heraldv1.SubscribeManyRequest{Id: idFail}); err != nil {
				t.Fatal(err)
			}
			var viaRecv []uint64
			for {
				m, err := st.Recv()
				if err != nil {
					if status.Code(err) != codes.ResourceExhausted {
						t.Fatalf("the handler's status: %v", err)
					}
					break
				}
				viaRecv = append(viaRecv, m.Id)
			}
			mu.Lock()
			defer mu.Unlock()
			want := make([]uint64, n)
			for i := range want {
				want[i] = uint64(i + 1)
			}
			if name == "inproc" {
				if len(viaRecv) != 0 || !slices.Equal(got, want) {
					t.Fatalf("Recv got %d messages, the function %d (want 0 and %d, in order)", len(viaRecv), len(got), n)
				}
			} else if len(got) != 0 || !slices.Equal(viaRecv, want) {
				t.Fatalf("Recv got %d messages, the function %d (want %d in order and 0)", len(viaRecv), len(got), n)
			}
		})
	}
}

// TestReceiveEndsAfterTheFunction: a stream that ends (here the caller
// cancels) while the Receive function runs reports its end only once the
// function returned, and the function is not called after that.
func TestReceiveEndsAfterTheFunction(t *testing.T) {
	c := conns(t)["inproc"]
	entered, release := make(chan struct{}), make(chan struct{})
	var returned, calls atomic.Int64
	recv := inproc.Receive(func(proto.Message) {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		returned.Add(1)
	})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := heraldv1.NewHeraldServiceClient(c.cc).SubscribeMany(ctx, recv)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&heraldv1.SubscribeManyRequest{Id: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the Receive function was not called within 10s")
	}
	_ = st.Send(&heraldv1.SubscribeManyRequest{Id: 2}) // queued behind the first
	cancel()
	ended := make(chan error, 1)
	go func() { _, err := st.Recv(); ended <- err }()
	var err2 error
	select {
	case err2 = <-ended:
		// Ended while the function still ran: what the test is about.
		if returned.Load() == 0 {
			close(release)
			t.Fatalf("Recv reported the end (%v) while the Receive function was still running", err2)
		}
	case <-time.After(500 * time.Millisecond):
		// Recv waits for the function, as it must: let it return.
		close(release)
		err2 = <-ended
	}
	if status.Code(err2) != codes.Canceled {
		t.Fatalf("after cancel: %v", err2)
	}
	if n := calls.Load(); n != 1 || returned.Load() != 1 {
		t.Fatalf("the function was called %d times after the end began, want only the first", n)
	}
}
