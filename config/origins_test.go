package config

import (
	"slices"
	"strings"
	"testing"
)

func TestNormalizeOrigin(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"https://Herald.Example.com", "https://herald.example.com", ""},
		{"https://herald.example.com:443", "https://herald.example.com", ""},
		{"http://herald.example.com:80/", "http://herald.example.com", ""},
		{"http://127.0.0.1:7401", "http://127.0.0.1:7401", ""},
		{"http://[::1]:7401", "http://[::1]:7401", ""},
		{"https://a.example:8443", "https://a.example:8443", ""},
		{"null", "", "want http"},
		{"ftp://a.example", "", "want http"},
		{"https://a.example/path", "", "no path"},
		{"https://user@a.example", "", "no path"},
		{"herald.example.com", "", "want http"},
	} {
		got, err := NormalizeOrigin(tc.in)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("NormalizeOrigin(%q) = %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// TestOwnOrigins: the node's own origins come from its listen address
// (its loopback spellings on loopback and wildcard addresses) and
// public_origins, under the listener's scheme.
func TestOwnOrigins(t *testing.T) {
	c := Default()
	if got, want := c.OwnOrigins("127.0.0.1:7401"), []string{"http://127.0.0.1:7401", "http://localhost:7401", "http://[::1]:7401"}; !slices.Equal(got, want) {
		t.Errorf("loopback: %v, want %v", got, want)
	}
	c.TLS = TLS{CertFile: "c", KeyFile: "k"}
	c.PublicOrigins = []string{"https://Herald.example.com:443"}
	got := c.OwnOrigins("10.0.0.5:7401")
	if want := []string{"https://herald.example.com", "https://10.0.0.5:7401"}; !slices.Equal(got, want) {
		t.Errorf("public: %v, want %v", got, want)
	}
	if got := c.OwnOrigins("0.0.0.0:7401"); !slices.Contains(got, "https://localhost:7401") || !slices.Contains(got, "https://0.0.0.0:7401") {
		t.Errorf("wildcard: %v", got)
	}
	hosts := c.OwnHosts("10.0.0.5:7401")
	for _, h := range []string{"herald.example.com", "herald.example.com:443", "10.0.0.5:7401"} {
		if !slices.Contains(hosts, h) {
			t.Errorf("hosts %v lack %s", hosts, h)
		}
	}
	bad := Default()
	bad.PublicOrigins = []string{"https://a.example/app"}
	bad.Bridge.AllowedOrigins = []string{"*", "app.example.com"}
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "public_origins") || !strings.Contains(err.Error(), "allowed_origins") {
		t.Errorf("Validate: %v, want errors for both lists", err)
	}
}
