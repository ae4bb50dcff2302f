package hooks

import (
	"testing"
	"time"
)

// TestBreaker: closed → open after threshold failures in a row (a success
// between resets the count); open refuses until openFor has passed; then
// one probe at a time; a failed probe opens again, a dropped probe lets
// the next call probe, a good probe closes.
func TestBreaker(t *testing.T) {
	var changes []int
	b := &breaker{threshold: 3, openFor: time.Second, onChange: func(_, to int) { changes = append(changes, to) }}
	t0 := time.Unix(1000, 0)
	call := func(at time.Time, ok bool) (allowed, probe bool) {
		allowed, probe = b.allow(at)
		if allowed {
			b.done(probe, ok, at)
		}
		return allowed, probe
	}
	call(t0, false)
	call(t0, false)
	call(t0, true) // resets
	call(t0, false)
	call(t0, false)
	if b.current() != stateClosed {
		t.Fatal("opened before 3 failures in a row")
	}
	call(t0, false)
	if b.current() != stateOpen {
		t.Fatal("not open after 3 failures in a row")
	}
	if ok, _ := b.allow(t0.Add(999 * time.Millisecond)); ok {
		t.Fatal("allowed a call while open")
	}
	t1 := t0.Add(time.Second)
	ok, probe := b.allow(t1)
	if !ok || !probe || b.current() != stateHalfOpen {
		t.Fatalf("after openFor: allowed %v probe %v state %d", ok, probe, b.current())
	}
	if ok, _ := b.allow(t1); ok {
		t.Fatal("a second call went beside the probe")
	}
	b.drop(true)
	ok, probe = b.allow(t1)
	if !ok || !probe {
		t.Fatal("after a dropped probe the next call does not probe")
	}
	b.done(true, false, t1)
	if b.current() != stateOpen {
		t.Fatal("a failed probe did not open the circuit")
	}
	t2 := t1.Add(time.Second)
	if allowed, probe := call(t2, true); !allowed || !probe || b.current() != stateClosed {
		t.Fatalf("a good probe: allowed %v probe %v state %d", allowed, probe, b.current())
	}
	want := []int{stateOpen, stateHalfOpen, stateOpen, stateHalfOpen, stateClosed}
	if len(changes) != len(want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
	for i := range want {
		if changes[i] != want[i] {
			t.Fatalf("changes %v, want %v", changes, want)
		}
	}
}
