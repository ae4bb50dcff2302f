package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Hooks configures the bridge's calls to the application's backend, which
// implements herald.hooks.v1.HooksService (proto/herald/hooks/v1), over
// gRPC (GRPCAddr) or as JSON over HTTP (HTTPURL). The bridge makes them,
// wherever it runs (`herald serve`, `herald bridge`). Which hooks are on:
// Connect and Refresh here, Subscribe and Publish per namespace
// (Namespace.SubscribeHook, PublishHook), RPC for the methods in
// RPCMethods. The zero value calls nothing.
type Hooks struct {
	// GRPCAddr is the host:port of the backend's HooksService over gRPC.
	GRPCAddr string `yaml:"grpc_addr" json:"grpc_addr"`
	// HTTPURL is the base URL of the HTTP/JSON form: each hook POSTs its
	// request as JSON to HTTPURL + "/" + the hook's name (connect,
	// refresh, subscribe, publish, rpc), unless URLs names another URL
	// for it. Set GRPCAddr or HTTPURL, not both.
	HTTPURL string `yaml:"http_url" json:"http_url"`
	// URLs are the URLs of single hooks in the HTTP form, by hook name;
	// they override HTTPURL (which they make optional).
	URLs map[string]string `yaml:"urls" json:"urls"`
	// TLS dials GRPCAddr over TLS (an https HTTPURL always is), verified
	// against CAFile, or the system roots when that is empty.
	TLS bool `yaml:"tls" json:"tls"`
	// CAFile is a PEM file of CAs that sign the backend's certificate;
	// setting it implies TLS.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile and KeyFile are the bridge's client certificate, for a
	// backend that requires mTLS; setting them implies TLS.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// APIKey, when set, is sent with every call as `authorization: Bearer
	// <key>` (gRPC metadata; an HTTP header in the HTTP form), so that the
	// backend can tell Herald's calls from anyone else's.
	APIKey string `yaml:"api_key" json:"api_key"`
	// Timeout bounds each call; past it the browser gets error 204 (close
	// 4010 at connect). Default 2s; at most 10s.
	Timeout Duration `yaml:"timeout" json:"timeout"`
	// MaxInFlight bounds the calls one bridge has in flight at once; a
	// call beyond it is not made and the browser gets error 203 (close
	// 4010 at connect) at once. Default 1000.
	MaxInFlight int `yaml:"max_in_flight" json:"max_in_flight"`
	// CircuitFailures is how many calls in a row must fail (error,
	// timeout, invalid answer) for the circuit to open: for CircuitOpen
	// no call is made and browsers get error 203 (close 4010) at once;
	// then one call probes the backend, and closes the circuit if it
	// succeeds. Default 5.
	CircuitFailures int `yaml:"circuit_failures" json:"circuit_failures"`
	// CircuitOpen is how long the circuit stays open. Default 5s.
	CircuitOpen Duration `yaml:"circuit_open" json:"circuit_open"`
	// Connect asks the backend who a browser is (ConnectRequest), for
	// connections that present no token, or any token when no JWT key is
	// configured (a JWT, when keys are configured, is verified by the
	// bridge and the backend is not asked).
	Connect bool `yaml:"connect" json:"connect"`
	// Refresh asks the backend, when a session authenticated by Connect
	// expires (and when its browser sends a `refresh` frame), whether it
	// goes on. Without it such a session closes with 4002 at its expiry.
	// Needs Connect.
	Refresh bool `yaml:"refresh" json:"refresh"`
	// RPCMethods are the methods of browsers' `rpc` frames passed to the
	// backend's RPC hook: names (`profile.get`) or prefixes ending in `*`
	// (`orders.*`; `*` alone allows every method). Others are refused
	// with error 104; with none, `rpc` frames get error 111.
	RPCMethods []string `yaml:"rpc_methods" json:"rpc_methods"`
	// Headers are the request headers (of the WebSocket upgrade, the SSE
	// GET or the /stream POST) passed to Connect, by name. Use Cookies for
	// cookies: the Cookie header cannot be listed.
	Headers []string `yaml:"headers" json:"headers"`
	// Cookies are the cookies passed to Connect, by name (`session`).
	// Nothing else a browser sends leaves the bridge.
	Cookies []string `yaml:"cookies" json:"cookies"`
}

// HookNames are the hooks, as HTTP paths and metric labels name them.
var HookNames = []string{"connect", "refresh", "subscribe", "publish", "rpc"}

// TLSEnabled reports whether calls to the backend use TLS.
func (h Hooks) TLSEnabled() bool {
	return h.TLS || h.CAFile != "" || h.CertFile != "" || strings.HasPrefix(h.HTTPURL, "https:")
}

// Backend returns how the backend is reached, for logs and the circuit
// metric's label: the gRPC address or the base URL (or the first hook
// URL).
func (h Hooks) Backend() string {
	if h.GRPCAddr != "" {
		return h.GRPCAddr
	}
	if h.HTTPURL != "" {
		return h.HTTPURL
	}
	for _, name := range HookNames {
		if u := h.URLs[name]; u != "" {
			return u
		}
	}
	return ""
}

// URL returns the URL of hook name in the HTTP form ("" in the gRPC form).
func (h Hooks) URL(name string) string {
	if u := h.URLs[name]; u != "" {
		return u
	}
	if h.HTTPURL == "" {
		return ""
	}
	return strings.TrimSuffix(h.HTTPURL, "/") + "/" + name
}

// AllowsRPC reports whether RPCMethods allow method.
func (h Hooks) AllowsRPC(method string) bool {
	for _, m := range h.RPCMethods {
		if p, ok := strings.CutSuffix(m, "*"); ok {
			if strings.HasPrefix(method, p) {
				return true
			}
		} else if m == method {
			return true
		}
	}
	return false
}

// used reports whether c turns some hook on.
func (c *Config) hooksUsed() bool {
	h := c.Hooks
	if h.Connect || h.Refresh || len(h.RPCMethods) > 0 {
		return true
	}
	for _, ns := range c.Namespaces {
		if ns.SubscribeHook || ns.PublishHook {
			return true
		}
	}
	return false
}

// ValidRPCMethod reports whether s can be an RPC method name: 1-255 bytes
// of ASCII letters, digits and `_-.:/`.
func ValidRPCMethod(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("_-.:/", c) >= 0) {
			return false
		}
	}
	return true
}

// validateHooks checks the hooks section.
func (c *Config) validateHooks(bad func(string, ...any)) {
	h := c.Hooks
	used := c.hooksUsed()
	httpForm := h.HTTPURL != "" || len(h.URLs) > 0
	switch {
	case h.GRPCAddr != "" && httpForm:
		bad("hooks: set grpc_addr (gRPC) or http_url/urls (HTTP), not both")
	case used && h.GRPCAddr == "" && !httpForm:
		bad("hooks: a hook is on (connect, refresh, rpc_methods or a namespace's subscribe_hook/publish_hook) but no backend is set: set hooks.grpc_addr or hooks.http_url")
	}
	if h.GRPCAddr != "" {
		if _, _, err := net.SplitHostPort(h.GRPCAddr); err != nil {
			bad("hooks.grpc_addr %q: %v", h.GRPCAddr, err)
		}
	}
	checkURL := func(what, s string) {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("%s %q: want an http:// or https:// URL", what, s)
		}
	}
	if h.HTTPURL != "" {
		checkURL("hooks.http_url", h.HTTPURL)
	}
	for name, u := range h.URLs {
		if !slices.Contains(HookNames, name) {
			bad("hooks.urls: unknown hook %q (want %s)", name, strings.Join(HookNames, ", "))
			continue
		}
		checkURL("hooks.urls."+name, u)
	}
	if h.GRPCAddr == "" && len(h.URLs) > 0 && h.HTTPURL == "" {
		for _, name := range c.hooksOn() {
			if h.URLs[name] == "" {
				bad("hooks: the %s hook is on but has no URL: set hooks.http_url or hooks.urls.%s", name, name)
			}
		}
	}
	if h.Refresh && !h.Connect {
		bad("hooks.refresh needs hooks.connect (it refreshes sessions that Connect authenticated)")
	}
	if (h.CertFile == "") != (h.KeyFile == "") {
		bad("hooks: cert_file and key_file go together")
	}
	if h.Timeout <= 0 || h.Timeout > Duration(10*time.Second) {
		bad("hooks.timeout must be more than 0 and at most 10s")
	}
	if h.MaxInFlight <= 0 || h.CircuitFailures <= 0 || h.CircuitOpen <= 0 {
		bad("hooks: max_in_flight, circuit_failures and circuit_open must be positive")
	}
	for _, m := range h.RPCMethods {
		if m == "*" {
			continue
		}
		if !ValidRPCMethod(strings.TrimSuffix(m, "*")) {
			bad("hooks.rpc_methods: %q: want a method name of letters, digits and _-.:/ (a final * matches any rest)", m)
		}
	}
	for _, name := range h.Headers {
		switch {
		case !validToken(name):
			bad("hooks.headers: %q is not a header name", name)
		case strings.EqualFold(name, "Cookie"):
			bad("hooks.headers: the Cookie header would pass every cookie the browser has for this site; list the cookies the backend needs in hooks.cookies")
		}
	}
	for _, name := range h.Cookies {
		if !validToken(name) {
			bad("hooks.cookies: %q is not a cookie name", name)
		}
	}
}

// hooksOn returns the names of the hooks c turns on.
func (c *Config) hooksOn() []string {
	h := c.Hooks
	var on []string
	if h.Connect {
		on = append(on, "connect")
	}
	if h.Refresh {
		on = append(on, "refresh")
	}
	var sub, pub bool
	for _, ns := range c.Namespaces {
		sub = sub || ns.SubscribeHook
		pub = pub || ns.PublishHook
	}
	if sub {
		on = append(on, "subscribe")
	}
	if pub {
		on = append(on, "publish")
	}
	if len(h.RPCMethods) > 0 {
		on = append(on, "rpc")
	}
	return on
}

// validToken reports whether s is an HTTP token (RFC 9110), as header and
// cookie names are.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return http.CanonicalHeaderKey(s) != ""
}

// describeHooks says which hooks are on, for the startup log.
func (h Hooks) describe(c *Config) string {
	on := c.hooksOn()
	if len(on) == 0 {
		return ""
	}
	return fmt.Sprintf("%s at %s", strings.Join(on, ","), h.Backend())
}

// HooksOn returns the names of the hooks the configuration turns on, and
// where the backend is, for logs; "" when none is.
func (c *Config) HooksOn() string { return c.Hooks.describe(c) }
