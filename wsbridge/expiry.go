package wsbridge

import (
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
	heap  []*session // s.expIdx-1 is s's index
	timer *time.Timer
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
	s.expIdx = int32(len(e.heap)) + 1
	e.heap = append(e.heap, s)
	e.up(len(e.heap) - 1)
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
	i := int(s.expIdx) - 1
	last := len(e.heap) - 1
	if i != last {
		e.swap(i, last)
	}
	e.heap[last] = nil
	e.heap = e.heap[:last]
	s.expIdx, s.expID = 0, nil
	if i != last {
		e.down(i)
		e.up(i)
	}
	if len(e.heap) == 0 {
		if e.timer != nil {
			e.timer.Stop()
		}
		if cap(e.heap) > 64 {
			e.heap = nil // do not keep a crowd's heap on an empty bridge
		}
	}
}

func (e *expiries) swap(i, j int) {
	h := e.heap
	h[i], h[j] = h[j], h[i]
	h[i].expIdx, h[j].expIdx = int32(i)+1, int32(j)+1
}

func (e *expiries) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if e.heap[p].expAt <= e.heap[i].expAt {
			return
		}
		e.swap(i, p)
		i = p
	}
}

func (e *expiries) down(i int) {
	n := len(e.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && e.heap[r].expAt < e.heap[l].expAt {
			m = r
		}
		if e.heap[i].expAt <= e.heap[m].expAt {
			return
		}
		e.swap(i, m)
		i = m
	}
}
