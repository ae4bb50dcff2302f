package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestKillNodeDuringPublishStreamRedis: two herald processes on one real
// Redis; a backend streams publications into node A and A is killed with
// SIGKILL mid-stream. Every publication A acknowledged is in the history
// read from node B, a browser on node B received all of them once and in
// order, and B goes on serving.
func TestKillNodeDuringPublishStreamRedis(t *testing.T) {
	r := redistest.Start(t)
	cfg := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(cfg, []byte(`namespaces:
  - {name: kill, history_size: 100000, history_ttl: 10m, allow_subscribe: true, allow_anonymous: true}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", cfg, "--engine", "redis", "--redis-addrs", r.Addr,
		"--redis-prefix", fmt.Sprintf("kill%d", time.Now().UnixNano())}
	a, b := startProc(t, args...), startProc(t, args...)
	browser := subscribeWS(t, b, "kill:stream")
	pb := startPublisher(t, a, "kill:stream")
	waitUntil(t, "500 acks", func() bool { return len(pb.acked()) >= 500 })
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pb.done:
	case <-time.After(5 * time.Second):
		t.Fatal("publish stream did not fail within 5s of kill -9")
	}
	acks := pb.acked()
	last := acks[len(acks)-1]

	cc, err := grpc.NewClient(b.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := heraldv1.NewHeraldServiceClient(cc)
	hist, err := client.History(context.Background(), &heraldv1.HistoryRequest{Channel: "kill:stream", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[uint64]bool{}
	for _, p := range hist.Publications {
		stored[p.Offset] = true
	}
	for len(hist.Publications) == 1000 { // page on
		hist, err = client.History(context.Background(), &heraldv1.HistoryRequest{Channel: "kill:stream", Limit: 1000,
			Since: &heraldv1.StreamPosition{Offset: hist.Publications[999].Offset, Epoch: hist.Position.Epoch}})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range hist.Publications {
			stored[p.Offset] = true
		}
	}
	for _, off := range acks {
		if !stored[off] {
			t.Fatalf("acknowledged offset %d is missing from history read on node B", off)
		}
	}
	waitUntil(t, "the browser on B to receive every acknowledged publication", func() bool { return browser.count() >= int(last) })
	checkReceived(t, "browser on B", browser, acks)

	// Node B carries on.
	resp, err := client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: "kill:stream",
		Payload: &heraldv1.PublishRequest_Data{Data: structpb.NewStringValue("after")}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the browser to receive a publication made on B", func() bool { return browser.count() >= int(resp.Position.Offset) })
	t.Logf("killed after %d acks; history on B holds %d publications", len(acks), len(stored))
}
