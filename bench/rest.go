package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// restPublisher publishes through the REST gateway, as a backend with curl
// would: one POST /v1/channels/{channel}/publish per publication with the
// payload as the body's `data`, on keep-alive connections (one per
// worker, so that workers never wait for each other's connection).
type restPublisher struct {
	base    string // http://host:port or https://host:port
	apiKey  string
	clients []*http.Client
	bodies  [][]byte // per worker: the body being built
}

func newRESTPublisher(httpAddr, apiKey string, workers int, tc *tls.Config) *restPublisher {
	p := &restPublisher{base: httpScheme(tc) + httpAddr, apiKey: apiKey, bodies: make([][]byte, workers)}
	for range workers {
		p.clients = append(p.clients, &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSClientConfig:     cloneTLS(tc),
				MaxIdleConnsPerHost: 1,
				DisableCompression:  true,
				ForceAttemptHTTP2:   false,
			},
		})
	}
	return p
}

// call publishes payload to channel from worker w and returns once the
// gateway answered 200.
func (p *restPublisher) call(ctx context.Context, w int, channel string, payload []byte) error {
	b := append(p.bodies[w][:0], `{"data":`...)
	b = append(b, payload...)
	b = append(b, '}')
	p.bodies[w] = b
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/v1/channels/"+url.PathEscape(channel)+"/publish", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.apiKey)
	}
	resp, err := p.clients[w].Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("REST publish: HTTP %d: %.200s", resp.StatusCode, body)
	}
	if !bytes.Contains(body, []byte(`"position"`)) {
		return fmt.Errorf("REST publish: no position in the answer: %.200s", body)
	}
	return nil
}

func (p *restPublisher) close() {
	for _, c := range p.clients {
		c.CloseIdleConnections()
	}
}
