package node

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-io/herald/service"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// flakyEngine is an engine whose Ping fails while down is set; nothing
// else of it is called.
type flakyEngine struct {
	service.Engine
	down atomic.Bool
}

func (e *flakyEngine) Ping(context.Context) error {
	if e.down.Load() {
		return errors.New("connection refused")
	}
	return nil
}

// TestHealthFollowsEngine: gRPC health turns NOT_SERVING while the engine's
// Ping fails, and back.
func TestHealthFollowsEngine(t *testing.T) {
	e := &flakyEngine{}
	n := &Node{engine: e, health: health.NewServer(), log: slog.New(slog.DiscardHandler)}
	n.engineUp.Store(true)
	n.setServing()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.pollEngine(ctx, 5*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := n.health.Check(ctx, &healthpb.HealthCheckRequest{Service: "herald.v1.HeraldService"})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	wait := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); status() != want; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("health stayed %v, want %v", status(), want)
			}
		}
	}
	wait(healthpb.HealthCheckResponse_SERVING)
	e.down.Store(true)
	wait(healthpb.HealthCheckResponse_NOT_SERVING)
	e.down.Store(false)
	wait(healthpb.HealthCheckResponse_SERVING)
}
