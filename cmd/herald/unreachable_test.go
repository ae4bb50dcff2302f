package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/herald-io/herald/internal/syncbuf"
)

// TestPublishToNoNode: publishing where no node listens fails, naming the
// address tried and how to set another, not with gRPC's raw text.
func TestPublishToNoNode(t *testing.T) {
	addr := freePort(t)
	err := publish(context.Background(), []string{"--addr", addr, "news", `1`}, &bytes.Buffer{})
	if err == nil {
		t.Fatal("published to nothing")
	}
	msg := err.Error()
	for _, want := range []string{addr, "--addr", "$HERALD_ADDR", "connection refused"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, "desc =") || strings.Contains(msg, "transport:") {
		t.Errorf("error %q is gRPC's raw text", msg)
	}
}

// TestSubscribeToNoNodeSaysSo: subscribing where no node listens keeps
// retrying, and says so on stderr each time, with the address and the
// wait.
func TestSubscribeToNoNodeSaysSo(t *testing.T) {
	addr := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- subscribeTo(ctx, []string{"--addr", addr, "news"}, &bytes.Buffer{}, &stderr) }()
	waitFor(t, func() bool { return strings.Count(stderr.String(), "\n") >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("subscribe after Ctrl-C: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	for _, l := range lines {
		if !strings.Contains(l, "cannot reach a Herald node at "+addr) || !strings.Contains(l, "--addr") || !strings.Contains(l, "retrying in ") {
			t.Fatalf("stderr line %q: want the address, --addr and the wait", l)
		}
	}
}
