package wsbridge

import (
	"hash/maphash"
	"sync"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// sessionShard holds a part of the bridge's sessions: all of them by
// pointer (sharded by session id), and authenticated ones by user (sharded
// by user). Most users have one session: users holds a user's first, and
// more the others of the users with several (a slice per user would cost
// every user 24 bytes in the map and an array of its own).
type sessionShard struct {
	mu    sync.Mutex
	all   map[*session]struct{}
	users map[string]*session
	more  map[string][]*session
}

// userCount is the number of sessions of user. sh.mu must be held.
func (sh *sessionShard) userCount(user string) int {
	n := len(sh.more[user])
	if sh.users[user] != nil {
		n++
	}
	return n
}

func (b *Bridge) shard(key string) *sessionShard {
	return &b.sessions[maphash.String(b.seed, key)%uint64(len(b.sessions))]
}

// register adds a new session, sharded by its id.
func (b *Bridge) register(s *session) {
	sh := b.shard(s.id)
	sh.mu.Lock()
	sh.all[s] = struct{}{}
	sh.mu.Unlock()
	b.nConns.Add(1)
	if s.cmds != nil {
		b.commands.add(s)
	}
}

// addUser records an authenticated session of a user, sharded by user;
// it fails when the user has max_conns_per_user sessions already.
func (b *Bridge) addUser(s *session) bool {
	sh := b.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.userCount(s.user) >= b.cfg.MaxConnsPerUser {
		return false
	}
	if sh.users[s.user] == nil {
		sh.users[s.user] = s
	} else {
		sh.more[s.user] = append(sh.more[s.user], s)
	}
	return true
}

// unregister forgets a closed session.
func (b *Bridge) unregister(s *session) {
	if s.cmds != nil {
		b.commands.remove(s)
	}
	sh := b.shard(s.id)
	sh.mu.Lock()
	_, ok := sh.all[s]
	delete(sh.all, s)
	sh.mu.Unlock()
	if ok {
		b.nConns.Add(-1)
	}
	if s.user == "" || !s.userAdded {
		return
	}
	sh = b.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.more[s.user]
	if sh.users[s.user] == s {
		// The first goes: another, if any, takes its place.
		if len(list) == 0 {
			delete(sh.users, s.user)
			return
		}
		sh.users[s.user] = list[0]
		list = list[1:]
	} else {
		for i, x := range list {
			if x == s {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
	}
	if len(list) == 0 {
		delete(sh.more, s.user)
	} else {
		sh.more[s.user] = list
	}
}

// userSessions returns the open sessions of a user.
func (b *Bridge) userSessions(user string) []*session {
	sh := b.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	first := sh.users[user]
	if first == nil {
		return nil
	}
	return append([]*session{first}, sh.more[user]...)
}

// eachSession calls f for every registered session, under its shard lock:
// f must not block.
func (b *Bridge) eachSession(f func(*session)) {
	for i := range b.sessions {
		sh := &b.sessions[i]
		sh.mu.Lock()
		for s := range sh.all {
			f(s)
		}
		sh.mu.Unlock()
	}
}

// heartbeat sends every session's transport a heartbeat each ping
// interval; a WebSocket that did not answer the previous ping is closed.
// The sessions are visited in heartbeatSlots parts, one part per tick of
// PingInterval/slots, so that each still gets one heartbeat per interval
// but the node does not write to all of them at once: pinging 10,000
// WebSockets in one burst held back every delivery and publish ack for
// 200-260 ms, once per interval (BENCHMARKS.md, session 25).
func (b *Bridge) heartbeat() {
	interval := b.cfg.PingInterval.D()
	slots := heartbeatSlots(interval)
	t := time.NewTicker(interval / time.Duration(slots))
	defer t.Stop()
	for k := 0; ; k = (k + 1) % slots {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.heartbeatSlot(k, slots, func(s *session) { s.t.heartbeat() })
		}
	}
}

// Heartbeats are spread over at most maxHeartbeatSlots ticks per interval,
// each at least minHeartbeatTick apart.
const (
	maxHeartbeatSlots = 128
	minHeartbeatTick  = 10 * time.Millisecond
)

// heartbeatSlots is the number of parts the sessions are pinged in over
// one interval: a power of two, so that it divides the shard count or is
// a multiple of it.
func heartbeatSlots(interval time.Duration) int {
	n := 1
	for n < maxHeartbeatSlots && interval/time.Duration(2*n) >= minHeartbeatTick {
		n *= 2
	}
	return n
}

// heartbeatSlot calls f (under the shard's lock) for part q of slots:
// with fewer slots than shards, every session of the shards q, q+slots,
// …; with more, the sessions of shard q mod shards whose hbSlot picks part
// q/shards of that shard.
func (b *Bridge) heartbeatSlot(q, slots int, f func(*session)) {
	n := len(b.sessions)
	per, sub := max(slots/n, 1), q/n
	for j := q % n; j < n; j += slots {
		sh := &b.sessions[j]
		sh.mu.Lock()
		for s := range sh.all {
			if int(s.hbSlot)%per == sub {
				f(s)
			}
		}
		sh.mu.Unlock()
	}
}

// disconnectUser closes every session of a user (a backend Disconnect).
func (b *Bridge) disconnectUser(cmd *heraldv1.DisconnectRequest) {
	reason := cmd.Reason
	if reason == "" {
		reason = "disconnected by the server"
	}
	for _, s := range b.userSessions(cmd.User) {
		s.closeWith(CloseDisconnected, reason, cmd.Reconnect, 0)
	}
}

// unsubscribeUser removes every session of a user from a channel.
func (b *Bridge) unsubscribeUser(cmd *heraldv1.UnsubscribeRequest) {
	for _, s := range b.userSessions(cmd.User) {
		s.serverUnsubscribe(cmd.Channel, "unsubscribed by the server")
	}
}
