package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// NormalizeOrigin returns origin as browsers write it in an Origin header:
// a lower-case scheme://host[:port], without the scheme's default port (80
// for http, 443 for https) and without a trailing slash. Anything else (a
// path, a query, user info, another scheme, "null") is an error, whose
// text says what is wrong.
func NormalizeOrigin(origin string) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(strings.TrimSpace(origin), "/"))
	if err != nil {
		return "", fmt.Errorf("origin %q: %v", origin, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("origin %q: want http://host[:port] or https://host[:port]", origin)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("origin %q: only scheme://host[:port], no path, query or user", origin)
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" || (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		return scheme + "://" + host, nil
	}
	return scheme + "://" + host + ":" + port, nil
}

// OwnOrigins returns the origins at which browsers reach this node's HTTP
// listener, so that pages it serves (the console) and pages on those
// origins may open WebSockets and send REST writes. They are never taken
// from a request: every public_origins entry, and the listener's address
// httpAddr (the bound one, when the configured port is 0) with the
// listener's scheme (https with tls), spelled also localhost, 127.0.0.1
// and [::1] when it is a loopback or wildcard address. c must have passed
// Validate.
func (c *Config) OwnOrigins(httpAddr string) []string {
	var out []string
	seen := map[string]bool{}
	add := func(o string) {
		if n, err := NormalizeOrigin(o); err == nil && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, o := range c.PublicOrigins {
		add(o)
	}
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return out
	}
	scheme := "http"
	if c.TLS.Enabled() {
		scheme = "https"
	}
	hostport := func(h string) string { return scheme + "://" + net.JoinHostPort(h, port) }
	if host != "" {
		add(hostport(host))
	}
	ip := net.ParseIP(host)
	if host == "" || host == "localhost" || ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
			add(hostport(h))
		}
	}
	return out
}

// OwnHosts returns the Host header values that name this node: the
// host[:port] of every origin of OwnOrigins, and the bare host where the
// port is the scheme's default.
func (c *Config) OwnHosts(httpAddr string) []string {
	var out []string
	for _, o := range c.OwnOrigins(httpAddr) {
		u, err := url.Parse(o)
		if err != nil {
			continue
		}
		out = append(out, u.Host)
		if u.Port() == "" {
			def := "80"
			if u.Scheme == "https" {
				def = "443"
			}
			out = append(out, net.JoinHostPort(u.Hostname(), def))
		}
	}
	return out
}
