package channelname

import (
	"strings"
	"testing"
)

// TestGrant is the grant pattern language as a table: wildcards match
// whole ':'-separated segments only, so no grant crosses the namespace
// separator or matches an id that merely starts with the same digits.
func TestGrant(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		// literal segments
		{"chat:lobby", "chat:lobby", true},
		{"chat:lobby", "chat:lobby2", false},
		{"chat:lobby", "chat:lobby:x", false},
		{"user:1", "user:1", true},
		{"user:1", "user:10", false},
		{"news", "news", true},
		{"news", "news:x", false},
		// "*": exactly one whole segment
		{"chat:*", "chat:lobby", true},
		{"chat:*", "chat:lobby:x", false},
		{"chat:*", "chatter", false},
		{"chat:*", "chat", false},
		{"chat:*", "chat:", false},
		{"*", "news", true},
		{"*", "chat:lobby", false},
		{"*", "user:42", false},
		{"*:lobby", "chat:lobby", true},
		{"*:lobby", "chat:lobby:x", false},
		{"user:*:inbox", "user:42:inbox", true},
		{"user:*:inbox", "user:42:outbox", false},
		{"chat:*", "chat:a/b", true}, // '/' is not a separator
		// "**": one or more segments, at the end only
		{"chat:**", "chat:lobby", true},
		{"chat:**", "chat:lobby:x:y", true},
		{"chat:**", "chat", false},
		{"chat:**", "chatter:x", false},
		{"**", "anything:at:all", true},
		{"**", "news", true},
		// partial-segment wildcards are invalid and match nothing (the
		// old glob let "user:1*" grant user:10 and user:1x:anything)
		{"user:1*", "user:1", false},
		{"user:1*", "user:10", false},
		{"user:1*", "user:1x:secret", false},
		{"user:?", "user:1", false},
		{"ch*", "chat:lobby", false},
		{"**:x", "a:x", false},
		{"", "", false},
		{"chat::x", "chat::x", false},
	} {
		if got := Grant(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Grant(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestValidateGrant(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		err     string // "" = valid
	}{
		{"chat:lobby", ""},
		{"chat:*", ""},
		{"chat:**", ""},
		{"*:lobby", ""},
		{"**", ""},
		{"user:42", ""},
		{"", "empty"},
		{"user:1*", "whole segment"},
		{"user:?", "whole segment"},
		{"a***", "whole segment"},
		{"**:x", "last segment"},
		{"chat::x", "empty segment"},
		{"chat:", "empty segment"},
		{"chat:lob by", "forbidden"},
		{strings.Repeat("a", 256), "limit"},
	} {
		err := ValidateGrant(tc.pattern)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ValidateGrant(%q) = %v, want %q", tc.pattern, err, tc.err)
		}
	}
}

// FuzzGrant checks that Grant never panics, that a valid pattern with no
// wildcard matches exactly itself, and that "*" never matches across ':'.
func FuzzGrant(f *testing.F) {
	for _, s := range [][2]string{{"chat:*", "chat:lobby"}, {"user:1*", "user:10"}, {"**", "a:b"}, {"*:x", "a:x"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		ok := Grant(pattern, name)
		if ok && ValidateGrant(pattern) != nil {
			t.Fatalf("invalid pattern %q matched %q", pattern, name)
		}
		if ok && !strings.Contains(pattern, "**") && strings.Count(pattern, ":") != strings.Count(name, ":") {
			t.Fatalf("%q matched %q across segments", pattern, name)
		}
		if ValidateGrant(pattern) == nil && !strings.Contains(pattern, "*") && Grant(pattern, name) != (pattern == name) {
			t.Fatalf("literal %q vs %q: %v", pattern, name, ok)
		}
	})
}
