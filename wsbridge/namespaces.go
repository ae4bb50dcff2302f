package wsbridge

import (
	"sync/atomic"

	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// namespaces resolves channel names to their options, with the bridge's
// error for a bad name. It starts with the bridge's own configuration;
// once the core sends its namespaces (the first message of each
// BridgeSession), those are used instead, so that a split bridge and its
// core never disagree. A channel the bridge already carries keeps the
// options it was opened with until it closes.
type namespaces struct {
	cur     atomic.Pointer[config.Namespaces]
	adopted atomic.Bool // the core's are in cur
}

// newNamespaces starts with the bridge's own namespaces; core says they
// are the core's already (the same configuration, in one process).
func newNamespaces(own config.Namespaces, core bool) *namespaces {
	n := &namespaces{}
	n.cur.Store(&own)
	n.adopted.Store(core)
	return n
}

// lookup returns the options of name's namespace. Before the core's
// namespaces have come, a well-formed name in a namespace the bridge does
// not know may well be in the core's: it is unavailable (temporary, the
// client retries), not refused.
func (n *namespaces) lookup(name string) (*config.Namespace, error) {
	ns, err := n.cur.Load().Lookup(name)
	if err != nil {
		if !n.adopted.Load() && channelname.Validate(name) == nil {
			return nil, reqErr(ErrUnavailable, "channel %q: this bridge has not yet received its core's namespaces (the core is unreachable, or older than the bridge); retry", name)
		}
		return nil, reqErr(ErrBadChannel, "%s", err.Error())
	}
	return ns, nil
}

// CoreNamespaces reports whether b resolves channels with its core's
// namespaces: once the core has sent them, from the start when the core
// shares b's configuration (Options.CoreConfig).
func (b *Bridge) CoreNamespaces() bool { return b.ns.adopted.Load() }

// adoptNamespaces takes the core's namespaces: what the bridge resolves from now
// on. It logs how they differ from what the bridge used before.
func (b *Bridge) adoptNamespaces(l *heraldv1.NamespaceList) {
	core, err := config.NamespacesFrom(l)
	if err != nil {
		b.log.Error("the core sent namespaces this bridge cannot use; it keeps its own", "err", err)
		return
	}
	prev := *b.ns.cur.Swap(&core)
	if !b.ns.adopted.Swap(true) {
		if d := prev.Diff(core, "this bridge's configuration", "the core's"); len(d) > 0 {
			b.log.Info("this bridge's own namespaces differ from the core's; it uses the core's", "differences", d)
		}
	} else if d := prev.Diff(core, "the core's before", "the core's now"); len(d) > 0 {
		b.log.Info("the core's namespaces changed; this bridge uses them for the channels it opens from now on", "differences", d)
	}
	if b.hooks == nil {
		for _, ns := range core {
			if ns.SubscribeHook || ns.PublishHook {
				b.log.Error("a namespace of the core asks the application's backend (subscribe_hook or publish_hook), and this bridge has no hooks configured: its subscriptions and publications are refused until hooks are configured here", "namespace", ns.Name)
			}
		}
	}
}
