// Package channelname holds the rules of channel names that the core and the
// bridge share: what a valid name is, its namespace, the personal channel
// of a user, the grant patterns of token claims (Grant) and the plain glob
// of Channels filters (Match).
package channelname

import (
	"fmt"
	"strings"
)

// MaxLen is the longest channel name, in bytes.
const MaxLen = 255

// allowed reports whether c may appear in a channel name.
func allowed(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("_-.:@=,/+", c) >= 0
}

// Validate checks a channel name's syntax: 1-255 bytes of ASCII letters,
// digits and `_-.:@=,/+`, not starting with ':', and not a personal channel
// without a user. The error says what is wrong.
func Validate(name string) error {
	if name == "" {
		return fmt.Errorf("channel name is empty")
	}
	if len(name) > MaxLen {
		return fmt.Errorf("channel name is %d bytes long; the limit is %d", len(name), MaxLen)
	}
	for i := 0; i < len(name); i++ {
		if !allowed(name[i]) {
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

// Namespace returns the namespace of a channel: the text before the first
// ':', or "" when there is none.
func Namespace(name string) string {
	ns, _, ok := strings.Cut(name, ":")
	if !ok {
		return ""
	}
	return ns
}

// Personal returns the personal channel of a user: "user:<id>".
func Personal(user string) string { return "user:" + user }

// Match reports whether name matches the glob pattern, where '*' matches
// any run of bytes (':' and '/' included) and '?' one byte. It filters the
// admin Channels listing; it is not for permissions (see Grant), since
// "user:1*" matches "user:10" and "user:1:x".
func Match(pattern, name string) bool {
	// Iterative matching with backtracking to the last '*'.
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
