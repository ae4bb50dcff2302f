package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"strings"
	"testing"
)

// TestServingCommandsListTheirOwnFlags: `herald core --help` and `herald
// bridge --help` list the flags of what they run, not serve's list.
func TestServingCommandsListTheirOwnFlags(t *testing.T) {
	help := func(cmd string) string {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{cmd, "--help"}, &out, &errOut)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("herald %s --help: %v", cmd, err)
		}
		return errOut.String()
	}
	has := func(usage, f string) bool {
		return strings.Contains(usage, "\n  -"+f+" ") || strings.Contains(usage, "\n  -"+f+"\n")
	}
	serve, core, bridge := help("serve"), help("core"), help("bridge")
	if serve == core || serve == bridge || core == bridge {
		t.Fatal("two serving commands print the same flags")
	}
	for _, tc := range []struct {
		cmd, usage string
		has, hasNo []string
	}{
		{"serve", serve, []string{"grpc-addr", "engine", "api-keys", "jwt-secret", "allowed-origins", "config"}, []string{"core", "core-api-key"}},
		{"core", core, []string{"grpc-addr", "engine", "redis-addrs", "api-keys", "config"}, []string{"jwt-secret", "jwt-public-keys", "anonymous", "allowed-origins", "core", "core-api-key"}},
		{"bridge", bridge, []string{"core", "core-api-key", "core-tls", "core-ca-file", "jwt-secret", "allowed-origins", "http-addr", "config"}, []string{"engine", "redis-addrs", "api-keys", "grpc-addr"}},
	} {
		for _, f := range tc.has {
			if !has(tc.usage, f) {
				t.Errorf("herald %s --help does not list --%s", tc.cmd, f)
			}
		}
		for _, f := range tc.hasNo {
			if has(tc.usage, f) {
				t.Errorf("herald %s --help lists --%s", tc.cmd, f)
			}
		}
	}
}
