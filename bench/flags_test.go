package bench

import (
	"flag"
	"testing"
)

// TestPublishRefusesComparisonFlags: publish mode measures the server at
// -grpc only, so flags that would start servers are refused rather than
// ignored (it used to publish to 127.0.0.1:7400 and report refusals).
func TestPublishRefusesComparisonFlags(t *testing.T) {
	for _, args := range [][]string{
		{"publish", "-serve", "x.yaml"},
		{"publish", "-floor"},
		{"publish", "-runs", "2"},
	} {
		if _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), args); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
	if _, err := parseFlags(flag.NewFlagSet("t", flag.ContinueOnError), []string{"publish", "-dur", "1s"}); err != nil {
		t.Errorf("plain publish refused: %v", err)
	}
}
