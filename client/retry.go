package client

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc/codes"
)

// Retry says how the client retries. Its zero value is the default.
//
// Publish retries a call that failed with UNAVAILABLE (node unreachable,
// restarting or draining, engine unavailable) or whose attempt timed out
// (DEADLINE_EXCEEDED while the caller's context is still live). It is
// safe because every publish carries an idempotency key: a node that
// committed the first attempt answers the retry with the original
// position and `Duplicate`, and delivers nothing twice, as long as the
// retry comes within the node's dedupe window (limits.dedupe_window, 2
// minutes by default) and, across a node restart, the engine keeps its
// dedupe keys (Redis does; the memory engine starts afresh, in a new
// epoch).
//
// Between attempts the client waits a jittered exponential backoff: the
// n-th wait is drawn at random from [d/2, d) where d = Initial·2ⁿ, at most
// Max. The caller's context bounds everything: when it ends, the call
// returns the last attempt's error.
type Retry struct {
	// Attempts bounds the attempts of one Publish, and the consecutive
	// failed connections of a Stream before it gives up. Default 10
	// (about 20 s of backoff with the default delays); 1 disables
	// retries; a negative value retries until the context ends.
	Attempts int
	// Initial is the first backoff. Default 100ms.
	Initial time.Duration
	// Max bounds the backoff. Default 5s.
	Max time.Duration
	// AttemptTimeout bounds one attempt of Publish, so that a connection
	// that went silent is given up and the publish retried. Default 10s;
	// negative for none.
	AttemptTimeout time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts == 0 {
		r.Attempts = 10
	}
	if r.Initial <= 0 {
		r.Initial = 100 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 5 * time.Second
	}
	if r.Max < r.Initial {
		r.Max = r.Initial
	}
	if r.AttemptTimeout == 0 {
		r.AttemptTimeout = 10 * time.Second
	}
	return r
}

// exhausted reports whether n attempts (or failures) are the last allowed.
func (r Retry) exhausted(n int) bool { return r.Attempts > 0 && n >= r.Attempts }

// backoff yields the waits of one sequence of retries.
type backoff struct {
	r Retry
	n int
}

func (b *backoff) next() time.Duration {
	d := b.r.Initial
	for i := 0; i < b.n && d < b.r.Max; i++ {
		d *= 2
	}
	d = min(d, b.r.Max)
	b.n++
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + rand.N(half)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx ends, and reports whether it waited.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// transient reports whether a call that failed with code may succeed when
// made again: the node was unreachable, restarting or draining, or the
// attempt (not the caller's context) timed out.
func transient(ctx context.Context, code codes.Code) bool {
	if ctx.Err() != nil {
		return false
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
