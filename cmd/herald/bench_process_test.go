package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchStreamsOverHTTP2: herald bench's SSE and HTTP-streaming
// clients with -tls -h2 speak HTTP/2 to a herald serve it starts over
// TLS (each client on a connection of its own, refusing one where the
// server did not choose h2), and every client gets every publication.
// Without -tls, -h2 is refused.
func TestBenchStreamsOverHTTP2(t *testing.T) {
	bin := heraldBinary(t)
	cfg := filepath.Join(t.TempDir(), "bench.yaml")
	yaml := "log_level: warn\nnamespaces:\n  - name: bench\n    history_size: 10\n    history_ttl: 1m\n    allow_subscribe: true\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"sse", "http_stream"} {
		t.Run(transport, func(t *testing.T) {
			out, err := exec.Command(bin, "bench", "fanout", "-n", "20", "-rate", "10", "-dur", "2s", "-channel", "bench:f",
				"-publisher", "rest", "-runs", "1", "-transport", transport, "-tls", "-h2", "-serve-bin", bin, "-serve", cfg,
				"-jwt-secret", "benchsecret0123456789", "-api-key", "benchkey0123456789", "-pause", "0s").CombinedOutput()
			if err != nil {
				t.Fatalf("herald bench: %v\n%s", err, out)
			}
			for _, want := range []string{"20 connected, 0 failed", "delivered  400 of 400 expected (loss 0, extra 0; offsets repeated 0, out of order 0, skipped 0)", `"ok":true`} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("herald bench over HTTP/2 printed no %q:\n%s", want, out)
				}
			}
		})
	}
	out, err := exec.Command(bin, "bench", "fanout", "-n", "1", "-rate", "1", "-dur", "1s", "-transport", "sse", "-h2").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-h2 needs -tls") {
		t.Fatalf("-h2 without -tls: %v\n%s", err, out)
	}
}
