package wsbridge

import (
	"testing"
	"time"
)

// TestAllowRequest checks the session's request bucket against what
// rate.Limiter's Allow did: full at connect with 4x request_rate (at
// least 4), a refusal takes nothing, and tokens come back at request_rate
// per second, never beyond the burst.
func TestAllowRequest(t *testing.T) {
	for _, rate := range []float64{0.5, 2, 50} {
		b := &Bridge{}
		b.cfg.RequestRate = rate
		s := &session{b: b}
		burst := 4 * int(max(rate, 1))
		s.tokens, s.tokensAt = s.requestBurst(), monoNow()
		for i := 0; i < burst; i++ {
			if !s.allowRequest() {
				t.Fatalf("rate %g: request %d of a burst of %d refused", rate, i+1, burst)
			}
		}
		for i := 0; i < 3; i++ {
			if s.allowRequest() {
				t.Fatalf("rate %g: request beyond the burst allowed", rate)
			}
		}
		// As if the time for 1.5 tokens had passed since the last one
		// taken: one more request, not two.
		s.tokensAt -= int64(1.5 / rate * float64(time.Second))
		if !s.allowRequest() {
			t.Fatalf("rate %g: no token back after 1.5 tokens' time", rate)
		}
		if s.allowRequest() {
			t.Fatalf("rate %g: a second token after 1.5 tokens' time", rate)
		}
		// A long idle spell fills the bucket to the burst, no more.
		s.tokensAt -= int64(time.Hour)
		n := 0
		for s.allowRequest() {
			n++
		}
		if n != burst {
			t.Fatalf("rate %g: %d requests after an hour idle, want the burst %d", rate, n, burst)
		}
	}
}
