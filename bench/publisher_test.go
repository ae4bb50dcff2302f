package bench

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A publisher that falls behind (every call takes 20 ms, the schedule
// wants one every 2 ms) stamps its payloads with their due times when
// latency counts from the schedule, so the wait shows in the latency; with
// send times the stamps only start when a call can go out.
func TestPublisherStampsFromSchedule(t *testing.T) {
	for _, fromSchedule := range []bool{true, false} {
		var mu sync.Mutex
		var stamps, sends []int64
		p := &callPublisher{
			call: func(ctx context.Context, _ int, _ string, payload []byte) error {
				ts, ok := parseT(payload)
				if !ok {
					t.Errorf("payload %q has no time", payload)
				}
				_, sent, _ := parseStamps(payload)
				hasSent := sent != 0
				if hasSent != fromSchedule {
					t.Errorf("fromSchedule %v: payload %q carries a send time: %v", fromSchedule, payload, hasSent)
				}
				if len(payload) != 64 {
					t.Errorf("payload %q: %d bytes, want 64", payload, len(payload))
				}
				mu.Lock()
				stamps = append(stamps, ts)
				if hasSent {
					sends = append(sends, sent)
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				return nil
			},
			channel:      func(int) string { return "c" },
			size:         64,
			workers:      1,
			fromSchedule: fromSchedule,
		}
		r := p.run(context.Background(), 500, 20*time.Millisecond) // 10 publications
		if r.sent != 10 || len(stamps) != 10 {
			t.Fatalf("fromSchedule %v: sent %d, stamped %d, want 10", fromSchedule, r.sent, len(stamps))
		}
		// The 10th publication was due 18 ms after the first; it went out
		// after nine 20 ms calls.
		gap := time.Duration(stamps[9] - stamps[0])
		if fromSchedule && gap != 18*time.Millisecond {
			t.Errorf("from the schedule: stamps 18 ms apart expected, got %v", gap)
		}
		if !fromSchedule && gap < 9*20*time.Millisecond {
			t.Errorf("from send times: stamps at least 180 ms apart expected, got %v", gap)
		}
		// From the schedule, each payload also carries its send time: not
		// before it was due, and the 10th after nine calls.
		if fromSchedule {
			for i := range sends {
				if sends[i] < stamps[i] {
					t.Errorf("publication %d sent %v before it was due", i, time.Duration(stamps[i]-sends[i]))
				}
			}
			if gap := time.Duration(sends[9] - sends[0]); gap < 9*20*time.Millisecond {
				t.Errorf("send times 180 ms apart at least expected, got %v", gap)
			}
		}
	}
}
