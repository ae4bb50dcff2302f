package bench

import (
	"slices"
	"strings"
	"testing"
)

func TestParseSources(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		err  bool
	}{
		{"", nil, false},
		{"3", []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"}, false},
		{"127.0.0.254-127.0.1.1", []string{"127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"}, false},
		{"127.0.0.5, 127.0.0.9", []string{"127.0.0.5", "127.0.0.9"}, false},
		{"127.0.0.9-127.0.0.5", nil, true},
		{"0", nil, true},
		{"nonsense", nil, true},
	}
	for _, tt := range tests {
		got, err := parseSources(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("parseSources(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestSplitSources(t *testing.T) {
	srcs := []string{"a", "b", "c", "d", "e"}
	var all []string
	for k := range 2 {
		all = append(all, splitSources(srcs, k, 2)...)
	}
	if !slices.Equal(all, srcs) {
		t.Fatalf("parts cover %v", all)
	}
	if got := splitSources(srcs[:1], 3, 4); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fewer addresses than parts: %v", got)
	}
	if autoSources(9000) != nil || len(autoSources(19000)) != 2 || len(autoSources(95000)) != 10 {
		t.Fatal("autoSources: one address per 10,000 connections")
	}
}

func TestParseStatCPU(t *testing.T) {
	line := "1234 (herald serve) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 100000000 2000 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 3.0 {
		t.Fatalf("parseStatCPU = %v, %v; want 3s", got, err)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 1234
go_memstats_heap_inuse_bytes 1.2345e+07
go_memstats_stack_inuse_bytes 4.194304e+06 1732600000000
go_gc_duration_seconds{quantile="0"} 1e-05
`
	m := parseMetrics(strings.NewReader(text), metricNames)
	if m["go_goroutines"] != 1234 || m["go_memstats_heap_inuse_bytes"] != 12345000 || m["go_memstats_stack_inuse_bytes"] != 4194304 || len(m) != 3 {
		t.Fatalf("metrics %v", m)
	}
}

func TestHTTPAddrOf(t *testing.T) {
	for in, want := range map[string]string{
		"ws://127.0.0.1:7401/ws": "127.0.0.1:7401",
		"ws://localhost:9/x/y":   "localhost:9",
		"ws://example.com/ws":    "example.com:80",
	} {
		if got := httpAddrOf(in); got != want {
			t.Errorf("httpAddrOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSteal(t *testing.T) {
	stat := "cpu  145433 0 79996 334677 327 0 26422 15821 0 0\ncpu0 72000 0 40000 167000 100 0 13000 7900 0 0\nintr 1\n"
	if got := parseSteal([]byte(stat)); got != 158.21 {
		t.Errorf("steal %v s, want 158.21", got)
	}
	for _, bad := range []string{"", "cpu 1 2 3\n", "intr 1 2 3 4 5 6 7 8 9\n", "cpu 1 2 3 4 5 6 7 x 9\n"} {
		if got := parseSteal([]byte(bad)); got != 0 {
			t.Errorf("parseSteal(%q) = %v, want 0", bad, got)
		}
	}
}
