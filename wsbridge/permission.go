package wsbridge

import (
	"fmt"
	"strings"

	"github.com/herald-io/herald/config"
)

// maxChannelLen is the longest channel name, as in the core.
const maxChannelLen = 255

// validChannel checks a channel name's syntax the way the core does
// (HeraldService doc): 1-255 bytes of ASCII letters, digits and
// `_-.:@=,/+`, not starting with ':'. The bridge checks it itself so that a
// bad name is refused before any upstream call.
func validChannel(name string) error {
	if name == "" {
		return fmt.Errorf("channel name is empty")
	}
	if len(name) > maxChannelLen {
		return fmt.Errorf("channel name is %d bytes long; the limit is %d", len(name), maxChannelLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-.:@=,/+", c) >= 0) {
			return fmt.Errorf("channel name has a forbidden character at byte %d (allowed: letters, digits and _-.:@=,/+)", i)
		}
	}
	if name[0] == ':' {
		return fmt.Errorf("channel name starts with ':' (empty namespace)")
	}
	if ns, rest, ok := strings.Cut(name, ":"); ok && ns == "user" && rest == "" {
		return fmt.Errorf("personal channel %q names no user", name)
	}
	return nil
}

func namespaceOf(channel string) string {
	ns, _, ok := strings.Cut(channel, ":")
	if !ok {
		return ""
	}
	return ns
}

// glob reports whether name matches pattern: '*' matches any run of bytes
// (':' included), '?' one byte.
func glob(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
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
func (n namespaces) lookup(channel string) (*config.Namespace, error) {
	if err := validChannel(channel); err != nil {
		return nil, reqErr(ErrBadChannel, "%s", err.Error())
	}
	ns, ok := n[namespaceOf(channel)]
	if !ok {
		return nil, reqErr(ErrBadChannel, "unknown namespace %q", namespaceOf(channel))
	}
	return ns, nil
}

// canSubscribe decides whether id (nil: anonymous) may subscribe to
// channel of namespace ns: its own personal channel always; any channel a
// `channels` claim matches; otherwise what the namespace allows. Personal
// channels of other users only through a claim.
func canSubscribe(id *identity, ns *config.Namespace, channel string) bool {
	if id != nil {
		if channel == "user:"+id.user {
			return true
		}
		for _, p := range id.channels {
			if glob(p, channel) {
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
