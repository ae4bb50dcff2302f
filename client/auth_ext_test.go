package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/herald-io/herald/client"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/tlstest"
	"google.golang.org/grpc/codes"
)

const (
	publishKey = "publisher-key-0123456789"
	readKey    = "reader-key-0123456789ab"
	adminKey   = "admin-key-0123456789abcd"
)

func withKeys(c *config.Config) {
	c.APIKeys = []config.APIKey{
		{Name: "pub", Key: publishKey, Scopes: []string{"publish"}},
		{Name: "read", Key: readKey, Scopes: []string{"read"}},
		{Name: "admin", Key: adminKey},
	}
}

// TestAPIKeys: every wrapped call and Service's calls carry the key;
// refusals come back with their codes and are not retried.
func TestAPIKeys(t *testing.T) {
	n := startNode(t, withKeys)
	addr := n.GRPCAddr.String()
	ctx := ctxTimeout(t, 30*time.Second)
	msg := client.Message{Channel: "keys", JSON: jsonN(1)}

	if _, err := dial(t, addr).Publish(ctx, msg); client.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("publish without a key: %v", err)
	}
	if _, err := dial(t, addr, client.WithAPIKey("wrong-key-0123456789")).Publish(ctx, msg); client.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("publish with a wrong key: %v", err)
	}
	reader := dial(t, addr, client.WithAPIKey(readKey))
	if _, err := reader.Publish(ctx, msg); client.CodeOf(err) != codes.PermissionDenied {
		t.Fatalf("publish with a read key: %v", err)
	}
	publisher := dial(t, addr, client.WithAPIKey(publishKey))
	sub := reader.Subscribe(ctx, "keys", client.SubscribeOptions{})
	if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
		t.Fatalf("subscribe with a read key: %v %v", ev, err)
	}
	if _, err := publisher.Publish(ctx, msg); err != nil {
		t.Fatalf("publish with a publish key: %v", err)
	}
	if ev, err := sub.Recv(); err != nil || string(ev.GetPublication().GetRawJson()) != `{"n":1}` {
		t.Fatalf("reader got %v %v", ev, err)
	}
	// Service carries the key too.
	if _, err := reader.Service().History(ctx, &heraldv1.HistoryRequest{Channel: "keys"}); err != nil {
		t.Fatalf("History through Service with a read key: %v", err)
	}
	if _, err := dial(t, addr, client.WithAPIKey(adminKey)).Service().Info(ctx, &heraldv1.InfoRequest{}); err != nil {
		t.Fatalf("Info through Service with an admin key: %v", err)
	}

	// A subscription without a key stops at once.
	var rs retries
	if _, err := dial(t, addr).Subscribe(ctx, "keys", client.SubscribeOptions{OnRetry: rs.record}).Recv(); client.CodeOf(err) != codes.Unauthenticated || len(rs.codes) > 0 {
		t.Fatalf("subscribe without a key: %v, retries %v", err, rs.codes)
	}
	// A publication refused on a stream fails alone: the stream carries on.
	stream := reader.PublishStream(ctx, client.StreamOptions{})
	r, err := stream.Publish(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Wait(ctx); client.CodeOf(err) != codes.PermissionDenied {
		t.Fatalf("stream publish with a read key: %v", err)
	}
	if err := stream.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// A stream the node refuses fails every pending publication, and
	// further ones, with the node's code.
	stream = dial(t, addr).PublishStream(ctx, client.StreamOptions{})
	r, err = stream.Publish(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Wait(ctx); client.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("stream publish without a key: %v", err)
	}
	if _, err := stream.Publish(ctx, msg); client.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("publish on a refused stream: %v", err)
	}
	if err := stream.Close(ctx); client.CodeOf(err) != codes.Unauthenticated {
		t.Fatalf("Close of a refused stream: %v", err)
	}
}

// TestTLSAndAPIKey: a node with TLS, client certificates required (mTLS)
// and API keys, as deployed: a client with the CA, its certificate and a
// key publishes and subscribes; without the certificate, or trusting the
// system's roots instead of the CA, it does not get through.
func TestTLSAndAPIKey(t *testing.T) {
	f := tlstest.NewFiles(t)
	n := startNode(t, func(c *config.Config) {
		withKeys(c)
		c.TLS = config.TLS{CertFile: f.Cert, KeyFile: f.Key, ClientCAFile: f.CAFile}
	})
	addr := n.GRPCAddr.String()
	ctx := ctxTimeout(t, 30*time.Second)
	once := client.WithRetry(client.Retry{Attempts: 1})

	c := dial(t, addr, client.WithCAFile(f.CAFile), client.WithClientCert(f.ClientCert, f.ClientKey), client.WithAPIKey(adminKey))
	sub := c.Subscribe(ctx, "secure", client.SubscribeOptions{})
	if ev, err := sub.Recv(); err != nil || ev.GetSubscribed() == nil {
		t.Fatalf("subscribe over mTLS: %v %v", ev, err)
	}
	if _, err := c.Publish(ctx, client.Message{Channel: "secure", JSON: jsonN(1)}); err != nil {
		t.Fatalf("publish over mTLS: %v", err)
	}
	if ev, err := sub.Recv(); err != nil || ev.GetPublication() == nil {
		t.Fatalf("subscriber over mTLS: %v %v", ev, err)
	}

	for name, opts := range map[string][]client.Option{
		"no client certificate": {client.WithCAFile(f.CAFile), client.WithAPIKey(adminKey), once},
		"system roots":          {client.WithTLS(nil), client.WithClientCert(f.ClientCert, f.ClientKey), client.WithAPIKey(adminKey), once},
		"plaintext":             {client.WithAPIKey(adminKey), once},
	} {
		_, err := dial(t, addr, opts...).Publish(ctx, client.Message{Channel: "secure", JSON: jsonN(2)})
		if client.CodeOf(err) != codes.Unavailable {
			t.Errorf("%s: %v, want UNAVAILABLE", name, err)
		}
	}
	// The node's certificate names 127.0.0.1 and localhost; a custom
	// tls.Config works as the base.
	custom := dial(t, addr, client.WithTLS(&tls.Config{MinVersion: tls.VersionTLS13}), client.WithCAFile(f.CAFile), client.WithClientCert(f.ClientCert, f.ClientKey), client.WithAPIKey(adminKey))
	if _, err := custom.Publish(ctx, client.Message{Channel: "secure", JSON: jsonN(3)}); err != nil {
		t.Fatalf("publish with a custom tls.Config: %v", err)
	}

	if _, err := client.Dial(addr, client.WithCAFile(f.Dir+"/missing.pem")); err == nil {
		t.Fatal("Dial accepted a CA file that does not exist")
	}
	if _, err := client.Dial(addr, client.WithCAFile(f.ClientKey)); err == nil {
		t.Fatal("Dial accepted a CA file without certificates")
	}
	var e *client.Error
	_, err := dial(t, addr, client.WithAPIKey(adminKey), once).Publish(context.Background(), client.Message{Channel: "secure", JSON: jsonN(4)})
	if !errors.As(err, &e) || e.Code() != codes.Unavailable {
		t.Fatalf("plaintext to a TLS node: %v", err)
	}
}
