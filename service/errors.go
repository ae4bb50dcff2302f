package service

import (
	"context"
	"errors"
	"log/slog"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/internal/codename"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// invalid returns an INVALID_ARGUMENT status whose message reaches the
// client as it is.
func invalid(err error) error { return status.Error(codes.InvalidArgument, err.Error()) }

// toStatus maps an error from the core to the gRPC status a client sees.
// Errors that are already statuses pass through; an engine's LimitError and
// UnavailableError reach the client with their message, other unavailable
// engines with a fixed one; anything unexpected is logged and reaches the
// client only as "internal error".
func toStatus(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var limit *engine.LimitError
	var unavailable *engine.UnavailableError
	switch {
	case errors.As(err, &limit):
		metricLimitRefusals.WithLabelValues(limit.Option).Inc()
		return status.Error(codes.ResourceExhausted, limit.Msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, ErrEpochMismatch):
		return status.Error(codes.FailedPrecondition, "since: "+ErrEpochMismatch.Error()+"; history before it is gone")
	case errors.As(err, &unavailable):
		return status.Error(codes.Unavailable, unavailable.Msg)
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, "engine unavailable; retry later")
	}
	log.Error("internal error", "err", err)
	return status.Error(codes.Internal, "internal error")
}

// codeName is the lower snake case name of err's gRPC code, as used in
// Error and metric labels (the bridge parses it back: internal/codename).
func codeName(err error) string { return codename.Of(status.Code(err)) }
