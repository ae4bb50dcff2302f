package recovery

import (
	"context"
	"errors"
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// history is a channel's retained publications oldest..top in one epoch.
func history(epoch string, oldest, top uint64) Reader {
	return func(_ context.Context, after *heraldv1.StreamPosition, limit int) (Page, error) {
		pos := &heraldv1.StreamPosition{Offset: top, Epoch: epoch}
		if after.Epoch != "" && after.Epoch != epoch {
			return Page{Position: pos}, ErrEpoch
		}
		var pubs []*heraldv1.Publication
		for o := max(after.Offset+1, oldest); o <= top && len(pubs) < limit; o++ {
			pubs = append(pubs, &heraldv1.Publication{Offset: o, Epoch: epoch})
		}
		return Page{Publications: pubs, Position: pos}, nil
	}
}

func TestRecover(t *testing.T) {
	for _, tc := range []struct {
		name           string
		read           Reader
		since          *heraldv1.StreamPosition
		until          uint64
		want           Outcome
		first, n, wpos uint64
	}{
		{"all, in pages of 3", history("e", 1, 10), &heraldv1.StreamPosition{Offset: 2, Epoch: "e"}, 0, Recovered, 3, 8, 10},
		{"nothing missed", history("e", 1, 10), &heraldv1.StreamPosition{Offset: 10, Epoch: "e"}, 0, Recovered, 0, 0, 10},
		{"up to until", history("e", 1, 10), &heraldv1.StreamPosition{Offset: 2, Epoch: "e"}, 4, Recovered, 3, 3, 10}, // one page of 3: 3..5
		{"gap older than history", history("e", 5, 10), &heraldv1.StreamPosition{Offset: 2, Epoch: "e"}, 0, Gap, 0, 0, 10},
		{"another epoch", history("e", 1, 10), &heraldv1.StreamPosition{Offset: 2, Epoch: "old"}, 0, EpochChanged, 0, 0, 10},
		{"beyond the position", history("e", 1, 10), &heraldv1.StreamPosition{Offset: 12, Epoch: "e"}, 0, Beyond, 0, 0, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			out, pos, err := Recover(context.Background(), tc.read, tc.since, tc.until, 3, func(pubs []*heraldv1.Publication, _ *heraldv1.StreamPosition) error {
				for _, p := range pubs {
					got = append(got, p.Offset)
				}
				return nil
			})
			if err != nil || out != tc.want || pos.GetOffset() != tc.wpos {
				t.Fatalf("outcome %v at %v (%v), want %v at %d", out, pos, err, tc.want, tc.wpos)
			}
			if uint64(len(got)) != tc.n || (tc.n > 0 && got[0] != tc.first) {
				t.Fatalf("handed %v, want %d from %d", got, tc.n, tc.first)
			}
			for i := 1; i < len(got); i++ {
				if got[i] != got[i-1]+1 {
					t.Fatalf("not contiguous: %v", got)
				}
			}
		})
	}
	boom := errors.New("boom")
	if _, _, err := Recover(context.Background(), history("e", 1, 10), &heraldv1.StreamPosition{Offset: 1, Epoch: "e"}, 0, 3,
		func([]*heraldv1.Publication, *heraldv1.StreamPosition) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
}

func TestSeam(t *testing.T) {
	s := Seam{Offset: 5, Epoch: "e"}
	for _, tc := range []struct {
		off   uint64
		epoch string
		want  Step
	}{{4, "e", Duplicate}, {5, "e", Duplicate}, {6, "e", Next}, {6, "e", Duplicate}, {8, "e", Broken}, {7, "f", NewEpoch}, {7, "e", Next}} {
		if got := s.Step(&heraldv1.Publication{Offset: tc.off, Epoch: tc.epoch}); got != tc.want {
			t.Fatalf("%d/%s: %v, want %v", tc.off, tc.epoch, got, tc.want)
		}
	}
	if s.Offset != 7 {
		t.Fatalf("seam at %d, want 7", s.Offset)
	}
	// A stream that has seen nothing takes up the epoch of a first
	// publication; anything else of another epoch breaks it.
	empty := Seam{Offset: 0, Epoch: "none"}
	if got := empty.Step(&heraldv1.Publication{Offset: 1, Epoch: "new"}); got != Next || empty.Epoch != "new" {
		t.Fatalf("first publication: %v, seam %+v", got, empty)
	}
	empty = Seam{Offset: 0, Epoch: "none"}
	if got := empty.Step(&heraldv1.Publication{Offset: 2, Epoch: "new"}); got != NewEpoch {
		t.Fatalf("second publication of another epoch: %v", got)
	}
}
