package config

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEExampleParses: the example configuration file in README.md is
// valid as written (strict keys, Validate).
func TestREADMEExampleParses(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "An example file:\n\n```yaml\n")
	if !ok {
		t.Fatal("README.md has no example file")
	}
	example, _, _ := strings.Cut(rest, "```")
	cfg := Default()
	if err := cfg.Parse([]byte(example)); err != nil {
		t.Fatalf("README example: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("README example: %v", err)
	}
	if len(cfg.PublicOrigins) == 0 || cfg.Bridge.JWTAudience == "" || cfg.Bridge.JWTIssuer == "" {
		t.Fatalf("the example shows no public_origins, jwt_audience or jwt_issuer: %+v", cfg.Bridge)
	}
}
