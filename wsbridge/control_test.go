package wsbridge

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestPresenceUpdatesFitTheMessageLimit: the memberships a bridge
// reports to the core (all of them at once after its control stream
// reconnects) go in updates that each fit limits.max_grpc_message, every
// join and leave once. One update over the limit failed the stream, and
// the same update was sent again after every reconnect: presence never
// reached the core, and nor did anything else on that stream.
func TestPresenceUpdatesFitTheMessageLimit(t *testing.T) {
	b := &Bridge{log: slog.New(slog.DiscardHandler)}
	c := newControl(b)
	const members = 500
	var sessions []*session
	for i := range members {
		s := &session{id: fmt.Sprintf("client-%03d", i), user: "user-" + strings.Repeat("u", i%40)}
		sessions = append(sessions, s)
		k := memberKey{fmt.Sprintf("chat:room-%d", i%7), s}
		c.desired[k] = &heraldv1.ClientInfo{Client: s.id, User: s.user}
		c.dirty[k] = struct{}{}
	}
	// One member whose info alone is over the limit: left out, not a
	// stop to the others.
	huge := &session{id: "client-huge"}
	hk := memberKey{"chat:room-0", huge}
	c.desired[hk] = &heraldv1.ClientInfo{Client: huge.id, Info: structpb.NewStringValue(strings.Repeat("i", 4096))}
	c.dirty[hk] = struct{}{}

	const maxMessage = 2048
	limit := maxPresenceUpdate(maxMessage)
	drain := func() (joins, leaves map[string]int, updates int) {
		joins, leaves = map[string]int{}, map[string]int{}
		for {
			up := c.batch(limit)
			if up == nil {
				return joins, leaves, updates
			}
			updates++
			req := &heraldv1.BridgeSessionRequest{Msg: &heraldv1.BridgeSessionRequest_Presence{Presence: up}}
			if n := proto.Size(req); n > maxMessage {
				t.Fatalf("update %d is %d bytes, over the %d-byte message limit", updates, n, maxMessage)
			}
			for _, ev := range up.Joins {
				joins[ev.Channel+"/"+ev.Client.Client]++
			}
			for _, ev := range up.Leaves {
				leaves[ev.Channel+"/"+ev.Client.Client]++
			}
			if updates > members {
				t.Fatal("batch does not end")
			}
		}
	}
	joins, leaves, updates := drain()
	if len(joins) != members || len(leaves) != 0 || updates < 2 {
		t.Fatalf("%d joins, %d leaves in %d updates; want %d joins in more than one update", len(joins), len(leaves), updates, members)
	}
	for k, n := range joins {
		if n != 1 || strings.Contains(k, "huge") {
			t.Fatalf("join %s reported %d times", k, n)
		}
	}
	// Half of them leave; the oversized member leaves too (never
	// reported, so nothing to take back).
	for i, s := range sessions {
		if i%2 == 0 {
			k := memberKey{fmt.Sprintf("chat:room-%d", i%7), s}
			delete(c.desired, k)
			c.dirty[k] = struct{}{}
		}
	}
	delete(c.desired, hk)
	c.dirty[hk] = struct{}{}
	joins, leaves, _ = drain()
	if len(joins) != 0 || len(leaves) != members/2 {
		t.Fatalf("after half left: %d joins, %d leaves; want 0 and %d", len(joins), len(leaves), members/2)
	}
	// After a reconnect every membership still held is reported again.
	c.reset()
	if joins, leaves, _ = drain(); len(joins) != members/2 || len(leaves) != 0 {
		t.Fatalf("after a reset: %d joins, %d leaves; want %d and 0", len(joins), len(leaves), members/2)
	}
}
