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
func (b *Bridge) heartbeat() {
	t := time.NewTicker(b.cfg.PingInterval.D())
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.eachSession(func(s *session) { s.t.heartbeat() })
		}
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
