package service

import (
	"strings"
	"testing"
)

func TestValidateChannel(t *testing.T) {
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
		if err := ValidateChannel(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidateChannel(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestGlob(t *testing.T) {
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
		if got := Glob(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

// FuzzValidateChannel checks that validation never panics and that every
// accepted name obeys the documented rules.
func FuzzValidateChannel(f *testing.F) {
	for _, s := range []string{"news", "chat:lobby", "user:42", "", ":", "user:", "a b", "\xff", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateChannel(name) != nil {
			return
		}
		if len(name) == 0 || len(name) > MaxChannelLen || name[0] == ':' {
			t.Fatalf("accepted %q", name)
		}
		for i := 0; i < len(name); i++ {
			if !channelChar(name[i]) {
				t.Fatalf("accepted %q with byte %q", name, name[i])
			}
		}
		_ = NamespaceOf(name)
		_ = Glob(name, name)
	})
}
