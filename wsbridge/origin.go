package wsbridge

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/herald-io/herald/config"
	"golang.org/x/time/rate"
)

// originPolicy decides which pages' browsers may open WebSockets: pages of
// the node's own origins (Options.Origins: the listen address and
// public_origins) and of bridge.allowed_origins ("*": any page). A request
// without an Origin header does not come from a page and is accepted.
//
// It never compares Origin with the request's Host: a DNS rebinding page
// (evil.example resolving to 127.0.0.1) reaches the bridge under its own
// host name, so Host and Origin agree; only configuration says which
// origins are this node's.
type originPolicy struct {
	any     bool
	allowed map[string]bool
	log     *slog.Logger
	logged  rate.Sometimes
}

// originPolicy returns the policy of a bridge made with cfg and opts.
func (b *Bridge) originPolicy(cfg config.Config, opts Options) *originPolicy {
	own := opts.Origins
	if own == nil {
		own = cfg.OwnOrigins(cfg.HTTPAddr)
	}
	return newOriginPolicy(own, cfg.Bridge.AllowedOrigins, b.log)
}

func newOriginPolicy(own, configured []string, log *slog.Logger) *originPolicy {
	p := &originPolicy{allowed: make(map[string]bool), log: log, logged: rate.Sometimes{First: 3, Interval: 30 * time.Second}}
	for _, o := range append(append([]string(nil), own...), configured...) {
		if o == "*" {
			p.any = true
			continue
		}
		if n, err := config.NormalizeOrigin(o); err == nil {
			p.allowed[n] = true
		}
	}
	return p
}

// check is the Upgrader's CheckOrigin. A refusal is answered 403 by the
// upgrader, and logged at info (the first few, then at most every 30 s)
// with the origin and the option that would allow it.
func (p *originPolicy) check(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || p.any {
		return true
	}
	if n, err := config.NormalizeOrigin(origin); err == nil && p.allowed[n] {
		return true
	}
	metricRefused.WithLabelValues("origin").Inc()
	p.logged.Do(func() {
		if len(origin) > 200 {
			origin = origin[:200] + "…"
		}
		p.log.Info("WebSocket refused (403): the page's origin is not allowed",
			"origin", validUTF8(origin), "host", validUTF8(r.Host),
			"fix", "if the page is yours, add its origin to bridge.allowed_origins (--allowed-origins), or to public_origins if browsers reach this node under that name")
	})
	return false
}
