// Package recovery is the one implementation of resuming a channel's
// stream from a position: paging its history up to the live seam
// (Recover), then continuing with live publications without a duplicate or
// a gap (Seam). The core's Subscribe and SubscribeMany, the core hub's gap
// filling and the bridge's resume all use it, each with its own way of
// reading history (a Reader).
package recovery

import (
	"context"
	"errors"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// ErrEpoch is what a Reader returns (with the channel's current position
// in its Page) when the position it was asked to read after belongs to
// another epoch of the channel.
var ErrEpoch = errors.New("recovery: the position belongs to another epoch of the channel")

// Page is one read of history: publications after the position asked
// for, oldest first, and the channel's current position.
type Page struct {
	Publications []*heraldv1.Publication
	Position     *heraldv1.StreamPosition
}

// Reader reads at most limit publications after a position.
type Reader func(ctx context.Context, after *heraldv1.StreamPosition, limit int) (Page, error)

// Outcome says how Recover ended.
type Outcome uint8

const (
	// Recovered: every publication after since up to the end was handed
	// over (possibly none).
	Recovered Outcome = iota
	// EpochChanged: since is of another epoch; history before the current
	// one is gone.
	EpochChanged
	// Beyond: since is past the channel's position in its epoch: a position
	// this epoch never had.
	Beyond
	// Gap: history no longer reaches back to since.
	Gap
)

// Recover hands fn, page by page and in order, every publication after
// since up to the end, with the position each page reported: the end is
// until, or with until 0 the channel's position as the latest page
// reports it (a moving target: publications made while paging are
// included). Pages are contiguous: the first publication of each follows
// the last one handed over. A page may hold publications past until.
// It returns how it ended and the channel's position as last read (the
// current position when the epoch changed); an error from read or fn
// ends it at once. The Reader decides what continues an epoch (ErrEpoch
// when it does not): an engine lets offset 0 of a channel's empty epoch
// continue into the epoch its first publication starts.
func Recover(ctx context.Context, read Reader, since *heraldv1.StreamPosition, until uint64, limit int,
	fn func(pubs []*heraldv1.Publication, pos *heraldv1.StreamPosition) error) (Outcome, *heraldv1.StreamPosition, error) {
	from := &heraldv1.StreamPosition{Offset: since.GetOffset(), Epoch: since.GetEpoch()}
	for first := true; ; first = false {
		pg, err := read(ctx, from, limit)
		if errors.Is(err, ErrEpoch) {
			return EpochChanged, pg.Position, nil
		}
		if err != nil {
			return 0, nil, err
		}
		pos := pg.Position
		if first && from.Offset > pos.GetOffset() {
			return Beyond, pos, nil
		}
		end := until
		if end == 0 {
			end = pos.GetOffset()
		}
		if from.Offset >= end {
			return Recovered, pos, nil
		}
		pubs := pg.Publications
		if len(pubs) == 0 || pubs[0].Offset != from.Offset+1 {
			return Gap, pos, nil
		}
		if err := fn(pubs, pos); err != nil {
			return 0, pos, err
		}
		from.Offset, from.Epoch = pubs[len(pubs)-1].Offset, pos.GetEpoch()
		if from.Offset >= end {
			return Recovered, pos, nil
		}
	}
}

// Seam is a stream's position once its replay is done: live publications
// at or before it were delivered already, and the next one must follow it
// directly, in its epoch.
type Seam struct {
	Offset uint64
	Epoch  string
}

// Step says what a live publication is to a Seam.
type Step uint8

const (
	// Next follows the seam directly: deliver it (the seam moves to it).
	Next Step = iota
	// Duplicate is at or before the seam: delivered already, skip it.
	Duplicate
	// Broken comes after a missing publication: continuity is lost.
	Broken
	// NewEpoch is of another epoch: history was lost, continuity too.
	NewEpoch
)

// Step classifies pub, and moves the seam to it when it is Next. A seam
// at offset 0 (a stream that has seen nothing, typically in the empty
// epoch of a channel without state) takes up the epoch of a first
// publication (offset 1): it missed nothing, since a stream is registered
// for deliveries before it reads its position.
func (s *Seam) Step(pub *heraldv1.Publication) Step {
	switch {
	case pub.Epoch != s.Epoch && s.Offset == 0 && pub.Offset == 1:
		s.Epoch = pub.Epoch // and it is Next
	case pub.Epoch != s.Epoch:
		return NewEpoch
	case pub.Offset <= s.Offset:
		return Duplicate
	case pub.Offset != s.Offset+1:
		return Broken
	}
	s.Offset = pub.Offset
	return Next
}
