package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/internal/payloadtest"
	"github.com/herald-io/herald/internal/syncbuf"
	"github.com/herald-io/herald/internal/tlstest"
	"github.com/herald-io/herald/node"
)

func TestPublishAndSubscribeCommands(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	addr := "--addr=" + n.GRPCAddr.String()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var subOut syncbuf.Buffer
	subDone := make(chan error, 1)
	go func() { subDone <- subscribe(ctx, []string{addr, "news"}, &subOut) }()
	waitFor(t, func() bool { return strings.Contains(subOut.String(), `"subscribed"`) })

	var pubOut bytes.Buffer
	if err := publish(context.Background(), []string{addr, "news", `{"text":"hi"}`}, &pubOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(pubOut.String(), `"offset":"1"`) {
		t.Fatalf("publish printed %q", pubOut.String())
	}
	waitFor(t, func() bool { return strings.Contains(subOut.String(), `"data":{"text":"hi"}`) })
	cancel()
	if err := <-subDone; err != nil {
		t.Fatalf("subscribe after Ctrl-C: %v", err)
	}

	// Bad input is refused with the server's message.
	err = publish(context.Background(), []string{addr, "nope:x", `1`}, &pubOut)
	if err == nil || !strings.Contains(err.Error(), "unknown namespace") {
		t.Fatalf("err = %v", err)
	}
	if err := publish(context.Background(), []string{addr, "news", `{not json`}, &pubOut); err == nil {
		t.Fatal("invalid JSON accepted")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSubscribeResumesWhenTheNodeRestarts(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.GRPCAddr = n.GRPCAddr.String()
	addr := "--addr=" + cfg.GRPCAddr

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- subscribe(ctx, []string{addr, "news"}, &out) }()
	waitFor(t, func() bool { return strings.Count(out.String(), `"subscribed"`) == 1 })
	if err := publish(context.Background(), []string{addr, "news", `"before"`}, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), `"before"`) })

	// The node goes away (its stream ends UNAVAILABLE) and a new one takes
	// its address: the command resubscribes by itself.
	_ = n.Shutdown(context.Background())
	n2, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.Shutdown(context.Background()) })
	waitFor(t, func() bool { return strings.Count(out.String(), `"subscribed"`) == 2 })
	if err := publish(context.Background(), []string{addr, "news", `"after"`}, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), `"after"`) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestClientCommandsOverTLS(t *testing.T) {
	f := tlstest.NewFiles(t)
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key, ClientCAFile: f.CAFile}
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	addr := "--addr=" + n.GRPCAddr.String()
	pub := func(args ...string) error {
		return publish(context.Background(), append(append([]string{addr}, args...), "news", `"tls"`), io.Discard)
	}
	if err := pub("--ca-file", f.CAFile, "--cert-file", f.ClientCert, "--key-file", f.ClientKey); err != nil {
		t.Fatalf("with the CA and a client certificate: %v", err)
	}
	if err := pub("--ca-file", f.CAFile); err == nil {
		t.Fatal("published without the client certificate the node requires")
	}
	if err := pub(); err == nil {
		t.Fatal("published in plaintext to a TLS listener")
	}
	if err := pub("--tls", "--cert-file", f.ClientCert, "--key-file", f.ClientKey); err == nil {
		t.Fatal("trusted a certificate from an unknown CA")
	}
}

// TestCLIJSONExact: `herald publish` sends a JSON payload as its text and
// `herald subscribe` prints it back as `data`, token for token (big
// integers, 1.0, key order, escapes, deep nesting); text that is not UTF-8
// JSON is refused before anything is sent.
func TestCLIJSONExact(t *testing.T) {
	cfg := config.Default()
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	addr := "--addr=" + n.GRPCAddr.String()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var subOut syncbuf.Buffer
	subDone := make(chan error, 1)
	go func() { subDone <- subscribe(ctx, []string{addr, "news"}, &subOut) }()
	waitFor(t, func() bool { return strings.Contains(subOut.String(), `"subscribed"`) })

	for _, tc := range payloadtest.Corpus {
		if err := publish(context.Background(), []string{addr, "news", tc.In}, io.Discard); err != nil {
			t.Fatalf("%s: %v", tc.Name, err)
		}
	}
	var got []string
	waitFor(t, func() bool {
		got = got[:0]
		for _, line := range strings.Split(subOut.String(), "\n") {
			var ev struct {
				Publication *struct {
					Data json.RawMessage `json:"data"`
				} `json:"publication"`
			}
			if line == "" || json.Unmarshal([]byte(line), &ev) != nil || ev.Publication == nil {
				continue
			}
			got = append(got, string(ev.Publication.Data))
		}
		return len(got) == len(payloadtest.Corpus)
	})
	for i, tc := range payloadtest.Corpus {
		if got[i] != tc.Want {
			t.Errorf("%s: subscribe printed data %s, want %s", tc.Name, got[i], tc.Want)
		}
	}
	for _, tc := range payloadtest.Invalid {
		if err := publish(context.Background(), []string{addr, "news", tc.In}, io.Discard); err == nil {
			t.Errorf("%s: %q accepted", tc.Name, tc.In)
		}
	}
	cancel()
	if err := <-subDone; err != nil {
		t.Fatalf("subscribe after Ctrl-C: %v", err)
	}
}
