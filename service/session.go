package service

import (
	"context"
	"io"
	"sync"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// bridgeSession is one attached bridge: its presence entries, held for as
// long as its BridgeSession stream lives, and its queue of commands.
type bridgeSession struct {
	id   string
	out  chan *heraldv1.BridgeSessionResponse
	done chan struct{}
	once sync.Once
	err  error

	// entries are the presence entries this bridge reported, by channel and
	// client id; only the session's receive loop touches them.
	entries map[presenceKey]*heraldv1.ClientInfo
}

type presenceKey struct{ channel, client string }

// bridgeAcceptedHeader is sent in the header of an accepted BridgeSession
// (wsbridge.SessionAcceptedHeader; service does not import wsbridge).
const bridgeAcceptedHeader = "herald-bridge-session"

func (b *bridgeSession) stop(err error) {
	b.once.Do(func() {
		b.err = err
		close(b.done)
	})
}

// BridgeSession implements HeraldService.BridgeSession.
func (s *Server) BridgeSession(stream grpc.BidiStreamingServer[heraldv1.BridgeSessionRequest, heraldv1.BridgeSessionResponse]) error {
	ctx := stream.Context()
	if err := authorize(ctx, permBridge, ""); err != nil {
		return err
	}
	// Tell the bridge at once that its credentials are accepted: the
	// stream carries nothing else until a command, and a bridge that was
	// refused waits for this to call itself ready again.
	if err := stream.SendHeader(metadata.Pairs(bridgeAcceptedHeader, "accepted")); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil || hello.Bridge == "" {
		return status.Error(codes.InvalidArgument, "the first message of a bridge session must be hello with a bridge id")
	}
	b := &bridgeSession{
		id:      hello.Bridge,
		out:     make(chan *heraldv1.BridgeSessionResponse, 4096),
		done:    make(chan struct{}),
		entries: make(map[presenceKey]*heraldv1.ClientInfo),
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return status.Error(codes.Unavailable, "node shutting down")
	}
	s.sessions[b] = struct{}{}
	s.mu.Unlock()
	metricBridges.Inc()
	s.log.Debug("bridge attached", "bridge", b.id)
	// The bridge resolves channels with the core's namespaces, sent
	// before anything else (an older bridge ignores them).
	b.out <- &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Namespaces{Namespaces: s.nsList}}
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		recvErr <- s.bridgeRecv(ctx, stream, b)
	}()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, b)
		s.mu.Unlock()
		metricBridges.Dec()
		// The receive loop ends once the stream's context is done, which
		// happens only after this handler returns: wait for it elsewhere.
		go func() {
			<-recvDone
			s.dropPresence(b)
			s.log.Debug("bridge detached", "bridge", b.id)
		}()
	}()
	for {
		select {
		case cmd := <-b.out:
			if err := stream.Send(cmd); err != nil {
				return err
			}
		case err := <-recvErr:
			if err == io.EOF {
				return nil
			}
			return err
		case <-b.done:
			return b.err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// bridgeRecv applies a bridge's presence reports until its stream ends.
func (s *Server) bridgeRecv(ctx context.Context, stream grpc.BidiStreamingServer[heraldv1.BridgeSessionRequest, heraldv1.BridgeSessionResponse], b *bridgeSession) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if cmd := req.GetCommand(); cmd != nil {
			// A command POSTed to this bridge for a session it does not
			// hold: every bridge of every node gets it, the one holding
			// the session handles it.
			if err := s.forwardCommand(ctx, b, cmd); err != nil {
				return err
			}
			continue
		}
		up := req.GetPresence()
		if up == nil {
			continue
		}
		for _, ev := range up.Joins {
			ns, err := s.ns.Lookup(ev.Channel)
			if err != nil || !ns.Presence || ev.Client == nil || ev.Client.Client == "" {
				continue
			}
			k := presenceKey{ev.Channel, ev.Client.Client}
			if _, ok := b.entries[k]; ok {
				continue
			}
			if err := s.engine.AddPresence(ctx, ev.Channel, ev.Client, ns.JoinLeave); err != nil {
				return toStatus(s.log, err)
			}
			b.entries[k] = ev.Client
			s.clients.Add(1)
		}
		for _, ev := range up.Leaves {
			if ev.Client == nil {
				continue
			}
			k := presenceKey{ev.Channel, ev.Client.Client}
			ci, ok := b.entries[k]
			if !ok {
				continue
			}
			delete(b.entries, k)
			s.clients.Add(-1)
			ns, _ := s.ns.Lookup(ev.Channel)
			if err := s.engine.RemovePresence(ctx, ev.Channel, ci, ns != nil && ns.JoinLeave); err != nil {
				return toStatus(s.log, err)
			}
		}
	}
}

// maxForwardedFrames bounds the frames of one forwarded session command
// (a bridge sends at most its max_frame).
const maxForwardedFrames = 1 << 20

// forwardCommand passes a session command from bridge b to every bridge,
// through the engine (every node).
func (s *Server) forwardCommand(ctx context.Context, b *bridgeSession, cmd *heraldv1.SessionCommand) error {
	if cmd.Session == "" || len(cmd.Frames) > maxForwardedFrames {
		s.log.Debug("bridge forwarded a malformed session command", "bridge", b.id, "bytes", len(cmd.Frames))
		return nil
	}
	cmd.Origin = b.id
	if err := s.engine.Command(ctx, &heraldv1.BridgeSessionResponse{Msg: &heraldv1.BridgeSessionResponse_Command{Command: cmd}}); err != nil {
		s.log.Warn("forwarding a session command failed", "bridge", b.id, "err", err)
	}
	return nil
}

// dropPresence forgets every presence entry of a bridge that went away.
// It runs after the receive loop has ended (the stream's context is done).
func (s *Server) dropPresence(b *bridgeSession) {
	for k, ci := range b.entries {
		ns, _ := s.ns.Lookup(k.channel)
		_ = s.engine.RemovePresence(context.Background(), k.channel, ci, ns != nil && ns.JoinLeave)
		s.clients.Add(-1)
	}
	b.entries = nil
}
