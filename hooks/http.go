package hooks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/herald-io/herald/config"
	"google.golang.org/protobuf/proto"
)

// httpCaller calls the hooks' HTTP/JSON form: a POST per call.
type httpCaller struct {
	cfg   config.Hooks
	hc    *http.Client
	max   int
	agent string
}

func newHTTPCaller(cfg config.Hooks, opts Options) (*httpCaller, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	tr.Proxy = nil // the backend is the application's own: never through an environment proxy
	if cfg.TLSEnabled() {
		host := ""
		if u, err := url.Parse(cfg.Backend()); err == nil {
			host = u.Hostname()
		}
		tc, err := clientTLS(cfg, host)
		if err != nil {
			return nil, err
		}
		tc.ServerName = "" // per request, from the URL
		tr.TLSClientConfig = tc
	}
	return &httpCaller{cfg: cfg, hc: &http.Client{Transport: tr, CheckRedirect: noRedirects}, max: opts.MaxMessage, agent: opts.UserAgent}, nil
}

// noRedirects refuses to follow redirects: the request carries the hooks
// API key and a browser's cookies, which must go only where configured.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func (h *httpCaller) call(ctx context.Context, hook string, req, resp proto.Message) error {
	body, err := MarshalJSON(req)
	if err != nil {
		return err
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL(hook), bytes.NewReader(body))
	if err != nil {
		return err
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("User-Agent", h.agent)
	if h.cfg.APIKey != "" {
		r.Header.Set("Authorization", "Bearer "+h.cfg.APIKey)
	}
	res, err := h.hc.Do(r)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, int64(h.max)+1))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d from %s: %.200s", res.StatusCode, h.cfg.URL(hook), strings.TrimSpace(string(b)))
	}
	if len(b) > h.max {
		return &Error{Kind: BadAnswer, Hook: hook, Err: fmt.Errorf("the answer is larger than %d bytes", h.max)}
	}
	if err := UnmarshalJSON(b, resp); err != nil {
		return &Error{Kind: BadAnswer, Hook: hook, Err: err}
	}
	return nil
}

func (h *httpCaller) close() error {
	h.hc.CloseIdleConnections()
	return nil
}
