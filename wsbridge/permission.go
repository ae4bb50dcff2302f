package wsbridge

import (
	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
)

// granted reports whether id's own grants allow channel name: its own
// personal channel, or a grant pattern (a token's `channels` claim, the
// connect hook's channels and subscribe) matching it.
func granted(id *identity, name string) bool {
	if id == nil {
		return false
	}
	if id.user != "" && name == channelname.Personal(id.user) {
		return true
	}
	for _, p := range id.channels {
		if channelname.Grant(p, name) {
			return true
		}
	}
	return false
}

// canSubscribe decides, without hooks, whether id (nil or unnamed:
// anonymous) may subscribe to channel of namespace ns: its own personal
// channel always; any channel a grant matches; otherwise what the
// namespace allows. Personal channels of other users only through a
// grant. (A namespace with subscribe_hook asks the backend instead of its
// options: session.permitSubscribe.)
func canSubscribe(id *identity, ns *config.Namespace, name string) bool {
	if granted(id, name) {
		return true
	}
	if ns.Name == "user" {
		return false
	}
	return ns.AllowSubscribe && (id.named() || ns.AllowAnonymous)
}

// canPublish decides, without hooks, whether id (nil or unnamed:
// anonymous) may publish to ns.
func canPublish(id *identity, ns *config.Namespace) bool {
	return ns.AllowPublish && (id.named() || ns.AllowAnonymous)
}
