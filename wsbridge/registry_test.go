package wsbridge

import (
	"hash/maphash"
	mrand "math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestUserSessions: a user's sessions are counted against
// max_conns_per_user and listed whichever of them ends first (the first
// is kept apart from the others).
func TestUserSessions(t *testing.T) {
	b := &Bridge{seed: maphash.MakeSeed()}
	b.cfg.MaxConnsPerUser = 3
	for i := range b.sessions {
		b.sessions[i].all = make(map[*session]struct{})
		b.sessions[i].users = make(map[string]*session)
		b.sessions[i].more = make(map[string][]*session)
	}
	add := func(id, user string) *session {
		t.Helper()
		s := &session{b: b, t: &transport{}, id: id, user: user}
		b.register(s)
		if !b.addUser(s) {
			t.Fatalf("%s refused", id)
		}
		s.userAdded = true
		return s
	}
	want := func(user string, ss ...*session) {
		t.Helper()
		got := b.userSessions(user)
		for _, s := range ss {
			if !slices.Contains(got, s) {
				t.Fatalf("%s: %s missing from %d sessions", user, s.id, len(got))
			}
		}
		if len(got) != len(ss) {
			t.Fatalf("%s: %d sessions, want %d", user, len(got), len(ss))
		}
	}
	for _, end := range [][3]int{{0, 1, 2}, {1, 0, 2}, {2, 1, 0}, {1, 2, 0}} {
		u := []*session{add("a", "u"), add("b", "u"), add("c", "u")}
		other := add("d", "v")
		if x := (&session{b: b, t: &transport{}, id: "e", user: "u"}); b.addUser(x) {
			t.Fatal("a fourth session of u admitted with max_conns_per_user 3")
		}
		left := slices.Clone(u)
		for _, i := range end {
			b.unregister(u[i])
			left = slices.DeleteFunc(left, func(s *session) bool { return s == u[i] })
			want("u", left...)
			want("v", other)
		}
		b.unregister(other)
		want("v")
		for i := range b.sessions {
			sh := &b.sessions[i]
			if len(sh.users) != 0 || len(sh.more) != 0 || len(sh.all) != 0 {
				t.Fatalf("state left behind: %d users, %d more, %d sessions", len(sh.users), len(sh.more), len(sh.all))
			}
		}
	}
}

// TestHeartbeatSlots: over one interval, every session gets exactly one
// heartbeat whatever the number of slots, and the slots share the
// sessions about evenly.
func TestHeartbeatSlots(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		slots    int
	}{{time.Millisecond, 1}, {20 * time.Millisecond, 2}, {100 * time.Millisecond, 8}, {time.Second, 64}, {25 * time.Second, 128}, {time.Hour, 128}} {
		if got := heartbeatSlots(tc.interval); got != tc.slots {
			t.Errorf("heartbeatSlots(%v) = %d, want %d", tc.interval, got, tc.slots)
		}
	}
	b := &Bridge{seed: maphash.MakeSeed()}
	for i := range b.sessions {
		b.sessions[i].all = make(map[*session]struct{})
	}
	const sessions = 12_800
	for range sessions {
		b.register(&session{b: b, id: randomID(8), hbSlot: uint8(mrand.Uint32())})
	}
	for slots := 1; slots <= maxHeartbeatSlots; slots *= 2 {
		seen := map[*session]int{}
		most := 0
		for q := range slots {
			n := 0
			b.heartbeatSlot(q, slots, func(s *session) { seen[s]++; n++ })
			most = max(most, n)
		}
		if len(seen) != sessions {
			t.Fatalf("%d slots: %d of %d sessions got a heartbeat", slots, len(seen), sessions)
		}
		for s, n := range seen {
			if n != 1 {
				t.Fatalf("%d slots: session %s got %d heartbeats in one interval", slots, s.id, n)
			}
		}
		if even := sessions / slots; most > even*3/2 {
			t.Fatalf("%d slots: one slot has %d sessions, want about %d", slots, most, even)
		}
	}
}
