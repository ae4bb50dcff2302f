package service

import (
	"context"
	"errors"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/recovery"
)

// recoverPage is how many publications one history read of a recovery
// takes.
const recoverPage = 1000

// historyReader reads a channel's history from the engine for a
// recovery.
func historyReader(e Engine, channel string) recovery.Reader {
	return func(ctx context.Context, after *heraldv1.StreamPosition, limit int) (recovery.Page, error) {
		res, err := e.History(ctx, channel, HistoryQuery{Since: after, Limit: limit})
		if errors.Is(err, ErrEpochMismatch) {
			return recovery.Page{Position: res.Position}, recovery.ErrEpoch
		}
		return recovery.Page{Publications: res.Publications, Position: res.Position}, err
	}
}

// recover returns the channel's current position and, when since is set,
// every publication after since up to that position, or recovered=false
// when history cannot cover the gap (or since is of another epoch, a
// position the epoch never had, or names no epoch).
func (s *Server) recover(ctx context.Context, channel string, since *heraldv1.StreamPosition) (pos *heraldv1.StreamPosition, replay []*heraldv1.Publication, recovered bool, err error) {
	if since == nil || since.Epoch == "" {
		// Without an epoch the offset could belong to any life of the
		// channel: a client that lost its epoch is never told that it
		// recovered (it may be across a restart); it goes live from the
		// current position with recovered=false.
		res, err := s.engine.History(ctx, channel, HistoryQuery{})
		if err != nil {
			return nil, nil, false, err
		}
		return res.Position, nil, false, nil
	}
	out, pos, err := recovery.Recover(ctx, historyReader(s.engine, channel), since, 0, recoverPage,
		func(pubs []*heraldv1.Publication, _ *heraldv1.StreamPosition) error {
			replay = append(replay, pubs...)
			return nil
		})
	if err != nil {
		return nil, nil, false, err
	}
	if out != recovery.Recovered {
		return pos, nil, false, nil
	}
	return pos, replay, true, nil
}
