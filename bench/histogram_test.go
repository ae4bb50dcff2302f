package bench

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketsAreContiguous(t *testing.T) {
	prevHigh := int64(-1)
	for i := 0; i < numBuckets; i++ {
		high := int64(bucketHigh(i))
		if high <= prevHigh {
			t.Fatalf("bucket %d high %d <= previous %d", i, high, prevHigh)
		}
		low := prevHigh + 1
		if got := bucketOf(uint64(low)); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", low, got, i)
		}
		if got := bucketOf(uint64(high)); got != i {
			t.Fatalf("bucketOf(%d) = %d, want %d", high, got, i)
		}
		prevHigh = high
	}
	if prevHigh != maxValue {
		t.Fatalf("last bucket ends at %d, want %d", prevHigh, maxValue)
	}
	if got := bucketOf(1 << 62); got != numBuckets-1 {
		t.Fatalf("huge value in bucket %d, want the last", got)
	}
}

func TestQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values []int64
		q      float64
		want   int64
	}{
		{"empty", nil, 0.5, 0},
		{"one", []int64{42}, 0.99, 42},
		{"exact small", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.5, 5},
		{"p90 small", []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
		{"max", []int64{1, 2, 3, 1000000}, 1, 1000000},
		{"negative is zero", []int64{-5}, 0.5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Histogram
			for _, v := range tt.values {
				h.Record(v)
			}
			if got := h.Quantile(tt.q); got != tt.want {
				t.Fatalf("Quantile(%v) = %d, want %d", tt.q, got, tt.want)
			}
		})
	}
}

// TestQuantileError checks the relative error bound against exact
// percentiles of random latencies spanning microseconds to seconds.
func TestQuantileError(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]int64, 100000)
	for i := range vals {
		vals[i] = int64(r.ExpFloat64() * 5e6) // mean 5 ms
		h.Record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/subCount+1 {
			t.Errorf("q%v = %d, exact %d: outside the 1/%d error bound", q, got, exact, subCount)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Min() != vals[0] {
		t.Errorf("min/max = %d/%d, want %d/%d", h.Min(), h.Max(), vals[0], vals[len(vals)-1])
	}
}

func TestMergeEqualsCombined(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var a, b, all Histogram
	for i := 0; i < 5000; i++ {
		v := int64(r.IntN(1e9))
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(nil)
	m.Merge(&Histogram{})
	if m != all {
		t.Fatal("merged histogram differs from the one that saw every value")
	}
}

func TestHistogramJSONRoundTrip(t *testing.T) {
	var h Histogram
	for _, v := range []int64{0, 1, 200, 5e6, 5e6, 3e9} {
		h.Record(v)
	}
	b, err := json.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var back Histogram
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != h {
		t.Fatalf("round trip changed the histogram: %s", b)
	}
}

func TestRecorderSnapshot(t *testing.T) {
	r := newRecorder(4)
	for i := 0; i < 8; i++ {
		s := r.shard(i)
		s.mu.Lock()
		s.h.Record(int64(i))
		s.last = max(s.last, int64(100+i))
		s.mu.Unlock()
	}
	h, send, last := r.snapshot()
	if h.Count() != 8 || h.Max() != 7 || last != 107 {
		t.Fatalf("snapshot: count %d max %d last %d", h.Count(), h.Max(), last)
	}
	if send != nil {
		t.Fatalf("no payload had a send time, got a histogram of %d", send.Count())
	}
}

// A frame whose payload carries a send time is counted from its "t" and
// from its "s"; one without only from its "t"; one without "t" not at all.
func TestRecordBothLatencies(t *testing.T) {
	r := newRecorder(1)
	s := r.shard(0)
	frame := func(p []byte) []byte {
		return append(append([]byte(`{"pub":{"channel":"user:bench-1","offset":"7","epoch":"e","data":`), p...), "}}"...)
	}
	s.mu.Lock()
	ok1 := s.record(1000, frame(appendStamped(nil, 100, 400, 64)))
	ok2 := s.record(1000, frame(appendPayload(nil, 200, 64)))
	ok3 := s.record(1000, []byte(`{"pub":{"channel":"c","data":{"x":1}}}`))
	s.mu.Unlock()
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("record: %v %v %v, want true true false", ok1, ok2, ok3)
	}
	h, send, last := r.snapshot()
	if last != 1000 {
		t.Errorf("latest receipt %d, want 1000", last)
	}
	if h.Count() != 2 || h.Max() != 900 || h.Min() != 800 {
		t.Errorf("from t: count %d, min %d, max %d; want 2, 800, 900", h.Count(), h.Min(), h.Max())
	}
	if send == nil || send.Count() != 1 || send.Max() != 600 {
		t.Errorf("from s: %+v, want one of 600", send)
	}
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(int64(i) * 997)
	}
}
