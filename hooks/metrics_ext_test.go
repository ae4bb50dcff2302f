package hooks_test

import (
	"sync"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"github.com/herald-io/herald/hooks"
	"github.com/herald-io/herald/internal/hooktest"
	"github.com/prometheus/client_golang/prometheus"
)

// hookMetric returns the value of the metric name for hook (a counter's
// or gauge's value, a histogram's count); the label is skipped for
// metrics without one (herald_hook_in_flight).
func hookMetric(t *testing.T, name, hook string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if hook != "" && !labelIs(m, "hook", hook) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("no metric %s{hook=%q}", name, hook)
	return 0
}

// TestHookMetrics: in both forms, every call counts in
// herald_hook_calls_total and herald_hook_duration_seconds of its hook, a
// refusal in herald_hook_refusals_total (an accept does not), and a call
// waiting for the backend in herald_hook_in_flight until it returns.
func TestHookMetrics(t *testing.T) {
	s := hooktest.Start(t, hooktest.Options{})
	cookie := s.Login("ann")
	forms(t, s, config.Hooks{CircuitFailures: 1000}, func(t *testing.T, c *hooks.Client) {
		calls := hookMetric(t, "herald_hook_calls_total", "connect")
		refusals := hookMetric(t, "herald_hook_refusals_total", "connect")
		timed := hookMetric(t, "herald_hook_duration_seconds", "connect")
		if _, err := c.Connect(bg(t), &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "m1"}, Cookies: map[string]string{"session": cookie}}); err != nil {
			t.Fatal(err)
		}
		if got := hookMetric(t, "herald_hook_refusals_total", "connect") - refusals; got != 0 {
			t.Fatalf("an accepted connect counted %v refusals", got)
		}
		if _, err := c.Connect(bg(t), &hooksv1.ConnectRequest{Session: &hooksv1.Session{Client: "m2"}}); err != nil {
			t.Fatal(err)
		}
		if got := hookMetric(t, "herald_hook_calls_total", "connect") - calls; got != 2 {
			t.Fatalf("herald_hook_calls_total{connect} rose by %v after 2 calls", got)
		}
		if got := hookMetric(t, "herald_hook_duration_seconds", "connect") - timed; got != 2 {
			t.Fatalf("herald_hook_duration_seconds{connect} counted %v of 2 calls", got)
		}
		if got := hookMetric(t, "herald_hook_refusals_total", "connect") - refusals; got != 1 {
			t.Fatalf("herald_hook_refusals_total{connect} rose by %v after one refusal", got)
		}

		// A call the backend sits on is in flight until it returns.
		idle := hookMetric(t, "herald_hook_in_flight", "")
		s.SetDelay(time.Hour)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Subscribe(bg(t), &hooksv1.SubscribeRequest{Channel: "room:1"})
		}()
		deadline := time.Now().Add(10 * time.Second)
		for hookMetric(t, "herald_hook_in_flight", "")-idle != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("herald_hook_in_flight = %v with one call waiting (%v before)", hookMetric(t, "herald_hook_in_flight", ""), idle)
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.SetDelay(0)
		wg.Wait()
		if got := hookMetric(t, "herald_hook_in_flight", ""); got != idle {
			t.Fatalf("herald_hook_in_flight = %v after the call returned, want %v", got, idle)
		}
	})
}
