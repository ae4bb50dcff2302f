package wsbridge

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// TestExpiriesHeap arms, re-arms and cancels the deadlines of many
// sessions and checks after every step that the heap is ordered and that
// each session knows its place; then that taking the earliest one after
// the other yields exactly the sessions still armed, by deadline, each with
// the identity and generation of its last arming. (Expiry as a client sees
// it, the close and the refreshes, is in TestTokenExpiryAndRefresh and
// TestHookRefresh.)
func TestExpiriesHeap(t *testing.T) {
	var e expiries
	rng := rand.New(rand.NewPCG(1, 2))
	ss := make([]*session, 300)
	want := map[*session]int64{} // the deadlines, on monoNow's clock
	ids := map[*session]*identity{}
	check := func(step string) {
		t.Helper()
		if len(e.heap) != len(want) {
			t.Fatalf("%s: heap holds %d, want %d", step, len(e.heap), len(want))
		}
		for i, s := range e.heap {
			if int(s.expIdx) != i+1 {
				t.Fatalf("%s: session at %d has expIdx %d", step, i, s.expIdx)
			}
			if p := (i - 1) / 2; i > 0 && e.heap[p].expAt > s.expAt {
				t.Fatalf("%s: heap order broken at %d", step, i)
			}
			if at, ok := want[s]; !ok || s.expAt < at || s.expAt > at+int64(time.Minute) {
				t.Fatalf("%s: session at %d has deadline %d, want %d (armed %v)", step, i, s.expAt, at, ok)
			}
		}
	}
	for i := range ss {
		ss[i] = &session{}
	}
	for round := 0; round < 3; round++ {
		for _, s := range ss {
			switch rng.IntN(4) {
			case 0:
				e.cancel(s)
				delete(want, s)
				if s.expIdx != 0 || s.expID != nil {
					t.Fatal("a cancelled session keeps its place")
				}
			default:
				d := time.Hour + time.Duration(rng.IntN(1000))*time.Millisecond // the timer never fires here
				id := &identity{}
				s.expGen++
				want[s] = monoNow() + int64(d)
				e.arm(s, id, s.expGen, d)
				ids[s] = id
			}
			check("step")
		}
	}
	var order []int64
	e.mu.Lock()
	for len(e.heap) > 0 {
		s := e.heap[0]
		if s.expID != ids[s] || s.expArmGen != s.expGen {
			t.Fatal("a session's identity or generation is not its last arming's")
		}
		order = append(order, s.expAt)
		delete(want, s)
		e.removeLocked(s)
	}
	e.mu.Unlock()
	if len(want) != 0 {
		t.Fatalf("%d armed sessions were not in the heap", len(want))
	}
	if !sort.SliceIsSorted(order, func(i, j int) bool { return order[i] < order[j] }) {
		t.Fatal("the earliest-first order is not by deadline")
	}
	if e.timer == nil || e.timer.Stop() {
		t.Fatal("the timer of an empty heap is still set")
	}
}
