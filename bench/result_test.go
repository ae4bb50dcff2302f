package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	good := func() *Result {
		return &Result{
			Mode:      "fanout",
			Limits:    Limits{P99: 100 * time.Millisecond, MaxLag: 10 * time.Millisecond},
			Connect:   &ConnectStats{Connected: 10},
			Publisher: &PublisherStats{Planned: 50, Sent: 50, Acked: 50, Lag: &Percentiles{P99: 1}, Ack: &Percentiles{P99: 1}},
			Expected:  500, Received: 500,
			Latency: &Percentiles{P99: 20},
		}
	}
	tests := []struct {
		name   string
		change func(*Result)
		failed []string // prefixes of the failures, in order
	}{
		{"ok", func(*Result) {}, nil},
		{"connect errors", func(r *Result) { r.Connect.Errors = 2 }, []string{"connect:"}},
		{"loss", func(r *Result) { r.Loss, r.ClientsShort = 3, 1 }, []string{"loss:"}},
		{"duplicates", func(r *Result) { r.Extra = 1 }, []string{"duplicates:"}},
		{"repeated offset", func(r *Result) { r.Duplicates = 1 }, []string{"order:"}},
		{"offset out of order", func(r *Result) { r.Reorders = 1 }, []string{"order:"}},
		{"offset skipped", func(r *Result) { r.Gaps = 2 }, []string{"order:"}},
		{"disconnects", func(r *Result) { r.Disconnects, r.CloseCodes = 1, map[int]int{4004: 1} }, []string{"disconnects:"}},
		{"unsubscribed", func(r *Result) { r.Unsubscribed = 1 }, []string{"unsubscribed:"}},
		{"publish errors", func(r *Result) { r.Publisher.Errors = 1 }, []string{"publish errors:"}},
		{"behind", func(r *Result) { r.Publisher.Sent = 40 }, []string{"publisher behind:"}},
		{"lag", func(r *Result) { r.Publisher.Lag.P99 = 11 }, []string{"publisher lag:"}},
		{"lag unchecked", func(r *Result) { r.Publisher.Lag.P99 = 11; r.Limits.MaxLag = 0 }, nil},
		{"p99", func(r *Result) { r.Latency.P99 = 101 }, []string{"p99:"}},
		{"p99 unchecked", func(r *Result) { r.Latency.P99 = 101; r.Limits.P99 = 0 }, nil},
		{"publish mode uses ack latency", func(r *Result) { r.Mode = "publish"; r.Latency.P99 = 500; r.Publisher.Ack.P99 = 101 }, []string{"p99: ack latency"}},
		{"several", func(r *Result) { r.Loss = 1; r.Disconnects = 1; r.Latency.P99 = 1000 }, []string{"loss:", "disconnects:", "p99:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := good()
			tt.change(r)
			r.decide()
			if r.OK != (len(tt.failed) == 0) {
				t.Fatalf("OK = %v with failures %q", r.OK, r.Failed)
			}
			if len(r.Failed) != len(tt.failed) {
				t.Fatalf("failed %q, want prefixes %q", r.Failed, tt.failed)
			}
			for i, p := range tt.failed {
				if !strings.HasPrefix(r.Failed[i], p) {
					t.Fatalf("failed[%d] = %q, want prefix %q", i, r.Failed[i], p)
				}
			}
			var out bytes.Buffer
			r.print(&out, false)
			if tt.failed == nil && !strings.Contains(out.String(), "\nok\n") {
				t.Errorf("summary does not say ok:\n%s", out.String())
			}
			if tt.failed != nil && !strings.Contains(out.String(), "NOT OK") {
				t.Errorf("summary does not say NOT OK:\n%s", out.String())
			}
		})
	}
}

func TestResultLineIsJSON(t *testing.T) {
	r := &Result{Mode: "idle"}
	r.decide()
	var out bytes.Buffer
	r.print(&out, true)
	line, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "RESULT ")
	if !ok || strings.Contains(line, "\n") {
		t.Fatalf("want one RESULT line, got %q", out.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	if m["ok"] != true || m["failed"] == nil {
		t.Fatalf("ok/failed missing: %s", line)
	}
}

func TestFillDeliveries(t *testing.T) {
	var r Result
	expected := []int64{10, 10, 10, 10, 5}
	received := []int64{10, 7, -1, 12} // client 2 never connected; client 4 unreported
	r.fillDeliveries(expected, received)
	if r.Expected != 10+10+10+5 || r.Received != 29 || r.Loss != 3+5 || r.Extra != 2 || r.ClientsShort != 2 {
		t.Fatalf("expected %d received %d loss %d extra %d short %d", r.Expected, r.Received, r.Loss, r.Extra, r.ClientsShort)
	}
}

// TestMergeChildResults checks that results from several processes merge
// as if one process had held every client: counts placed by index,
// histograms merged bucket by bucket, close codes summed.
func TestMergeChildResults(t *testing.T) {
	mk := func(base int, lat []int64, recv []int64, codes map[int]int) *groupResult {
		r := &groupResult{Base: base, Connected: len(recv), Latency: new(Histogram), Connect: new(Histogram), Received: recv, CloseCodes: codes, LastRecv: int64(base), CPU: 0.5}
		for _, v := range lat {
			r.Latency.Record(v)
			r.Connect.Record(v * 2)
		}
		return r
	}
	a := mk(0, []int64{1e6, 2e6, 3e6}, []int64{3, 3}, map[int]int{4004: 1})
	b := mk(2, []int64{4e6, 100e6}, []int64{3, 2, 3}, map[int]int{4004: 2, 1006: 1})
	// Only b's payloads carried send times.
	b.LatencySend = new(Histogram)
	b.LatencySend.Record(7e6)
	// Round-trip through JSON as children do.
	var msgs []*groupResult
	for _, r := range []*groupResult{a, b} {
		line, err := json.Marshal(childMsg{Result: r})
		if err != nil {
			t.Fatal(err)
		}
		var m childMsg
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m.Result)
	}
	total := &groupResult{}
	for _, m := range msgs {
		total.merge(m)
		total.Received = placeReceived(total.Received, m)
	}
	if got := total.Received; len(got) != 5 || got[0] != 3 || got[3] != 2 || got[4] != 3 {
		t.Fatalf("received %v", got)
	}
	if total.Connected != 5 || total.CPU != 1 || total.LastRecv != 2 {
		t.Fatalf("connected %d cpu %v last %d", total.Connected, total.CPU, total.LastRecv)
	}
	if total.CloseCodes[4004] != 3 || total.CloseCodes[1006] != 1 {
		t.Fatalf("close codes %v", total.CloseCodes)
	}
	var all Histogram
	for _, v := range []int64{1e6, 2e6, 3e6, 4e6, 100e6} {
		all.Record(v)
	}
	if *total.Latency != all {
		t.Fatal("merged latency differs from a histogram of all values")
	}
	if total.Latency.Quantile(0.5) != all.Quantile(0.5) || total.Latency.Max() != 100e6 {
		t.Fatalf("p50 %d max %d", total.Latency.Quantile(0.5), total.Latency.Max())
	}
	if s := total.LatencySend; s == nil || s.Count() != 1 || s.Max() != 7e6 {
		t.Fatalf("latency from the send %+v, want b's one value", s)
	}
}

func TestRedactArgs(t *testing.T) {
	got := redactArgs([]string{"channels", "-jwt-secret", "s3", "--api-key=k", "-n", "5", "-jwt-secret=x"})
	want := "channels -jwt-secret *** --api-key=*** -n 5 -jwt-secret=***"
	if got != want {
		t.Fatalf("redactArgs = %q, want %q", got, want)
	}
}
