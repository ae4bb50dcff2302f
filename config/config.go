// Package config holds Herald's configuration: its defaults, a strict YAML or
// JSON file, HERALD_* environment variables and command-line flags, applied
// in that order so that a later source wins.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/herald-io/herald/channelname"
	"go.yaml.in/yaml/v3"
)

// Config is the whole configuration of a node. Its zero value is not useful;
// start from Default.
type Config struct {
	// GRPCAddr is where the gRPC API listens. Default 127.0.0.1:7400.
	GRPCAddr string `yaml:"grpc_addr" json:"grpc_addr"`
	// HTTPAddr is where the REST gateway, /ws, the console, health and
	// metrics listen. Default 127.0.0.1:7401.
	HTTPAddr string `yaml:"http_addr" json:"http_addr"`
	// PublicOrigins are the origins (scheme://host[:port]) at which browsers
	// reach the HTTP listener when that is not its own address, for
	// example https://herald.example.com behind a load balancer. Pages on
	// them (the console) may open WebSockets and send REST writes, and,
	// without API keys, a request's Host must name one of them or the
	// listen address. Default: none (the listen address only; see
	// OwnOrigins).
	PublicOrigins []string `yaml:"public_origins" json:"public_origins"`
	// APIKeys authenticate backends (`authorization: Bearer <key>`). With
	// none, Herald refuses to listen on non-loopback addresses.
	APIKeys []APIKey `yaml:"api_keys" json:"api_keys"`
	// Engine selects where channel state lives: "memory" (default) or "redis".
	Engine string `yaml:"engine" json:"engine"`
	// Redis configures the Redis engine.
	Redis Redis `yaml:"redis" json:"redis"`
	// Namespaces configures channels by the prefix before their first colon.
	// The namespace "" applies to channels without a prefix; "user" to the
	// personal channels user:<id>. Both exist even when not listed.
	Namespaces []Namespace `yaml:"namespaces" json:"namespaces"`
	// Limits bound what clients may ask for.
	Limits Limits `yaml:"limits" json:"limits"`
	// Bridge configures the WebSocket bridge.
	Bridge Bridge `yaml:"bridge" json:"bridge"`
	// Hooks configures the bridge's calls to the application's backend
	// (connect, refresh, subscribe, publish and RPC hooks).
	Hooks Hooks `yaml:"hooks" json:"hooks"`
	// ShutdownTimeout bounds a graceful shutdown. Default 10s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `yaml:"log_level" json:"log_level"`
	// LogFormat is text or json. Default text.
	LogFormat string `yaml:"log_format" json:"log_format"`
	// TLS serves the HTTP (and WebSocket) and gRPC listeners over TLS.
	TLS TLS `yaml:"tls" json:"tls"`
	// PprofAddr, when set, serves net/http/pprof on its own listener; it
	// must be a loopback address. Default empty: off.
	PprofAddr string `yaml:"pprof_addr" json:"pprof_addr"`
	// DrainDelay is how long a node keeps serving with readiness off after
	// SIGTERM before it starts closing connections, so that load balancers
	// stop sending it new ones. It counts against ShutdownTimeout. Default 0.
	DrainDelay Duration `yaml:"drain_delay" json:"drain_delay"`
}

// TLS configures the node's listeners. One certificate serves both the
// HTTP and the gRPC listener; it is re-read when its files change, so a
// renewed certificate is served without a restart.
type TLS struct {
	// CertFile and KeyFile are PEM files of the certificate (with its
	// chain) and its private key. Both or neither.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ClientCAFile, when set, makes the gRPC listener require client
	// certificates signed by these CAs (mTLS for backends and bridges).
	// The HTTP listener, which browsers use, does not ask for one.
	ClientCAFile string `yaml:"client_ca_file" json:"client_ca_file"`
}

// Enabled reports whether the listeners use TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// APIKey is one backend credential.
type APIKey struct {
	// Name identifies the key in logs; the key itself is never logged.
	Name string `yaml:"name" json:"name"`
	// Key is the secret sent as a bearer token.
	Key string `yaml:"key" json:"key"`
	// Scopes limit what the key may do; empty means "admin" (everything).
	//   publish, publish:<ns>  Publish, PublishStream, Broadcast (in <ns> only)
	//   read, read:<ns>        Subscribe, History, Presence, PresenceStats
	//   bridge                 what a WebSocket bridge needs: publish, read
	//                          and BridgeSession
	//   admin                  everything, including Disconnect,
	//                          Unsubscribe, Channels and Info
	Scopes []string `yaml:"scopes" json:"scopes"`
	// PublishRate is how many publications per second the key may make on
	// one node, over all its calls (a Broadcast counts one per channel);
	// beyond it publishes fail with RESOURCE_EXHAUSTED. 0 (the default) is
	// unlimited.
	PublishRate float64 `yaml:"publish_rate" json:"publish_rate"`
	// PublishBurst is the token bucket's size. Default: PublishRate, at
	// least 1.
	PublishBurst int `yaml:"publish_burst" json:"publish_burst"`
}

// ValidScope reports whether s is a scope an API key may have.
func ValidScope(s string) bool {
	verb, ns, scoped := strings.Cut(s, ":")
	switch verb {
	case "publish", "read":
		return !scoped || ns == "" || validNamespaceName(ns)
	case "bridge", "admin":
		return !scoped
	}
	return false
}

// Redis configures the Redis engine.
type Redis struct {
	// Addrs are host:port addresses: the one Redis, or seeds of a Redis
	// Cluster (several addresses mean a cluster). Default 127.0.0.1:6379.
	Addrs []string `yaml:"addrs" json:"addrs"`
	// Cluster selects Redis Cluster with a single seed address.
	Cluster bool `yaml:"cluster" json:"cluster"`
	// Username for AUTH with an ACL user; empty for the default user.
	Username string `yaml:"username" json:"username"`
	// Password for AUTH; may also come from HERALD_REDIS_PASSWORD.
	Password string `yaml:"password" json:"password"`
	// DB is the database number (0 on a cluster, which has no other).
	DB int `yaml:"db" json:"db"`
	// TLS enables TLS to Redis, verified against the system's roots or
	// TLSCAFile; TLSCertFile and TLSKeyFile present a client certificate.
	TLS         bool   `yaml:"tls" json:"tls"`
	TLSCAFile   string `yaml:"tls_ca_file" json:"tls_ca_file"`
	TLSCertFile string `yaml:"tls_cert_file" json:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file" json:"tls_key_file"`
	// Prefix is prepended to every key and pub/sub channel. Default "herald".
	Prefix string `yaml:"prefix" json:"prefix"`
	// PresenceTTL is how long a presence entry outlives the last refresh
	// by its node (every third of it), which bounds how long the clients
	// of a node that died stay listed before their leave events. Default
	// 30s (0 is the default).
	PresenceTTL Duration `yaml:"presence_ttl" json:"presence_ttl"`
	// WaitReplicas, when above 0, acknowledges a publication only once
	// WAIT says that many replicas of its primary received it, within
	// WaitTimeout (default 500ms); otherwise the publish answers
	// UNAVAILABLE saying that it may or may not have been stored. With 0
	// (the default) replication is asynchronous and a failover can lose
	// acknowledged publications.
	WaitReplicas int      `yaml:"wait_replicas" json:"wait_replicas"`
	WaitTimeout  Duration `yaml:"wait_timeout" json:"wait_timeout"`
}

// DefaultWaitTimeout is redis.wait_timeout when it is not set.
const DefaultWaitTimeout = 500 * time.Millisecond

// Namespace holds the options of channels that share a prefix.
type Namespace struct {
	// Name is the prefix ("chat" for chat:lobby).
	Name string `yaml:"name" json:"name"`
	// HistorySize is how many publications a channel retains for history
	// and recovery; 0 keeps none. Default 100 (when the namespace is listed
	// without it: 0).
	HistorySize int `yaml:"history_size" json:"history_size"`
	// HistoryTTL is how long a publication is retained. Default 5m.
	HistoryTTL Duration `yaml:"history_ttl" json:"history_ttl"`
	// Presence keeps a list of the connections subscribed.
	Presence bool `yaml:"presence" json:"presence"`
	// JoinLeave pushes join and leave events to subscribers (needs Presence).
	JoinLeave bool `yaml:"join_leave" json:"join_leave"`
	// AllowPublish lets browsers publish to the namespace's channels.
	AllowPublish bool `yaml:"allow_publish" json:"allow_publish"`
	// AllowSubscribe lets any authenticated browser subscribe; otherwise the
	// token's `channels` claim must grant the channel.
	AllowSubscribe bool `yaml:"allow_subscribe" json:"allow_subscribe"`
	// AllowAnonymous lets anonymous connections subscribe (with
	// AllowSubscribe) and publish (with AllowPublish).
	AllowAnonymous bool `yaml:"allow_anonymous" json:"allow_anonymous"`
	// AllowHistory lets subscribers read history; AllowPresence, presence.
	AllowHistory  bool `yaml:"allow_history" json:"allow_history"`
	AllowPresence bool `yaml:"allow_presence" json:"allow_presence"`
	// SubscribeHook asks the application's backend (hooks) whether a
	// browser may subscribe to a channel of the namespace, unless a grant
	// (a token's `channels` claim, Connect's channels) or the personal
	// channel allows it already; AllowSubscribe and AllowAnonymous are
	// then not consulted. History and presence need a subscription.
	SubscribeHook bool `yaml:"subscribe_hook" json:"subscribe_hook"`
	// PublishHook asks the application's backend (hooks) about every
	// browser publication to the namespace (allow, refuse, replace the
	// data, or skip); AllowPublish and AllowAnonymous are then not
	// consulted.
	PublishHook bool `yaml:"publish_hook" json:"publish_hook"`
}

// Limits bound sizes and counts that clients control.
type Limits struct {
	// MaxPayload is the largest payload in bytes. Default 65536.
	MaxPayload int `yaml:"max_payload" json:"max_payload"`
	// MaxHistoryPage is the largest history page. Default 1000.
	MaxHistoryPage int `yaml:"max_history_page" json:"max_history_page"`
	// SubscriberQueue is how many events a gRPC subscriber may have pending
	// before it is cut off as too slow. Default 4096. A SubscribeMany
	// stream (a bridge's upstream) may have 16 times as many.
	SubscriberQueue int `yaml:"subscriber_queue" json:"subscriber_queue"`
	// SubscriberQueueBytes bounds the same queue in bytes (payloads and
	// metadata of the pending events); beyond it the subscriber is cut off
	// with RESOURCE_EXHAUSTED. It must be at least MaxPayload. Default
	// 4 MiB (64 MiB for a SubscribeMany stream).
	SubscriberQueueBytes int `yaml:"subscriber_queue_bytes" json:"subscriber_queue_bytes"`
	// DedupeWindow is how long idempotency keys are remembered. The memory
	// engine forgets them at most 10 s later (its sweep); Redis expires
	// them on time. Default 2m.
	DedupeWindow Duration `yaml:"dedupe_window" json:"dedupe_window"`
	// MaxIdempotencyKeys bounds the idempotency keys the memory engine
	// remembers at once on this node; MaxIdempotencyKeysPerChannel bounds
	// them per channel. Beyond either the oldest key (of the channel) is
	// forgotten before its window ends, so a retry of that publication is
	// published again (herald_idempotency_keys_evicted_total counts them);
	// the publish itself always goes on. Defaults 1000000 and 100000. The Redis engine stores keys in Redis
	// with the window as their expiry and does not count them.
	MaxIdempotencyKeys           int `yaml:"max_idempotency_keys" json:"max_idempotency_keys"`
	MaxIdempotencyKeysPerChannel int `yaml:"max_idempotency_keys_per_channel" json:"max_idempotency_keys_per_channel"`
	// MaxChannelsPerNode bounds the channels whose state (epoch, offset,
	// history, idempotency keys) the memory engine holds; a publish that
	// would start one more is refused with RESOURCE_EXHAUSTED. Reads and
	// subscriptions never create state. A channel's state is forgotten at
	// the first sweep (every 10 s) after it has had no subscriber and no
	// presence on the node, no history and no idempotency key left, and no
	// publication, last unsubscribe or leave for 10 minutes (or its
	// history_ttl, if longer); see docs/operations.md. Default 1000000.
	// The Redis engine keeps channel state in Redis, bounded by its TTLs
	// and maxmemory.
	MaxChannelsPerNode int `yaml:"max_channels_per_node" json:"max_channels_per_node"`
	// MaxGRPCMessage is the largest gRPC message in bytes. Default 4 MiB.
	MaxGRPCMessage int `yaml:"max_grpc_message" json:"max_grpc_message"`
}

// Bridge configures browser connections.
type Bridge struct {
	// Core is the gRPC address of the core for `herald bridge`.
	Core string `yaml:"core" json:"core"`
	// CoreAPIKey authenticates the bridge to the core.
	CoreAPIKey string `yaml:"core_api_key" json:"core_api_key"`
	// JWTSecret verifies HS256 tokens.
	JWTSecret string `yaml:"jwt_secret" json:"jwt_secret"`
	// JWTAudience, when set, must be in a token's aud claim; JWTIssuer,
	// when set, must be its iss claim. Set both, so that a token minted for
	// another service sharing the key is refused.
	JWTAudience string `yaml:"jwt_audience" json:"jwt_audience"`
	JWTIssuer   string `yaml:"jwt_issuer" json:"jwt_issuer"`
	// JWTPublicKeys are PEM files of RSA or ECDSA keys verifying RS256/ES256
	// tokens.
	JWTPublicKeys []string `yaml:"jwt_public_keys" json:"jwt_public_keys"`
	// Anonymous allows connections without a token. It is also on when no
	// JWT key is configured and the HTTP listener is on loopback (local
	// development), with a warning in the log.
	Anonymous bool `yaml:"anonymous" json:"anonymous"`
	// AllowedOrigins lists the origins (scheme://host[:port]) of other
	// pages whose browsers may open WebSockets, besides the node's own
	// (OwnOrigins); "*" accepts any origin. REST writes accept the listed
	// origins but never "*". Default: none.
	AllowedOrigins []string `yaml:"allowed_origins" json:"allowed_origins"`
	// PingInterval is how often the server pings. Default 25s.
	PingInterval Duration `yaml:"ping_interval" json:"ping_interval"`
	// MaxFrame is the largest frame a browser may send. Default 65536.
	MaxFrame int `yaml:"max_frame" json:"max_frame"`
	// MaxChannels is how many channels one connection may subscribe.
	// Default 128.
	MaxChannels int `yaml:"max_channels" json:"max_channels"`
	// MaxConnsPerUser bounds connections of one user on one bridge. Default 32.
	MaxConnsPerUser int `yaml:"max_conns_per_user" json:"max_conns_per_user"`
	// QueueBytes bounds a connection's unsent bytes before it is closed as a
	// slow consumer. Default 1 MiB.
	QueueBytes int `yaml:"queue_bytes" json:"queue_bytes"`
	// QueueFrames bounds its unsent frames. Default 4096.
	QueueFrames int `yaml:"queue_frames" json:"queue_frames"`
	// RequestRate is requests per second allowed per connection (burst 4x).
	// Default 50.
	RequestRate float64 `yaml:"request_rate" json:"request_rate"`
	// MaxConnections bounds the WebSocket connections of this bridge; an
	// upgrade beyond it is refused with HTTP 503 and Retry-After. 0 is
	// unlimited. Default 100000.
	MaxConnections int `yaml:"max_connections" json:"max_connections"`
	// MaxConnsPerIP bounds connections from one remote IP address (the TCP
	// peer); beyond it, HTTP 429 with Retry-After. 0 (the default) is
	// unlimited: many users may share one NAT.
	MaxConnsPerIP int `yaml:"max_conns_per_ip" json:"max_conns_per_ip"`
	// AcceptRate is how many WebSocket upgrades per second the bridge
	// accepts (a token bucket of AcceptBurst), to absorb reconnect storms;
	// beyond it, HTTP 503 with Retry-After. 0 (the default) is unlimited.
	AcceptRate float64 `yaml:"accept_rate" json:"accept_rate"`
	// AcceptBurst is the accept bucket's size. Default: 2x AcceptRate.
	AcceptBurst int `yaml:"accept_burst" json:"accept_burst"`
	// UserPublishRate is how many publications per second one user may
	// make from browsers, over all of the user's connections to this
	// bridge (burst 2x); beyond it, error 108. Anonymous connections are
	// limited each on its own. 0 (the default) is unlimited.
	UserPublishRate float64 `yaml:"user_publish_rate" json:"user_publish_rate"`
	// CoreTLS dials the core (herald bridge) over TLS, verified against
	// CoreCAFile, or the system roots when that is empty.
	CoreTLS bool `yaml:"core_tls" json:"core_tls"`
	// CoreCAFile is a PEM file of CAs that sign the core's certificate.
	// Setting it implies CoreTLS.
	CoreCAFile string `yaml:"core_ca_file" json:"core_ca_file"`
	// CoreCertFile and CoreKeyFile are the bridge's client certificate,
	// for a core that requires mTLS. Setting them implies CoreTLS.
	CoreCertFile string `yaml:"core_cert_file" json:"core_cert_file"`
	CoreKeyFile  string `yaml:"core_key_file" json:"core_key_file"`
}

// CoreTLSEnabled reports whether the bridge dials its core over TLS.
func (b Bridge) CoreTLSEnabled() bool {
	return b.CoreTLS || b.CoreCAFile != "" || b.CoreCertFile != ""
}

// Duration is a time.Duration written as "1m30s" in files.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalText parses "1m30s" or a number of seconds.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		*d = Duration(n * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. 30s, 5m)", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as "1m30s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		GRPCAddr:        "127.0.0.1:7400",
		HTTPAddr:        "127.0.0.1:7401",
		Engine:          "memory",
		Redis:           Redis{Addrs: []string{"127.0.0.1:6379"}, Prefix: "herald"},
		ShutdownTimeout: Duration(10 * time.Second),
		LogLevel:        "info",
		LogFormat:       "text",
		Limits: Limits{
			MaxPayload:           65536,
			MaxHistoryPage:       1000,
			SubscriberQueue:      4096,
			SubscriberQueueBytes: 4 << 20,
			DedupeWindow:         Duration(2 * time.Minute),
			MaxGRPCMessage:       4 << 20,

			MaxIdempotencyKeys:           1_000_000,
			MaxIdempotencyKeysPerChannel: 100_000,
			MaxChannelsPerNode:           1_000_000,
		},
		Bridge: Bridge{
			PingInterval:    Duration(25 * time.Second),
			MaxFrame:        65536,
			MaxChannels:     128,
			MaxConnsPerUser: 32,
			QueueBytes:      1 << 20,
			QueueFrames:     4096,
			RequestRate:     50,
			MaxConnections:  100000,
		},
		Hooks: Hooks{
			Timeout:         Duration(2 * time.Second),
			MaxInFlight:     1000,
			CircuitFailures: 5,
			CircuitOpen:     Duration(5 * time.Second),
		},
	}
}

// DefaultNamespace is the options of a namespace nobody configured: the
// "" and "user" namespaces get these unless listed.
func DefaultNamespace(name string) Namespace {
	return Namespace{
		Name:           name,
		HistorySize:    100,
		HistoryTTL:     Duration(5 * time.Minute),
		Presence:       true,
		JoinLeave:      true,
		AllowSubscribe: true,
		AllowHistory:   true,
		AllowPresence:  true,
	}
}

// LoadFile reads a YAML or JSON file (JSON is YAML) into c. Unknown keys are
// an error.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := c.Parse(b); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}

// Parse decodes YAML or JSON configuration into c, strictly.
func (c *Config) Parse(b []byte) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return err
	}
	return nil
}

// envVar maps a flag name to its environment variable: grpc-addr →
// HERALD_GRPC_ADDR.
func envVar(flagName string) string {
	return "HERALD_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Role is what a node runs; it selects the flags that configure it.
type Role uint8

const (
	// RoleServe is `herald serve`: core and bridge in one process.
	RoleServe Role = iota
	// RoleCore is `herald core`: the gRPC API and REST gateway.
	RoleCore
	// RoleBridge is `herald bridge`: browsers' WebSockets, against a
	// remote core.
	RoleBridge
)

// Flags registers a flag for every scalar option on fs, bound to c, whatever
// the role. Call ApplyEnv after loading the file and before fs.Parse so that
// the precedence is file < environment < flags.
func (c *Config) Flags(fs *flag.FlagSet) { c.register(fs) }

// FlagsFor registers on fs, bound to c, the flags of the options that a
// node of role r uses: `herald core --help` lists no browser or JWT flag,
// `herald bridge --help` no engine, Redis or API-key flag. As Flags, call
// ApplyEnv before fs.Parse.
func (c *Config) FlagsFor(fs *flag.FlagSet, r Role) {
	all := flag.NewFlagSet("", flag.ContinueOnError)
	c.register(all)
	all.VisitAll(func(f *flag.Flag) {
		if rolesOf(f.Name)&(1<<r) != 0 {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
}

// Role sets, as bits of 1<<Role.
const (
	inServe  = 1 << RoleServe
	inCore   = 1 << RoleCore
	inBridge = 1 << RoleBridge

	allRoles  = inServe | inCore | inBridge
	coreSide  = inServe | inCore   // the gRPC listener, the engine, backends
	browsers  = inServe | inBridge // WebSocket clients
	coreLinks = inBridge           // a bridge's connection to its core
)

// flagRoles says which roles use each flag of register; a flag missing
// here is offered to every role (and fails TestEveryFlagHasRoles).
var flagRoles = map[string]uint8{
	"http-addr": allRoles, "max-history-page": allRoles, "max-grpc-message": allRoles,
	"tls-cert-file": allRoles, "tls-key-file": allRoles, "pprof-addr": allRoles,
	"drain-delay": allRoles, "shutdown-timeout": allRoles, "log-level": allRoles, "log-format": allRoles,
	"public-origins": allRoles,

	"grpc-addr": coreSide, "api-keys": coreSide, "engine": coreSide, "redis-addrs": coreSide,
	"redis-password": coreSide, "redis-db": coreSide, "redis-tls": coreSide, "redis-prefix": coreSide,
	"redis-cluster": coreSide, "redis-username": coreSide, "redis-tls-ca-file": coreSide,
	"redis-tls-cert-file": coreSide, "redis-tls-key-file": coreSide,
	"redis-wait-replicas": coreSide, "redis-wait-timeout": coreSide,
	"max-payload": coreSide, "subscriber-queue": coreSide, "dedupe-window": coreSide,
	"tls-client-ca-file": coreSide, "redis-presence-ttl": coreSide,
	"subscriber-queue-bytes": coreSide, "max-channels-per-node": coreSide,
	"max-idempotency-keys": coreSide, "max-idempotency-keys-per-channel": coreSide,

	"jwt-secret": browsers, "jwt-public-keys": browsers, "jwt-audience": browsers, "jwt-issuer": browsers, "anonymous": browsers, "allowed-origins": browsers,
	"ping-interval": browsers, "max-frame": browsers, "max-channels": browsers, "max-conns-per-user": browsers,
	"queue-bytes": browsers, "queue-frames": browsers, "request-rate": browsers, "max-connections": browsers,
	"max-conns-per-ip": browsers, "accept-rate": browsers, "accept-burst": browsers, "user-publish-rate": browsers,

	"hooks-grpc-addr": browsers, "hooks-http-url": browsers, "hooks-api-key": browsers, "hooks-tls": browsers,
	"hooks-ca-file": browsers, "hooks-cert-file": browsers, "hooks-key-file": browsers, "hooks-timeout": browsers,
	"hooks-max-in-flight": browsers, "hooks-connect": browsers, "hooks-refresh": browsers, "hooks-rpc-methods": browsers,
	"hooks-headers": browsers, "hooks-cookies": browsers,

	"core": coreLinks, "core-api-key": coreLinks, "core-tls": coreLinks, "core-ca-file": coreLinks,
	"core-cert-file": coreLinks, "core-key-file": coreLinks,
}

// rolesOf returns the roles (bits 1<<Role) that use the flag named name.
func rolesOf(name string) uint8 {
	if r, ok := flagRoles[name]; ok {
		return r
	}
	return allRoles
}

func (c *Config) register(fs *flag.FlagSet) {
	str := func(p *string, name, usage string) { fs.StringVar(p, name, *p, usage+" ($"+envVar(name)+")") }
	integer := func(p *int, name, usage string) { fs.IntVar(p, name, *p, usage+" ($"+envVar(name)+")") }
	boolean := func(p *bool, name, usage string) { fs.BoolVar(p, name, *p, usage+" ($"+envVar(name)+")") }
	dur := func(p *Duration, name, usage string) {
		fs.TextVar(p, name, *p, usage+" ($"+envVar(name)+")")
	}
	list := func(p *[]string, name, usage string) {
		fs.Func(name, usage+"; comma-separated ($"+envVar(name)+")", func(s string) error {
			*p = splitList(s)
			return nil
		})
	}
	str(&c.GRPCAddr, "grpc-addr", "gRPC listen address")
	str(&c.HTTPAddr, "http-addr", "HTTP listen address (REST, /ws, console, health, metrics)")
	fs.Func("api-keys", "backend API keys as name=key pairs, comma-separated, with full access; scoped keys go in the config file ($HERALD_API_KEYS)", func(s string) error {
		keys, err := parseKeys(s)
		if err == nil {
			c.APIKeys = keys
		}
		return err
	})
	str(&c.Engine, "engine", "engine: memory or redis")
	list(&c.PublicOrigins, "public-origins", "origins (scheme://host[:port]) at which browsers reach the HTTP listener")
	list(&c.Redis.Addrs, "redis-addrs", "Redis addresses (several: a Redis Cluster)")
	boolean(&c.Redis.Cluster, "redis-cluster", "the Redis address is a seed of a Redis Cluster")
	str(&c.Redis.Username, "redis-username", "Redis ACL user")
	str(&c.Redis.Password, "redis-password", "Redis password")
	integer(&c.Redis.DB, "redis-db", "Redis database")
	boolean(&c.Redis.TLS, "redis-tls", "use TLS to Redis")
	str(&c.Redis.TLSCAFile, "redis-tls-ca-file", "CA certificates (PEM) that verify Redis's TLS certificate")
	str(&c.Redis.TLSCertFile, "redis-tls-cert-file", "client certificate (PEM) presented to Redis")
	str(&c.Redis.TLSKeyFile, "redis-tls-key-file", "key of the client certificate presented to Redis")
	integer(&c.Redis.WaitReplicas, "redis-wait-replicas", "acknowledge a publication once this many replicas have it (WAIT)")
	dur(&c.Redis.WaitTimeout, "redis-wait-timeout", "how long a publish waits for redis-wait-replicas")
	str(&c.Redis.Prefix, "redis-prefix", "prefix of Redis keys")
	dur(&c.Redis.PresenceTTL, "redis-presence-ttl", "how long a dead node's presence entries stay")
	integer(&c.Limits.MaxPayload, "max-payload", "largest payload in bytes")
	integer(&c.Limits.MaxHistoryPage, "max-history-page", "largest history page")
	integer(&c.Limits.SubscriberQueue, "subscriber-queue", "events a gRPC subscriber may have pending")
	integer(&c.Limits.SubscriberQueueBytes, "subscriber-queue-bytes", "bytes a gRPC subscriber may have pending")
	dur(&c.Limits.DedupeWindow, "dedupe-window", "how long idempotency keys are remembered")
	integer(&c.Limits.MaxIdempotencyKeys, "max-idempotency-keys", "idempotency keys remembered per node (memory engine)")
	integer(&c.Limits.MaxIdempotencyKeysPerChannel, "max-idempotency-keys-per-channel", "idempotency keys remembered per channel (memory engine)")
	integer(&c.Limits.MaxChannelsPerNode, "max-channels-per-node", "channels with state per node (memory engine)")
	integer(&c.Limits.MaxGRPCMessage, "max-grpc-message", "largest gRPC message in bytes")
	str(&c.Bridge.Core, "core", "gRPC address of the core (herald bridge)")
	str(&c.Bridge.CoreAPIKey, "core-api-key", "API key the bridge presents to the core")
	str(&c.Bridge.JWTSecret, "jwt-secret", "HMAC secret verifying HS256 browser tokens")
	str(&c.Bridge.JWTAudience, "jwt-audience", "audience browser tokens must carry (aud claim)")
	str(&c.Bridge.JWTIssuer, "jwt-issuer", "issuer browser tokens must carry (iss claim)")
	list(&c.Bridge.JWTPublicKeys, "jwt-public-keys", "PEM files verifying RS256/ES256 tokens")
	boolean(&c.Bridge.Anonymous, "anonymous", "allow browser connections without a token")
	list(&c.Bridge.AllowedOrigins, "allowed-origins", "allowed browser origins (* for any)")
	dur(&c.Bridge.PingInterval, "ping-interval", "interval of WebSocket pings")
	integer(&c.Bridge.MaxFrame, "max-frame", "largest browser frame in bytes")
	integer(&c.Bridge.MaxChannels, "max-channels", "channels per connection")
	integer(&c.Bridge.MaxConnsPerUser, "max-conns-per-user", "connections per user per bridge")
	integer(&c.Bridge.QueueBytes, "queue-bytes", "unsent bytes before a connection is a slow consumer")
	integer(&c.Bridge.QueueFrames, "queue-frames", "unsent frames before a connection is a slow consumer")
	fs.Float64Var(&c.Bridge.RequestRate, "request-rate", c.Bridge.RequestRate, "requests per second per connection ($HERALD_REQUEST_RATE)")
	integer(&c.Bridge.MaxConnections, "max-connections", "WebSocket connections per bridge (0: unlimited)")
	integer(&c.Bridge.MaxConnsPerIP, "max-conns-per-ip", "WebSocket connections per remote IP (0: unlimited)")
	fs.Float64Var(&c.Bridge.AcceptRate, "accept-rate", c.Bridge.AcceptRate, "WebSocket upgrades accepted per second (0: unlimited) ($HERALD_ACCEPT_RATE)")
	integer(&c.Bridge.AcceptBurst, "accept-burst", "burst of the accept rate (default 2x accept-rate)")
	fs.Float64Var(&c.Bridge.UserPublishRate, "user-publish-rate", c.Bridge.UserPublishRate, "browser publications per second per user (0: unlimited) ($HERALD_USER_PUBLISH_RATE)")
	boolean(&c.Bridge.CoreTLS, "core-tls", "dial the core over TLS (herald bridge)")
	str(&c.Bridge.CoreCAFile, "core-ca-file", "PEM CAs verifying the core's certificate (implies --core-tls)")
	str(&c.Bridge.CoreCertFile, "core-cert-file", "client certificate for a core requiring mTLS")
	str(&c.Bridge.CoreKeyFile, "core-key-file", "key of --core-cert-file")
	str(&c.Hooks.GRPCAddr, "hooks-grpc-addr", "host:port of the app backend's herald.hooks.v1.HooksService (gRPC)")
	str(&c.Hooks.HTTPURL, "hooks-http-url", "base URL of the app backend's hooks as JSON over HTTP (POST <url>/<hook>)")
	str(&c.Hooks.APIKey, "hooks-api-key", "key sent to the app backend with every hook call (authorization: Bearer)")
	boolean(&c.Hooks.TLS, "hooks-tls", "dial hooks-grpc-addr over TLS")
	str(&c.Hooks.CAFile, "hooks-ca-file", "PEM CAs verifying the app backend's certificate (implies --hooks-tls)")
	str(&c.Hooks.CertFile, "hooks-cert-file", "client certificate for an app backend requiring mTLS")
	str(&c.Hooks.KeyFile, "hooks-key-file", "key of --hooks-cert-file")
	dur(&c.Hooks.Timeout, "hooks-timeout", "deadline of one hook call")
	integer(&c.Hooks.MaxInFlight, "hooks-max-in-flight", "hook calls in flight per bridge; beyond it calls are refused at once")
	boolean(&c.Hooks.Connect, "hooks-connect", "ask the app backend who connecting browsers are (Connect hook)")
	boolean(&c.Hooks.Refresh, "hooks-refresh", "ask the app backend whether expiring sessions go on (Refresh hook)")
	list(&c.Hooks.RPCMethods, "hooks-rpc-methods", "rpc methods passed to the app backend (a final * matches any rest)")
	list(&c.Hooks.Headers, "hooks-headers", "request headers passed to the Connect hook")
	list(&c.Hooks.Cookies, "hooks-cookies", "cookies passed to the Connect hook, by name")
	str(&c.TLS.CertFile, "tls-cert-file", "PEM certificate of the HTTP and gRPC listeners (enables TLS; reloaded when it changes)")
	str(&c.TLS.KeyFile, "tls-key-file", "PEM private key of --tls-cert-file")
	str(&c.TLS.ClientCAFile, "tls-client-ca-file", "PEM CAs; the gRPC listener then requires client certificates (mTLS)")
	str(&c.PprofAddr, "pprof-addr", "serve net/http/pprof on this loopback address (default off)")
	dur(&c.DrainDelay, "drain-delay", "how long to keep serving with readiness off after SIGTERM")
	dur(&c.ShutdownTimeout, "shutdown-timeout", "deadline of a graceful shutdown")
	str(&c.LogLevel, "log-level", "debug, info, warn or error")
	str(&c.LogFormat, "log-format", "text or json")
}

// ApplyEnv sets every flag of fs whose HERALD_* variable is set in the
// environment (lookup is os.LookupEnv in production).
func ApplyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := lookup(envVar(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("$%s: %w", envVar(f.Name), err))
			}
		}
	})
	return errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseKeys(s string) ([]APIKey, error) {
	var keys []APIKey
	for _, p := range splitList(s) {
		name, key, ok := strings.Cut(p, "=")
		if !ok || name == "" || key == "" {
			return nil, fmt.Errorf("api key %q: want name=key", name)
		}
		keys = append(keys, APIKey{Name: name, Key: key})
	}
	return keys, nil
}

// Validate checks c and fills in the implicit namespaces. It reports every
// problem it finds.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		bad("grpc_addr %q: %v", c.GRPCAddr, err)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("http_addr %q: %v", c.HTTPAddr, err)
	}
	for _, o := range c.PublicOrigins {
		if _, err := NormalizeOrigin(o); err != nil {
			bad("public_origins: %v", err)
		}
	}
	for _, o := range c.Bridge.AllowedOrigins {
		if _, err := NormalizeOrigin(o); o != "*" && err != nil {
			bad("bridge.allowed_origins: %v (or \"*\" for any)", err)
		}
	}
	// Which engines exist is node's table of engines (node.Start refuses
	// a name it lacks); the sections of those with options are checked
	// here.
	switch c.Engine {
	case "":
		bad("engine is empty: want memory or redis")
	case "redis":
		r := c.Redis
		if len(r.Addrs) == 0 {
			bad("redis.addrs: at least one address is needed")
		}
		for _, a := range r.Addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad("redis.addrs: %q: %v", a, err)
			}
		}
		if r.PresenceTTL != 0 && r.PresenceTTL < Duration(time.Second) {
			bad("redis.presence_ttl must be at least 1s")
		}
		if (r.Cluster || len(r.Addrs) > 1) && r.DB != 0 {
			bad("redis.db must be 0 with Redis Cluster (several redis.addrs or redis.cluster), which has one database")
		}
		if strings.ContainsAny(r.Prefix, "{}") {
			bad("redis.prefix %q must not contain '{' or '}' (they delimit hash tags)", r.Prefix)
		}
		if r.WaitReplicas < 0 {
			bad("redis.wait_replicas must not be negative")
		}
		if r.WaitTimeout < 0 || r.WaitReplicas > 0 && r.WaitTimeout != 0 && r.WaitTimeout < Duration(time.Millisecond) {
			bad("redis.wait_timeout must be at least 1ms (0 takes the default, %v)", DefaultWaitTimeout)
		}
		if (r.TLSCAFile != "" || r.TLSCertFile != "" || r.TLSKeyFile != "") && !r.TLS {
			bad("redis.tls_ca_file, tls_cert_file and tls_key_file need redis.tls: true")
		}
		if (r.TLSCertFile == "") != (r.TLSKeyFile == "") {
			bad("redis.tls_cert_file and redis.tls_key_file go together")
		}
	}
	seenKey := map[string]bool{}
	for i, k := range c.APIKeys {
		if k.Key == "" {
			bad("api_keys[%d] (%s): empty key", i, k.Name)
		}
		if len(k.Key) < 16 {
			bad("api_keys[%d] (%s): keys must have at least 16 characters", i, k.Name)
		}
		for _, sc := range k.Scopes {
			if !ValidScope(sc) {
				bad("api_keys[%d] (%s): unknown scope %q (want publish, publish:<ns>, read, read:<ns>, bridge or admin)", i, k.Name, sc)
			}
		}
		if k.PublishRate < 0 || k.PublishBurst < 0 {
			bad("api_keys[%d] (%s): publish_rate and publish_burst must not be negative", i, k.Name)
		}
		if seenKey[k.Key] {
			bad("api_keys[%d] (%s): duplicate key", i, k.Name)
		}
		seenKey[k.Key] = true
	}
	seen := map[string]bool{}
	for i, ns := range c.Namespaces {
		for _, p := range namespaceProblems(i, ns) {
			bad("%s", p)
		}
		if seen[ns.Name] {
			bad("namespaces[%d]: namespace %q listed twice", i, ns.Name)
		}
		seen[ns.Name] = true
		if ns.HistorySize > 0 && ns.HistoryTTL <= 0 {
			c.Namespaces[i].HistoryTTL = Duration(5 * time.Minute)
		}
	}
	if len(c.Namespaces) == 0 {
		// Nothing configured: a "chat" namespace makes the console's chat
		// demo work out of the box.
		chat := DefaultNamespace("chat")
		chat.AllowPublish, chat.AllowAnonymous = true, true
		c.Namespaces = append(c.Namespaces, chat)
	}
	for _, name := range []string{"", "user"} {
		if !seen[name] {
			c.Namespaces = append(c.Namespaces, DefaultNamespace(name))
		}
	}
	sort.Slice(c.Namespaces, func(i, j int) bool { return c.Namespaces[i].Name < c.Namespaces[j].Name })
	l := c.Limits
	if l.MaxPayload <= 0 || l.MaxHistoryPage <= 0 || l.SubscriberQueue <= 0 || l.MaxGRPCMessage <= 0 {
		bad("limits: max_payload, max_history_page, subscriber_queue and max_grpc_message must be positive")
	}
	if l.MaxGRPCMessage < l.MaxPayload+1024 {
		bad("limits.max_grpc_message must exceed max_payload by at least 1024")
	}
	if l.SubscriberQueueBytes < l.MaxPayload {
		bad("limits.subscriber_queue_bytes (%d) must be at least max_payload (%d)", l.SubscriberQueueBytes, l.MaxPayload)
	}
	if l.MaxIdempotencyKeys <= 0 || l.MaxIdempotencyKeysPerChannel <= 0 || l.MaxChannelsPerNode <= 0 {
		bad("limits: max_idempotency_keys, max_idempotency_keys_per_channel and max_channels_per_node must be positive")
	}
	b := c.Bridge
	if b.MaxFrame <= 0 || b.MaxChannels <= 0 || b.MaxConnsPerUser <= 0 || b.QueueBytes <= 0 || b.QueueFrames <= 0 || b.RequestRate <= 0 || b.PingInterval <= 0 {
		bad("bridge: max_frame, max_channels, max_conns_per_user, queue_bytes, queue_frames, request_rate and ping_interval must be positive")
	}
	if b.MaxConnections < 0 || b.MaxConnsPerIP < 0 || b.AcceptRate < 0 || b.AcceptBurst < 0 || b.UserPublishRate < 0 {
		bad("bridge: max_connections, max_conns_per_ip, accept_rate, accept_burst and user_publish_rate must not be negative (0 is unlimited)")
	}
	if (b.CoreCertFile == "") != (b.CoreKeyFile == "") {
		bad("bridge: core_cert_file and core_key_file go together")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls: cert_file and key_file go together")
	}
	c.validateHooks(bad)
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		bad("tls.client_ca_file needs tls.cert_file and tls.key_file")
	}
	if c.PprofAddr != "" && !Loopback(c.PprofAddr) {
		bad("pprof_addr %q: must be a loopback address (reach it with ssh or kubectl port-forward)", c.PprofAddr)
	}
	if c.DrainDelay < 0 || c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout must be positive and drain_delay not negative")
	} else if c.DrainDelay >= c.ShutdownTimeout {
		bad("drain_delay (%v) must be shorter than shutdown_timeout (%v)", c.DrainDelay.D(), c.ShutdownTimeout.D())
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		bad("log_format %q: want text or json", c.LogFormat)
	}
	return errors.Join(errs...)
}

// namespaceProblems lists what is wrong with ns, entry i of a namespace
// list, on its own (not its place among the others).
func namespaceProblems(i int, ns Namespace) []string {
	var out []string
	if ns.Name != "" && !validNamespaceName(ns.Name) {
		out = append(out, fmt.Sprintf("namespaces[%d]: name %q must be 1-64 letters, digits, '_' or '-'", i, ns.Name))
	}
	if ns.HistorySize < 0 || ns.HistorySize > 1_000_000 {
		out = append(out, fmt.Sprintf("namespaces[%d] (%s): history_size must be 0..1000000", i, ns.Name))
	}
	if ns.JoinLeave && !ns.Presence {
		out = append(out, fmt.Sprintf("namespaces[%d] (%s): join_leave needs presence", i, ns.Name))
	}
	return out
}

func validNamespaceName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// AnonymousAllowed reports whether browsers may connect without a token.
func (c *Config) AnonymousAllowed() bool {
	return c.Bridge.Anonymous || (c.Bridge.JWTSecret == "" && len(c.Bridge.JWTPublicKeys) == 0 && Loopback(c.HTTPAddr))
}

// Loopback reports whether addr's host is a loopback address or localhost.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Redacted returns c as JSON with secrets replaced, for logs.
func (c Config) Redacted() string {
	c.APIKeys = append([]APIKey(nil), c.APIKeys...)
	for i := range c.APIKeys {
		c.APIKeys[i].Key = "***"
	}
	if c.Redis.Password != "" {
		c.Redis.Password = "***"
	}
	if c.Bridge.JWTSecret != "" {
		c.Bridge.JWTSecret = "***"
	}
	if c.Bridge.CoreAPIKey != "" {
		c.Bridge.CoreAPIKey = "***"
	}
	if c.Hooks.APIKey != "" {
		c.Hooks.APIKey = "***"
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// Namespaces indexes namespace options by name, to resolve channels.
type Namespaces map[string]*Namespace

// NamespaceIndex returns c's namespaces by name; c must have passed
// Validate (which adds the implicit ones).
func (c *Config) NamespaceIndex() Namespaces {
	m := make(Namespaces, len(c.Namespaces))
	for i := range c.Namespaces {
		ns := c.Namespaces[i]
		m[ns.Name] = &ns
	}
	return m
}

// Lookup validates a channel name and returns its namespace's options. The
// error says what is wrong, for the client.
func (n Namespaces) Lookup(channel string) (*Namespace, error) {
	if err := channelname.Validate(channel); err != nil {
		return nil, err
	}
	ns, ok := n[channelname.Namespace(channel)]
	if !ok {
		name := channel
		if len(name) > 64 {
			name = name[:64] + "…"
		}
		return nil, fmt.Errorf("channel %q: unknown namespace %q", name, channelname.Namespace(channel))
	}
	return ns, nil
}
