package wsbridge

import (
	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
)

// namespaces resolves channel names to their options, with the bridge's
// error for a bad name.
type namespaces struct{ config.Namespaces }

func (n namespaces) lookup(name string) (*config.Namespace, error) {
	ns, err := n.Lookup(name)
	if err != nil {
		return nil, reqErr(ErrBadChannel, "%s", err.Error())
	}
	return ns, nil
}

// canSubscribe decides whether id (nil: anonymous) may subscribe to
// channel of namespace ns: its own personal channel always; any channel a
// `channels` claim matches; otherwise what the namespace allows. Personal
// channels of other users only through a claim.
func canSubscribe(id *identity, ns *config.Namespace, name string) bool {
	if id != nil {
		if name == channelname.Personal(id.user) {
			return true
		}
		for _, p := range id.channels {
			if channelname.Grant(p, name) {
				return true
			}
		}
	}
	if ns.Name == "user" {
		return false
	}
	return ns.AllowSubscribe && (id != nil || ns.AllowAnonymous)
}

// canPublish decides whether id (nil: anonymous) may publish to ns.
func canPublish(id *identity, ns *config.Namespace) bool {
	return ns.AllowPublish && (id != nil || ns.AllowAnonymous)
}
