package service

import (
	"fmt"
	"strings"

	"github.com/herald-io/herald/config"
)

// MaxChannelLen is the longest channel name, in bytes.
const MaxChannelLen = 255

// channelChar reports whether c may appear in a channel name.
func channelChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("_-.:@=,/+", c) >= 0
}

// ValidateChannel checks a channel name's syntax: 1-255 bytes of ASCII
// letters, digits and `_-.:@=,/+`, not starting with ':'. The error says
// what is wrong.
func ValidateChannel(name string) error {
	if name == "" {
		return fmt.Errorf("channel name is empty")
	}
	if len(name) > MaxChannelLen {
		return fmt.Errorf("channel name is %d bytes long; the limit is %d", len(name), MaxChannelLen)
	}
	for i := 0; i < len(name); i++ {
		if !channelChar(name[i]) {
			return fmt.Errorf("channel name %q has a forbidden character at byte %d (allowed: letters, digits and _-.:@=,/+)", truncate(name, 64), i)
		}
	}
	if name[0] == ':' {
		return fmt.Errorf("channel name %q starts with ':' (empty namespace)", truncate(name, 64))
	}
	if ns, rest, ok := strings.Cut(name, ":"); ok && ns == "user" && rest == "" {
		return fmt.Errorf("personal channel %q names no user", name)
	}
	return nil
}

// NamespaceOf returns the namespace part of a channel name: the text before
// the first ':' or "" when there is none.
func NamespaceOf(channel string) string {
	ns, _, ok := strings.Cut(channel, ":")
	if !ok {
		return ""
	}
	return ns
}

// PersonalChannel returns the personal channel of a user: "user:<id>".
func PersonalChannel(user string) string { return "user:" + user }

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
func (n namespaces) lookup(channel string) (*config.Namespace, error) {
	if err := ValidateChannel(channel); err != nil {
		return nil, err
	}
	ns, ok := n[NamespaceOf(channel)]
	if !ok {
		return nil, fmt.Errorf("channel %q: unknown namespace %q", truncate(channel, 64), NamespaceOf(channel))
	}
	return ns, nil
}
