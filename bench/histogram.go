package bench

import (
	"encoding/json"
	"math"
	"math/bits"
	"sync"
)

// Histogram layout: values below 2*subCount are exact; above, each power of
// two is split into subCount linear buckets, so a value is reported with a
// relative error below 1/subCount (1.6%). Values are nanoseconds; anything
// above maxValue (about 2.4 hours) is clamped.
const (
	subBits    = 6
	subCount   = 1 << subBits
	maxShift   = 36
	numBuckets = (maxShift + 2) * subCount
	maxValue   = 1<<(maxShift+subBits+1) - 1
)

// bucketOf returns the index of v's bucket.
func bucketOf(v uint64) int {
	if v < 2*subCount {
		return int(v)
	}
	if v > maxValue {
		v = maxValue
	}
	shift := bits.Len64(v) - subBits - 1
	return shift*subCount + int(v>>shift)
}

// bucketHigh returns the largest value that falls into bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*subCount {
		return uint64(i)
	}
	shift := i/subCount - 1
	m := uint64(i%subCount + subCount)
	return (m+1)<<shift - 1
}

// Histogram counts values (nanoseconds) in fixed log-linear buckets.
// Recording never allocates. The zero value is empty and ready to use. A
// Histogram is not safe for concurrent use; see recorder.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64
	min    uint64
	max    uint64
}

// Record adds one value; negative values count as 0.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	h.counts[bucketOf(u)]++
	if h.n == 0 || u < h.min {
		h.min = u
	}
	if u > h.max {
		h.max = u
	}
	h.n++
	h.sum += float64(u)
}

// Count returns the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest value recorded, exactly.
func (h *Histogram) Max() int64 { return int64(h.max) }

// Min returns the smallest value recorded, exactly.
func (h *Histogram) Min() int64 { return int64(h.min) }

// Mean returns the mean of the values recorded.
func (h *Histogram) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the value below or at which a fraction q of the recorded
// values lie (the upper bound of its bucket, within [Min, Max]).
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i]
		if cum >= rank {
			v := bucketHigh(i)
			v = min(max(v, h.min), h.max)
			return int64(v)
		}
	}
	return int64(h.max)
}

// Merge adds o's values to h, bucket by bucket, so that quantiles of the
// merged histogram are those of all values together.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// histWire is the sparse form of a Histogram sent between processes.
type histWire struct {
	N   uint64      `json:"n"`
	Sum float64     `json:"sum"`
	Min uint64      `json:"min"`
	Max uint64      `json:"max"`
	B   [][2]uint64 `json:"b,omitempty"` // [bucket, count]
}

// MarshalJSON writes the non-empty buckets only.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	w := histWire{N: h.n, Sum: h.sum, Min: h.min, Max: h.max}
	for i, c := range h.counts {
		if c != 0 {
			w.B = append(w.B, [2]uint64{uint64(i), c})
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var w histWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*h = Histogram{n: w.N, sum: w.Sum, min: w.Min, max: w.Max}
	for _, p := range w.B {
		if p[0] < numBuckets {
			h.counts[p[0]] += p[1]
		}
	}
	return nil
}

// recorder is a Histogram sharded for concurrent recording: a client
// records into shard(idx) under that shard's lock, held once per WebSocket
// message however many frames it packs. With a few shards per core the
// locks are almost never contended.
type recorder struct {
	shards []recShard
}

type recShard struct {
	mu   sync.Mutex
	h    Histogram // latency from the payload's "t"
	hs   Histogram // latency from its "s" (the send), where it has one
	last int64     // latest receive time, UnixNano; guarded by mu
	_    [64]byte
}

func newRecorder(n int) *recorder {
	if n < 1 {
		n = 1
	}
	return &recorder{shards: make([]recShard, n)}
}

func (r *recorder) shard(i int) *recShard { return &r.shards[i%len(r.shards)] }

// record records the latency of a publication frame received at now: from
// its "t", and from its send time where it has one; and now as the latest
// receipt. ok is false when the frame has no "t". s.mu must be held.
func (s *recShard) record(now int64, frame []byte) (ok bool) {
	t, sent, ok := parseStamps(frame)
	if !ok {
		return false
	}
	s.h.Record(now - t)
	if sent != 0 {
		s.hs.Record(now - sent)
	}
	s.last = max(s.last, now)
	return true
}

// snapshot merges every shard into one histogram of each kind and returns
// the latest receive time. send is nil when no payload carried a send time.
func (r *recorder) snapshot() (lat, send *Histogram, last int64) {
	lat, send = new(Histogram), new(Histogram)
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		lat.Merge(&s.h)
		send.Merge(&s.hs)
		last = max(last, s.last)
		s.mu.Unlock()
	}
	if send.Count() == 0 {
		send = nil
	}
	return lat, send, last
}
