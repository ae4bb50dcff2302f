package wsbridge

import (
	"container/heap"
	"sync"
	"time"
)

// expiries acts on the sessions' identity expiries with one timer for the
// whole bridge: each session with an expiring identity has a place in a
// min-heap ordered by deadline, and the timer is set for the earliest. A
// timer per session (time.AfterFunc and its closure) would cost an idle
// connection about 130 bytes; a place in the heap costs 8.
//
// The session fields exp* are guarded by mu.
type expiries struct {
	mu    sync.Mutex
	heap  byDeadline // s.expIdx-1 is s's index
	timer *time.Timer
}

// byDeadline is the heap.Interface of the sessions' deadlines; each
// session knows its place (expIdx, 0 when out), so that heap.Remove and
// heap.Fix find it.
type byDeadline []*session

func (h byDeadline) Len() int           { return len(h) }
func (h byDeadline) Less(i, j int) bool { return h[i].expAt < h[j].expAt }
func (h byDeadline) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].expIdx, h[j].expIdx = int32(i)+1, int32(j)+1
}
func (h *byDeadline) Push(x any) {
	s := x.(*session)
	s.expIdx = int32(len(*h)) + 1
	*h = append(*h, s)
}
func (h *byDeadline) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.expIdx = 0
	return s
}

// monoBase is the origin of the deadlines, which are read on the
// monotonic clock (as a timer's duration is): a change of the wall clock
// moves no expiry.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

// arm queues s to expire identity id in d; gen is the session's expGen,
// handed to session.expired. A deadline queued before is replaced.
func (e *expiries) arm(s *session, id *identity, gen uint32, d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.expIdx > 0 {
		e.removeLocked(s)
	}
	now := monoNow()
	s.expAt, s.expID, s.expArmGen = now+int64(d), id, gen
	heap.Push(&e.heap, s)
	if e.heap[0] == s {
		e.resetLocked(now)
	}
}

// cancel drops s's deadline, if it has one.
func (e *expiries) cancel(s *session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.expIdx > 0 {
		e.removeLocked(s)
	}
}

// fire runs session.expired, each in a goroutine of its own (as
// time.AfterFunc would), for every session whose deadline has passed, and
// sets the timer for the next. A timer that fires early (a Reset racing
// with it) finds nothing due and sets itself again.
func (e *expiries) fire() {
	type due struct {
		s   *session
		id  *identity
		gen uint32
	}
	var fired []due
	e.mu.Lock()
	now := monoNow()
	for len(e.heap) > 0 && e.heap[0].expAt <= now {
		s := e.heap[0]
		fired = append(fired, due{s, s.expID, s.expArmGen})
		e.removeLocked(s)
	}
	if len(e.heap) > 0 {
		e.resetLocked(now)
	}
	e.mu.Unlock()
	for _, d := range fired {
		go d.s.expired(d.id, d.gen)
	}
}

// resetLocked sets the timer for the earliest deadline.
func (e *expiries) resetLocked(now int64) {
	d := time.Duration(max(e.heap[0].expAt-now, 0))
	if e.timer == nil {
		e.timer = time.AfterFunc(d, e.fire)
		return
	}
	e.timer.Reset(d)
}

// removeLocked takes s out of the heap; its timer is left set when s was
// the earliest (it then fires early, finds nothing due, and is set again),
// and stopped when nothing is left.
func (e *expiries) removeLocked(s *session) {
	heap.Remove(&e.heap, int(s.expIdx)-1)
	s.expID = nil
	if len(e.heap) == 0 {
		if e.timer != nil {
			e.timer.Stop()
		}
		if cap(e.heap) > 64 {
			e.heap = nil // do not keep a crowd's heap on an empty bridge
		}
	}
}
