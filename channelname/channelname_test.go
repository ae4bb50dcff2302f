package channelname

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"news", true},
		{"chat:lobby", true},
		{"user:42", true},
		{"a.b-c_d@e=f,g/h+i:j", true},
		{strings.Repeat("a", 255), true},
		{"", false},
		{strings.Repeat("a", 256), false},
		{"with space", false},
		{"ünïcode", false},
		{":nons", false},
		{"user:", false},
		{"new\nline", false},
	} {
		if err := Validate(tc.name); (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "anything:at/all", true},
		{"chat:*", "chat:lobby", true},
		{"chat:*", "chatter", false},
		{"user:?", "user:1", true},
		{"user:?", "user:12", false},
		{"*:lobby", "chat:lobby", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"", "", true},
		{"", "x", false},
	} {
		if got := Match(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// FuzzValidate checks that validation never panics and that every
// accepted name obeys the documented rules.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"news", "chat:lobby", "user:42", "", ":", "user:", "a b", "\xff", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if Validate(name) != nil {
			return
		}
		if len(name) == 0 || len(name) > MaxLen || name[0] == ':' {
			t.Fatalf("accepted %q", name)
		}
		for i := 0; i < len(name); i++ {
			if !allowed(name[i]) {
				t.Fatalf("accepted %q with byte %q", name, name[i])
			}
		}
		_ = Namespace(name)
		_ = Match(name, name)
	})
}
