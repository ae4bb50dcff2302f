package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPrecedenceFileEnvFlags(t *testing.T) {
	cfg := Default()
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte("grpc_addr: 127.0.0.1:1\nhttp_addr: 127.0.0.1:2\nengine: redis\nlimits:\n  dedupe_window: 30s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cfg.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.Flags(fs)
	env := map[string]string{"HERALD_HTTP_ADDR": "127.0.0.1:3", "HERALD_ENGINE": "memory"}
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--engine", "redis"}); err != nil {
		t.Fatal(err)
	}
	if cfg.GRPCAddr != "127.0.0.1:1" || cfg.HTTPAddr != "127.0.0.1:3" || cfg.Engine != "redis" || cfg.Limits.DedupeWindow.D() != 30*time.Second {
		t.Fatalf("got grpc %s http %s engine %s dedupe %v", cfg.GRPCAddr, cfg.HTTPAddr, cfg.Engine, cfg.Limits.DedupeWindow.D())
	}
}

func TestUnknownKeysAreErrors(t *testing.T) {
	cfg := Default()
	err := cfg.Parse([]byte("grpc_adr: 127.0.0.1:1\n"))
	if err == nil || !strings.Contains(err.Error(), "grpc_adr") {
		t.Fatalf("err = %v, want one naming grpc_adr", err)
	}
	err = cfg.Parse([]byte(`{"namespaces":[{"name":"chat","histroy_size":5}]}`))
	if err == nil || !strings.Contains(err.Error(), "histroy_size") {
		t.Fatalf("JSON: err = %v, want one naming histroy_size", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want string // "" = valid
	}{
		{"defaults", "", ""},
		{"namespaces", "namespaces:\n- name: chat\n  history_size: 10\n  presence: true\n  join_leave: true\n", ""},
		{"empty engine", "engine: ''", "engine"},
		{"redis cluster", "engine: redis\nredis:\n  addrs: [a:1, b:2, c:3]\n  username: herald\n  wait_replicas: 1\n  wait_timeout: 200ms\n", ""},
		{"redis cluster with a database", "engine: redis\nredis:\n  addrs: [a:1, b:2]\n  db: 2\n", "redis.db"},
		{"redis cluster flag with a database", "engine: redis\nredis:\n  addrs: [a:1]\n  cluster: true\n  db: 1\n", "redis.db"},
		{"redis bad address", "engine: redis\nredis:\n  addrs: [nope]\n", "redis.addrs"},
		{"redis prefix with a brace", "engine: redis\nredis:\n  prefix: 'a{b'\n", "prefix"},
		{"redis negative wait", "engine: redis\nredis:\n  wait_replicas: -1\n", "wait_replicas"},
		{"redis tiny wait timeout", "engine: redis\nredis:\n  wait_replicas: 1\n  wait_timeout: 1us\n", "wait_timeout"},
		{"redis ca without tls", "engine: redis\nredis:\n  tls_ca_file: ca.pem\n", "redis.tls: true"},
		{"redis cert without key", "engine: redis\nredis:\n  tls: true\n  tls_cert_file: c.pem\n", "go together"},
		{"bad namespace name", "namespaces:\n- name: 'a:b'\n", "name"},
		{"duplicate namespace", "namespaces:\n- name: a\n- name: a\n", "twice"},
		{"join without presence", "namespaces:\n- name: a\n  join_leave: true\n", "needs presence"},
		{"short key", "api_keys:\n- name: k\n  key: short\n", "16 characters"},
		{"bad duration", "shutdown_timeout: soon", "invalid duration"},
		{"bad addr", "grpc_addr: nope", "grpc_addr"},
		{"tls", "tls:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n", ""},
		{"tls cert without key", "tls:\n  cert_file: c.pem\n", "go together"},
		{"client ca without cert", "tls:\n  client_ca_file: ca.pem\n", "needs tls.cert_file"},
		{"core cert without key", "bridge:\n  core_cert_file: c.pem\n", "core_key_file"},
		{"pprof loopback", "pprof_addr: 127.0.0.1:6060", ""},
		{"pprof public", "pprof_addr: 0.0.0.0:6060", "loopback"},
		{"limits", "bridge:\n  max_connections: 10\n  max_conns_per_ip: 2\n  accept_rate: 100\n  user_publish_rate: 5\n", ""},
		{"negative limit", "bridge:\n  accept_rate: -1\n", "must not be negative"},
		{"key rate", "api_keys:\n- name: k\n  key: 0123456789abcdef\n  publish_rate: 10\n", ""},
		{"negative key rate", "api_keys:\n- name: k\n  key: 0123456789abcdef\n  publish_rate: -1\n", "publish_rate"},
		{"drain delay too long", "drain_delay: 20s\nshutdown_timeout: 10s\n", "drain_delay"},
		{"memory limits", "limits:\n  max_channels_per_node: 10\n  max_idempotency_keys: 5\n  max_idempotency_keys_per_channel: 2\n  subscriber_queue_bytes: 65536\n", ""},
		{"queue bytes below payload", "limits:\n  subscriber_queue_bytes: 1000\n", "subscriber_queue_bytes"},
		{"no channel cap", "limits:\n  max_channels_per_node: 0\n", "max_channels_per_node"},
		{"no key cap", "limits:\n  max_idempotency_keys_per_channel: -1\n", "max_idempotency_keys_per_channel"},
		{"hooks grpc", "hooks:\n  grpc_addr: 127.0.0.1:7600\n  connect: true\n  refresh: true\n  rpc_methods: [profile.get, 'orders.*', '*']\n  cookies: [session]\n  headers: [X-Request-Id]\n", ""},
		{"hooks http", "hooks:\n  http_url: https://app.example.com/herald\n  connect: true\nnamespaces:\n- name: room\n  subscribe_hook: true\n  publish_hook: true\n", ""},
		{"hooks urls only", "hooks:\n  urls: {connect: 'http://127.0.0.1:1/c'}\n  connect: true\n", ""},
		{"hooks url missing", "hooks:\n  urls: {connect: 'http://127.0.0.1:1/c'}\n  connect: true\n  rpc_methods: [a]\n", "hooks.urls.rpc"},
		{"hooks without backend", "hooks:\n  connect: true\n", "no backend is set"},
		{"namespace hook without backend", "namespaces:\n- name: room\n  publish_hook: true\n", "no backend is set"},
		{"hooks two backends", "hooks:\n  grpc_addr: 127.0.0.1:1\n  http_url: http://127.0.0.1:2\n", "not both"},
		{"hooks bad url", "hooks:\n  http_url: ftp://x\n", "http:// or https://"},
		{"hooks unknown url", "hooks:\n  urls: {conect: 'http://127.0.0.1:1/c'}\n", "unknown hook \"conect\""},
		{"hooks refresh without connect", "hooks:\n  grpc_addr: 127.0.0.1:1\n  refresh: true\n", "needs hooks.connect"},
		{"hooks timeout", "hooks:\n  timeout: 30s\n", "at most 10s"},
		{"hooks in flight", "hooks:\n  max_in_flight: 0\n", "max_in_flight"},
		{"hooks cookie header", "hooks:\n  headers: [cookie]\n", "hooks.cookies"},
		{"hooks bad header", "hooks:\n  headers: ['a b']\n", "not a header name"},
		{"hooks bad method", "hooks:\n  grpc_addr: 127.0.0.1:1\n  rpc_methods: ['a b']\n", "rpc_methods"},
		{"hooks inner star", "hooks:\n  grpc_addr: 127.0.0.1:1\n  rpc_methods: ['a*b']\n", "rpc_methods"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Default()
			err := cfg.Parse([]byte(tc.yaml))
			if err == nil {
				err = cfg.Validate()
			}
			if tc.want == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestOperationsFlags(t *testing.T) {
	cfg := Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.Flags(fs)
	env := map[string]string{"HERALD_ACCEPT_RATE": "50", "HERALD_TLS_CERT_FILE": "c.pem"}
	if err := ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	args := []string{"--tls-key-file", "k.pem", "--pprof-addr", "127.0.0.1:6060", "--max-connections", "7",
		"--max-conns-per-ip", "3", "--user-publish-rate", "2.5", "--core-ca-file", "ca.pem", "--drain-delay", "1s"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	b := cfg.Bridge
	if !cfg.TLS.Enabled() || cfg.TLS.KeyFile != "k.pem" || cfg.PprofAddr != "127.0.0.1:6060" || b.AcceptRate != 50 ||
		b.MaxConnections != 7 || b.MaxConnsPerIP != 3 || b.UserPublishRate != 2.5 || !b.CoreTLSEnabled() || cfg.DrainDelay.D() != time.Second {
		t.Fatalf("got %+v tls %+v pprof %q drain %v", b, cfg.TLS, cfg.PprofAddr, cfg.DrainDelay.D())
	}
	if d := Default(); d.Bridge.MaxConnections != 100000 || d.Bridge.AcceptRate != 0 || d.PprofAddr != "" || d.TLS.Enabled() {
		t.Fatalf("defaults changed: %+v", d.Bridge)
	}
}

// TestHooksHelpers: URLs per hook, the RPC allowlist, TLS.
func TestHooksHelpers(t *testing.T) {
	h := Hooks{HTTPURL: "http://app/herald/", URLs: map[string]string{"rpc": "http://rpc.app/call"}, RPCMethods: []string{"profile.get", "orders.*"}}
	if got := h.URL("connect"); got != "http://app/herald/connect" {
		t.Errorf("URL(connect) = %q", got)
	}
	if got := h.URL("rpc"); got != "http://rpc.app/call" {
		t.Errorf("URL(rpc) = %q", got)
	}
	for m, want := range map[string]bool{"profile.get": true, "profile.gets": false, "profile": false, "orders.": true, "orders.list": true, "order": false, "": false} {
		if got := h.AllowsRPC(m); got != want {
			t.Errorf("AllowsRPC(%q) = %v, want %v", m, got, want)
		}
	}
	if !(Hooks{RPCMethods: []string{"*"}}).AllowsRPC("anything") {
		t.Error("* does not allow every method")
	}
	if h.TLSEnabled() || !(Hooks{HTTPURL: "https://x"}).TLSEnabled() || !(Hooks{CAFile: "ca.pem"}).TLSEnabled() {
		t.Error("TLSEnabled is wrong")
	}
	if (Hooks{GRPCAddr: "a:1"}).URL("connect") != "" {
		t.Error("a gRPC backend has hook URLs")
	}
}

func TestImplicitNamespaces(t *testing.T) {
	cfg := Default()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, ns := range cfg.Namespaces {
		names[ns.Name] = true
	}
	if !names[""] || !names["user"] || !names["chat"] {
		t.Fatalf("namespaces = %v, want '', user and chat", names)
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	cfg := Default()
	cfg.APIKeys = []APIKey{{Name: "k", Key: "super-secret-key-123"}}
	cfg.Bridge.JWTSecret = "jwt-secret"
	cfg.Redis.Password = "pw-secret"
	cfg.Hooks.APIKey = "hooks-secret"
	out := cfg.Redacted()
	for _, s := range []string{"super-secret-key-123", "jwt-secret", "pw-secret", "hooks-secret"} {
		if strings.Contains(out, s) {
			t.Fatalf("Redacted() leaks %q: %s", s, out)
		}
	}
	if cfg.APIKeys[0].Key != "super-secret-key-123" {
		t.Fatal("Redacted() changed the original")
	}
}

// FuzzParse checks that no configuration file crashes the loader.
func FuzzParse(f *testing.F) {
	f.Add("grpc_addr: 127.0.0.1:1\n")
	f.Add(`{"engine":"redis","redis":{"addrs":["a:1"]}}`)
	f.Add("namespaces:\n- name: chat\n  history_ttl: 5m\n")
	f.Add("limits: [1,2]")
	f.Add("shutdown_timeout: 1.5")
	f.Fuzz(func(t *testing.T, s string) {
		cfg := Default()
		if cfg.Parse([]byte(s)) == nil {
			_ = cfg.Validate()
		}
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.Flags(fs)
	})
}

// TestEveryFlagHasRoles: each flag says which serving commands use it, so
// that none is offered by accident to a command that ignores it.
func TestEveryFlagHasRoles(t *testing.T) {
	cfg := Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	cfg.Flags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := flagRoles[f.Name]; !ok {
			t.Errorf("flag --%s is not in flagRoles: say which roles use it", f.Name)
		}
	})
	for name := range flagRoles {
		if fs.Lookup(name) == nil {
			t.Errorf("flagRoles names --%s, which Flags does not register", name)
		}
	}
}

func TestFlagsFor(t *testing.T) {
	names := func(r Role) map[string]bool {
		cfg := Default()
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cfg.FlagsFor(fs, r)
		m := map[string]bool{}
		fs.VisitAll(func(f *flag.Flag) { m[f.Name] = true })
		return m
	}
	serve, core, bridge := names(RoleServe), names(RoleCore), names(RoleBridge)
	for _, tc := range []struct {
		role       string
		flags      map[string]bool
		has, hasNo []string
	}{
		{"serve", serve, []string{"grpc-addr", "engine", "api-keys", "jwt-secret", "allowed-origins", "http-addr"}, []string{"core", "core-api-key", "core-ca-file"}},
		{"core", core, []string{"grpc-addr", "engine", "redis-addrs", "api-keys", "tls-client-ca-file", "http-addr"}, []string{"jwt-secret", "anonymous", "allowed-origins", "core", "core-api-key", "max-frame", "hooks-grpc-addr", "hooks-connect"}},
		{"bridge", bridge, []string{"core", "core-api-key", "core-tls", "core-ca-file", "core-cert-file", "core-key-file", "jwt-secret", "jwt-public-keys", "allowed-origins", "http-addr", "tls-cert-file", "hooks-grpc-addr", "hooks-http-url", "hooks-connect", "hooks-cookies", "hooks-api-key"}, []string{"engine", "redis-addrs", "redis-password", "api-keys", "grpc-addr", "dedupe-window"}},
	} {
		for _, f := range tc.has {
			if !tc.flags[f] {
				t.Errorf("herald %s has no --%s", tc.role, f)
			}
		}
		for _, f := range tc.hasNo {
			if tc.flags[f] {
				t.Errorf("herald %s offers --%s, which it does not use", tc.role, f)
			}
		}
	}

	// A flag given to the role's set still sets the configuration.
	cfg := Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.FlagsFor(fs, RoleBridge)
	if err := fs.Parse([]string{"--core", "core:7400", "--jwt-secret", "s", "--anonymous"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Bridge.Core != "core:7400" || cfg.Bridge.JWTSecret != "s" || !cfg.Bridge.Anonymous {
		t.Fatalf("bridge = %+v", cfg.Bridge)
	}
	if err := fs.Parse([]string{"--engine", "redis"}); err == nil {
		t.Fatal("herald bridge accepted --engine")
	}
}
