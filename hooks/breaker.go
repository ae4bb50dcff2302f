package hooks

import (
	"sync"
	"time"
)

// Circuit states, as the herald_hook_circuit_state gauge reports them.
const (
	stateClosed   = 0 // calls are made
	stateHalfOpen = 1 // one call probes the backend; the others are refused
	stateOpen     = 2 // every call is refused at once
)

// breaker is a circuit breaker: it opens after threshold failures in a
// row, stays open for openFor, then lets one call probe; the probe's
// success closes it, its failure opens it again. Safe for concurrent use.
type breaker struct {
	threshold int
	openFor   time.Duration
	onChange  func(from, to int) // called outside mu

	mu       sync.Mutex
	state    int
	fails    int
	openedAt time.Time
	probing  bool
}

// allow reports whether a call may be made now, and whether it is the
// probe of a half-open circuit. Every allowed call must be followed by
// done or drop.
func (b *breaker) allow(now time.Time) (ok, probe bool) {
	b.mu.Lock()
	from := b.state
	switch b.state {
	case stateClosed:
		b.mu.Unlock()
		return true, false
	case stateOpen:
		if now.Sub(b.openedAt) < b.openFor {
			b.mu.Unlock()
			return false, false
		}
		b.state = stateHalfOpen
	}
	if b.probing {
		b.mu.Unlock()
		return false, false
	}
	b.probing = true
	to := b.state
	b.mu.Unlock()
	if from != to {
		b.onChange(from, to)
	}
	return true, true
}

// done records a call's outcome.
func (b *breaker) done(probe, ok bool, now time.Time) {
	b.mu.Lock()
	from := b.state
	if probe {
		b.probing = false
	}
	switch {
	case ok:
		b.fails = 0
		if probe || b.state == stateHalfOpen {
			b.state = stateClosed
		}
	case probe || b.state == stateHalfOpen:
		b.state, b.openedAt = stateOpen, now
	default:
		b.fails++
		if b.state == stateClosed && b.fails >= b.threshold {
			b.state, b.openedAt = stateOpen, now
		}
	}
	to := b.state
	b.mu.Unlock()
	if from != to {
		b.onChange(from, to)
	}
}

// drop forgets an allowed call that had no outcome (it was not made, or
// its caller went away): a probe's turn passes to the next call.
func (b *breaker) drop(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// current returns the state.
func (b *breaker) current() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}
