package bench

import (
	"encoding/json"
	"strconv"
	"testing"
)

func TestParseT(t *testing.T) {
	tests := []struct {
		frame string
		want  int64
		ok    bool
	}{
		{`{"pub":{"channel":"bench","offset":"5","epoch":"ab","data":{"t":1732600000000000000,"p":"xx"}}}`, 1732600000000000000, true},
		{`{"t": 42}`, 42, true},
		{`{"t":0}`, 0, true},
		{`{"pub":{"channel":"bench","data":{"p":"x"}}}`, 0, false},
		{`{"t":"12"}`, 0, false},
		{`{"t":`, 0, false},
		{`{"t":99999999999999999999}`, 0, false},
		{`{"t":9223372036854775807}`, 9223372036854775807, true},
		{`{"t":9223372036854775808}`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.frame, func(t *testing.T) {
			got, ok := parseT([]byte(tt.frame))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("parseT = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseOffset(t *testing.T) {
	tests := []struct {
		frame string
		want  uint64
		ok    bool
	}{
		{`{"pub":{"channel":"bench","offset":"5","epoch":"ab","data":{"t":1}}}`, 5, true},
		{`{"pub":{"channel":"user:bench-1","offset":"18446744073709551615","data":{}}}`, 18446744073709551615, true},
		{`{"pub":{"channel":"bench","offset":"18446744073709551616","data":{}}}`, 0, false},
		{`{"pub":{"channel":"bench","data":{"offset":"7"}}}`, 7, true}, // the first match counts; Herald writes offset before data
		{`{"pub":{"channel":"bench","epoch":"ab","data":{}}}`, 0, false},
		{`{"pub":{"channel":"bench","offset":"","data":{}}}`, 0, false},
		{`{"pub":{"channel":"bench","offset":"12`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.frame, func(t *testing.T) {
			got, ok := parseOffset([]byte(tt.frame))
			if got != tt.want || ok != tt.ok {
				t.Fatalf("parseOffset = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestCutFrame(t *testing.T) {
	msg := []byte("a\nbb\n\nccc")
	var got []string
	for len(msg) > 0 {
		var f []byte
		f, msg = cutFrame(msg)
		got = append(got, string(f))
	}
	want := []string{"a", "bb", "", "ccc"}
	if len(got) != len(want) {
		t.Fatalf("frames %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("frames %q, want %q", got, want)
		}
	}
}

func TestAppendPayload(t *testing.T) {
	for _, size := range []int{0, 10, 30, 64, 1000} {
		p := appendPayload(nil, 1732600000000000000, size)
		if size >= 33 && len(p) != size {
			t.Errorf("size %d: got %d bytes: %s", size, len(p), p)
		}
		if v, ok := parseT(p); !ok || v != 1732600000000000000 {
			t.Errorf("size %d: parseT(%s) = %d, %v", size, p, v, ok)
		}
		if !json.Valid(p) {
			t.Errorf("size %d: invalid JSON %s", size, p)
		}
		if _, sent, _ := parseStamps(p); sent != 0 {
			t.Errorf("size %d: %s has a send time", size, p)
		}
		p = appendStamped(nil, 1732600000000000000, 1732600000012345678, size)
		if size >= 57 && len(p) != size {
			t.Errorf("stamped, size %d: got %d bytes: %s", size, len(p), p)
		}
		if v, ok := parseT(p); !ok || v != 1732600000000000000 {
			t.Errorf("stamped, size %d: parseT(%s) = %d, %v", size, p, v, ok)
		}
		if _, v, ok := parseStamps(p); !ok || v != 1732600000012345678 {
			t.Errorf("stamped, size %d: parseStamps(%s) sent %d, %v", size, p, v, ok)
		}
		if !json.Valid(p) {
			t.Errorf("stamped, size %d: invalid JSON %s", size, p)
		}
	}
}

func FuzzParseT(f *testing.F) {
	f.Add([]byte(`{"pub":{"channel":"bench","offset":"5","data":{"t":1732600000000000000,"p":"xx"}}}`))
	f.Add([]byte(`{"t":`))
	f.Add([]byte(`"t": 18446744073709551615`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, ok := parseT(b)
		if ok && v < 0 {
			t.Fatalf("negative %d", v)
		}
		if ok {
			// The digits right after the key must print back to v.
			if s := strconv.FormatInt(v, 10); len(s) == 0 {
				t.Fatal("empty")
			}
		}
	})
}

func BenchmarkParseT(b *testing.B) {
	frame := appendPayload([]byte(`{"pub":{"channel":"bench","offset":"123456","epoch":"8f1c2a","data":`), 1732600000000000000, 64)
	frame = append(frame, "}}"...)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseT(frame); !ok {
			b.Fatal("no t")
		}
	}
}

// A send time counts only right after the "t" (where appendStamped writes
// it), so an "s" elsewhere in a payload is not taken for one.
func TestParseStamps(t *testing.T) {
	for _, tt := range []struct {
		frame   string
		t, sent int64
		ok      bool
	}{
		{`{"data":{"t":5,"s":7,"p":"x"}}`, 5, 7, true},
		{`{"data":{"t":5,"p":"x","s":7}}`, 5, 0, true},
		{`{"data":{"t":5,"s":"7"}}`, 5, 0, true},
		{`{"data":{"s":7}}`, 0, 0, false},
		{`{"data":{"t":5,"s":99999999999999999999}}`, 5, 0, true},
	} {
		ts, sent, ok := parseStamps([]byte(tt.frame))
		if ts != tt.t || sent != tt.sent || ok != tt.ok {
			t.Errorf("parseStamps(%s) = %d, %d, %v; want %d, %d, %v", tt.frame, ts, sent, ok, tt.t, tt.sent, tt.ok)
		}
	}
}
