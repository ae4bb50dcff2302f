package wsbridge

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-io/herald/config"
	"golang.org/x/time/rate"
)

// limits are the bridge's node-protecting limits: admission of new
// connections (per bridge, per IP, accept rate), checked before the
// WebSocket upgrade so that a refusal costs one HTTP response; and the
// per-user publish rate. Its methods are safe for concurrent use.
type limits struct {
	maxConns int // 0: unlimited
	perIP    int // 0: unlimited
	accept   *rate.Limiter
	conns    atomic.Int64 // admitted and not yet released

	ipMu sync.Mutex
	ips  map[string]int

	userRate  rate.Limit // 0: unlimited
	userBurst int
	userMu    sync.Mutex
	users     map[string]*rate.Limiter
	swept     time.Time
}

func newLimits(cfg config.Bridge) *limits {
	l := &limits{maxConns: cfg.MaxConnections, perIP: cfg.MaxConnsPerIP, ips: make(map[string]int), users: make(map[string]*rate.Limiter)}
	if cfg.AcceptRate > 0 {
		burst := cfg.AcceptBurst
		if burst <= 0 {
			burst = int(math.Ceil(2 * cfg.AcceptRate))
		}
		l.accept = rate.NewLimiter(rate.Limit(cfg.AcceptRate), burst)
	}
	if cfg.UserPublishRate > 0 {
		l.userRate = rate.Limit(cfg.UserPublishRate)
		l.userBurst = int(math.Ceil(2 * cfg.UserPublishRate))
	}
	return l
}

// Retry-After values (seconds) of refused upgrades. Browsers cannot read
// them (the WebSocket API hides the response); the JS client backs off with
// jitter instead. Other clients should honour them.
const (
	retryFull  = 5
	retryIP    = 10
	retryStorm = 1
)

// admit decides whether a connection may be upgraded. When it may not, it
// answers the request (503 or 429 with Retry-After) and returns false;
// otherwise the caller must call the admission's release once, when the
// connection has ended.
func (l *limits) admit(w http.ResponseWriter, r *http.Request) (a admission, ok bool) {
	if l.maxConns > 0 && l.conns.Load() >= int64(l.maxConns) {
		refuse(w, "max_connections", http.StatusServiceUnavailable, retryFull, "node full: too many connections; try another node")
		return admission{}, false
	}
	ip := ""
	if l.perIP > 0 {
		ip = remoteIP(r)
		l.ipMu.Lock()
		if l.ips[ip] >= l.perIP {
			l.ipMu.Unlock()
			refuse(w, "max_conns_per_ip", http.StatusTooManyRequests, retryIP, "too many connections from this address")
			return admission{}, false
		}
		l.ips[ip]++
		l.ipMu.Unlock()
	}
	// The rate is checked last, so that connections refused by a count
	// spend no tokens.
	if l.accept != nil && !l.accept.Allow() {
		l.releaseIP(ip)
		refuse(w, "accept_rate", http.StatusServiceUnavailable, retryStorm, "too many new connections; retry shortly")
		return admission{}, false
	}
	if n := l.conns.Add(1); l.maxConns > 0 && n > int64(l.maxConns) {
		// Lost a race with another admission at the limit.
		l.conns.Add(-1)
		l.releaseIP(ip)
		refuse(w, "max_connections", http.StatusServiceUnavailable, retryFull, "node full: too many connections; try another node")
		return admission{}, false
	}
	return admission{l: l, ip: ip}, true
}

// admission is an admitted connection's place in the limits. It is a
// value, not a closure, so that holding it costs a connection nothing
// beyond its two words (its handler releases it exactly once).
type admission struct {
	l  *limits
	ip string // the peer's address, with max_conns_per_ip
}

// release gives the connection's place back.
func (a admission) release() {
	a.l.conns.Add(-1)
	a.l.releaseIP(a.ip)
}

func (l *limits) releaseIP(ip string) {
	if l.perIP <= 0 {
		return
	}
	l.ipMu.Lock()
	defer l.ipMu.Unlock()
	if l.ips[ip] <= 1 {
		delete(l.ips, ip)
	} else {
		l.ips[ip]--
	}
}

func refuse(w http.ResponseWriter, reason string, code, retryAfter int, msg string) {
	metricRefused.WithLabelValues(reason).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	http.Error(w, msg, code)
}

// remoteIP is the TCP peer's address. X-Forwarded-For is not trusted: behind
// a proxy every connection shares the proxy's address, so set
// max_conns_per_ip there or leave it 0.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// allowPublish takes a token from the bucket of s's user (an anonymous
// session has its own). Buckets are created on first use and swept when
// full again (a full bucket is the same as a new one), so idle users cost
// nothing.
func (l *limits) allowPublish(s *session) error {
	if l.userRate == 0 {
		return nil
	}
	key := s.user
	if key == "" {
		key = "\x00" + s.id // no user id contains NUL
	}
	now := time.Now()
	l.userMu.Lock()
	lim := l.users[key]
	if lim == nil {
		lim = rate.NewLimiter(l.userRate, l.userBurst)
		l.users[key] = lim
	}
	ok := lim.AllowN(now, 1)
	if now.Sub(l.swept) > time.Minute {
		l.swept = now
		for k, v := range l.users {
			if v.TokensAt(now) >= float64(l.userBurst) {
				delete(l.users, k)
			}
		}
	}
	l.userMu.Unlock()
	if !ok {
		metricRateLimited.WithLabelValues("user_publish_rate").Inc()
		return reqErr(ErrRateLimited, "too many publications: the limit is %g per second per user", float64(l.userRate))
	}
	return nil
}
