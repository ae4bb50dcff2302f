package service

import (
	"fmt"

	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// namespaces resolves channel names to their options.
type namespaces map[string]*config.Namespace

func newNamespaces(list []config.Namespace) namespaces {
	m := make(namespaces, len(list))
	for i := range list {
		ns := list[i]
		m[ns.Name] = &ns
	}
	return m
}

// lookup validates a channel name and returns its namespace's options.
func (n namespaces) lookup(name string) (*config.Namespace, error) {
	if err := channelname.Validate(name); err != nil {
		return nil, err
	}
	ns, ok := n[channelname.Namespace(name)]
	if !ok {
		return nil, fmt.Errorf("channel %q: unknown namespace %q", truncate(name, 64), channelname.Namespace(name))
	}
	return ns, nil
}
