package service_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/node"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// engineTarget is a core on one engine, with channels in a known state.
type engineTarget struct {
	name   string
	client heraldv1.HeraldServiceClient
	epochs map[string]string // channel -> its epoch ("" for the unused one)
	tops   map[string]uint64 // channel -> its last offset
}

// fuzzChannels are the channels the targets hold: one whose history
// (size 3) lost its start, one that keeps all of it, one never used.
var fuzzChannels = []string{"small:f", "room:f", "room:never"}

// newEngineTargets starts a core on the memory engine and one on the
// Redis engine (a real redis-server, started once for all of f's inputs;
// skipped only when redis-server is absent and HERALD_REQUIRE_REDIS is
// unset), and publishes to the channels of fuzzChannels.
func newEngineTargets(tb testing.TB) []*engineTarget {
	tb.Helper()
	mem := startServer(tb, testConfig(tb, nil))
	targets := []*engineTarget{{name: "memory", client: mem.client}}
	if r := startRedis(tb); r != nil {
		targets = append(targets, &engineTarget{name: "redis", client: r})
	}
	for _, tg := range targets {
		tg.epochs, tg.tops = map[string]string{}, map[string]uint64{}
		for ch, n := range map[string]int{"small:f": 10, "room:f": 5} {
			for i := 1; i <= n; i++ {
				resp, err := tg.client.Publish(context.Background(), &heraldv1.PublishRequest{Channel: ch, Payload: jsonPayload(fmt.Sprint(i))})
				if err != nil {
					tb.Fatal(err)
				}
				tg.epochs[ch], tg.tops[ch] = resp.Position.Epoch, resp.Position.Offset
			}
		}
	}
	return targets
}

// startRedis returns a client of a core node on the Redis engine, or nil
// when redis-server is not installed (and not required).
func startRedis(tb testing.TB) heraldv1.HeraldServiceClient {
	tb.Helper()
	if !redisAvailable() {
		return nil
	}
	srv := redistest.Start(tb)
	cfg := testConfig(tb, func(cfg *config.Config) {
		cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Engine = "redis"
		cfg.Redis.Addrs = []string{srv.Addr}
		cfg.Redis.Prefix = fmt.Sprintf("fuzz-%d", time.Now().UnixNano())
	})
	n, err := node.Start(context.Background(), cfg, node.Core, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	conn, err := grpc.NewClient(n.GRPCAddr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return heraldv1.NewHeraldServiceClient(conn)
}

// redisAvailable reports whether the Redis target runs: redis-server is
// installed, or required (then redistest.Start fails without it).
func redisAvailable() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil || os.Getenv("HERALD_REQUIRE_REDIS") == "1"
}

// FuzzHistorySubscribeArgs drives History and Subscribe of the public API
// with arbitrary positions, limits, directions and formats, against both
// engines. The oracle: an argument outside the documented ranges (offset
// above 2^63-1, epoch over 64 bytes, unknown payload_format, limit above
// max_history_page) is INVALID_ARGUMENT; anything else is answered (History
// may say FAILED_PRECONDITION for a position of another epoch), never
// INTERNAL; a history page is within its limit, consecutive, on the
// asked side of since and within the reported position; a Subscribe that
// says recovered replays exactly since+1 up to its position.
func FuzzHistorySubscribeArgs(f *testing.F) {
	targets := newEngineTargets(f)
	for _, o := range []uint64{0, 1, 2, 3, 5, 9, 10, 11, math.MaxInt64, math.MaxInt64 + 1, math.MaxUint64} {
		for sel := uint8(0); sel < 4; sel++ {
			f.Add(uint8(o%3), o, sel, "e", uint32(o%1002), o%2 == 0, int32(o%2))
		}
	}
	f.Add(uint8(0), uint64(1), uint8(3), strings.Repeat("e", 65), uint32(0), false, int32(0))
	f.Add(uint8(1), uint64(1), uint8(3), "", uint32(math.MaxUint32), true, int32(7))
	f.Add(uint8(2), uint64(0), uint8(2), "", uint32(1), false, int32(-1))
	f.Fuzz(func(t *testing.T, chanSel uint8, offset uint64, epochSel uint8, epoch string, limit uint32, reverse bool, format int32) {
		epoch = strings.ToValidUTF8(epoch, "?") // proto strings are UTF-8 (the client refuses others)
		for _, tg := range targets {
			ch := fuzzChannels[int(chanSel)%len(fuzzChannels)]
			var since *heraldv1.StreamPosition
			switch epochSel % 5 {
			case 0:
				since = &heraldv1.StreamPosition{Offset: offset}
			case 1:
				since = &heraldv1.StreamPosition{Offset: offset, Epoch: tg.epochs[ch]}
			case 2:
				since = &heraldv1.StreamPosition{Offset: offset, Epoch: emptyEpochOf(t, tg)}
			case 3:
				since = &heraldv1.StreamPosition{Offset: offset, Epoch: epoch}
			}
			checkHistoryArgs(t, tg, ch, since, limit, reverse, heraldv1.PayloadFormat(format))
			checkSubscribeArgs(t, tg, ch, since, heraldv1.PayloadFormat(format))
		}
	})
}

// emptyEpochOf is the epoch the never-used channel reports now.
func emptyEpochOf(t *testing.T, tg *engineTarget) string {
	resp, err := tg.client.History(context.Background(), &heraldv1.HistoryRequest{Channel: "room:never", Limit: 1})
	if err != nil {
		t.Fatalf("%s: history of an unused channel: %v", tg.name, err)
	}
	return resp.Position.Epoch
}

func argsValid(since *heraldv1.StreamPosition, format heraldv1.PayloadFormat) bool {
	_, known := heraldv1.PayloadFormat_name[int32(format)]
	return known && (since == nil || since.Offset <= math.MaxInt64 && len(since.Epoch) <= 64)
}

func checkHistoryArgs(t *testing.T, tg *engineTarget, ch string, since *heraldv1.StreamPosition, limit uint32, reverse bool, format heraldv1.PayloadFormat) {
	t.Helper()
	req := &heraldv1.HistoryRequest{Channel: ch, Since: since, Limit: limit, Reverse: reverse, PayloadFormat: format}
	resp, err := tg.client.History(context.Background(), req)
	what := fmt.Sprintf("%s: history %v", tg.name, req)
	code := status.Code(err)
	if !argsValid(since, format) || limit > 1000 {
		if code != codes.InvalidArgument {
			t.Fatalf("%s: %v, want INVALID_ARGUMENT", what, err)
		}
		return
	}
	switch {
	case code == codes.FailedPrecondition && since != nil && since.Epoch != "" && since.Epoch != tg.epochs[ch]:
		return // a position of another epoch
	case err != nil:
		t.Fatalf("%s: %v", what, err)
	}
	want := int(limit)
	if want == 0 {
		want = 100
	}
	top := resp.Position.Offset
	if top != tg.tops[ch] || tg.epochs[ch] != "" && resp.Position.Epoch != tg.epochs[ch] {
		t.Fatalf("%s: position %v, want offset %d epoch %q", what, resp.Position, tg.tops[ch], tg.epochs[ch])
	}
	pubs := resp.Publications
	if len(pubs) > want {
		t.Fatalf("%s: %d publications, limit %d", what, len(pubs), want)
	}
	for i, p := range pubs {
		if p.Offset == 0 || p.Offset > top || p.Epoch != resp.Position.Epoch {
			t.Fatalf("%s: publication %d at %d/%s, position %v", what, i, p.Offset, p.Epoch, resp.Position)
		}
		if since != nil && (!reverse && p.Offset <= since.Offset || reverse && p.Offset >= since.Offset) {
			t.Fatalf("%s: publication at %d on the wrong side of since", what, p.Offset)
		}
		if i > 0 && (!reverse && p.Offset != pubs[i-1].Offset+1 || reverse && p.Offset != pubs[i-1].Offset-1) {
			t.Fatalf("%s: offsets %d then %d", what, pubs[i-1].Offset, p.Offset)
		}
	}
}

func checkSubscribeArgs(t *testing.T, tg *engineTarget, ch string, since *heraldv1.StreamPosition, format heraldv1.PayloadFormat) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &heraldv1.SubscribeRequest{Channel: ch, Since: since, PayloadFormat: format}
	what := fmt.Sprintf("%s: subscribe %v", tg.name, req)
	stream, err := tg.client.Subscribe(ctx, req)
	var first *heraldv1.SubscribeResponse
	if err == nil {
		first, err = stream.Recv()
	}
	if !argsValid(since, format) {
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: %v, want INVALID_ARGUMENT", what, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	sub := first.GetSubscribed()
	if sub == nil || sub.Position.Offset != tg.tops[ch] {
		t.Fatalf("%s: first event %v, want subscribed at offset %d", what, first, tg.tops[ch])
	}
	if !sub.Recovered || since == nil {
		return
	}
	if since.Offset > sub.Position.Offset {
		t.Fatalf("%s: recovered from beyond the position %v", what, sub.Position)
	}
	for want := since.Offset + 1; want <= sub.Position.Offset; want++ {
		ev, err := stream.Recv()
		if err != nil || ev.GetPublication().GetOffset() != want {
			t.Fatalf("%s: replay: %v %v, want offset %d", what, ev, err, want)
		}
	}
}
