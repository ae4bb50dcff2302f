package redis

import (
	"errors"
	"testing"
	"time"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	"github.com/herald-io/herald/internal/redistest"
	"github.com/herald-io/herald/internal/tlstest"
)

// TestTLSAndACL runs the contract suite against a Redis that speaks TLS
// only (its certificate from a CA of the test's) and knows one ACL user,
// its default user turned off: every connection of the engine, pub/sub
// included, verifies the server and authenticates. A wrong password, and
// a CA that did not sign the certificate, are refused with ErrUnavailable.
func TestTLSAndACL(t *testing.T) {
	files := tlstest.NewFiles(t)
	srv := redistest.StartWith(t, redistest.Options{
		TLS:  &redistest.TLS{CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CAFile, Probe: files.ClientTLS(t, false)},
		Args: []string{"--user", "herald", "on", ">a-long-secret", "~*", "&*", "+@all", "--user", "default", "off"},
	})
	good := func() config.Redis {
		c := singleConfig(srv.Addr)
		c.Username, c.Password = "herald", "a-long-secret"
		c.TLS, c.TLSCAFile = true, files.CAFile
		return c
	}
	t.Run("contract", func(t *testing.T) {
		enginetest.Run(t, enginetest.Factory{
			Name: "redis",
			New: func(t *testing.T, h engine.Handler) engine.Engine {
				return startEngine(t, good(), Options{}, h)
			},
			Peer: func(t *testing.T, of engine.Engine, h engine.Handler) engine.Engine {
				c := good()
				c.Prefix = of.(*Engine).prefix
				return startEngine(t, c, Options{}, h)
			},
		})
	})
	t.Run("client certificate", func(t *testing.T) {
		mtls := redistest.StartWith(t, redistest.Options{
			TLS:  &redistest.TLS{CertFile: files.Cert, KeyFile: files.Key, CAFile: files.CAFile, Probe: files.ClientTLS(t, true)},
			Args: []string{"--tls-auth-clients", "yes"},
		})
		c := singleConfig(mtls.Addr)
		c.TLS, c.TLSCAFile = true, files.CAFile
		without := startEngine(t, c, Options{Timeout: 300 * time.Millisecond}, enginetest.Nop{})
		if err := without.Ping(ctx); !errors.Is(err, engine.ErrUnavailable) {
			t.Fatalf("Ping without a client certificate = %v, want ErrUnavailable", err)
		}
		c.TLSCertFile, c.TLSKeyFile = files.ClientCert, files.ClientKey
		with := startEngine(t, c, Options{}, enginetest.Nop{})
		if err := with.Ping(ctx); err != nil {
			t.Fatalf("Ping with a client certificate: %v", err)
		}
	})
	other := tlstest.NewFiles(t)
	for name, edit := range map[string]func(*config.Redis){
		"wrong password": func(c *config.Redis) { c.Password = "wrong" },
		"no user":        func(c *config.Redis) { c.Username, c.Password = "", "" },
		"another CA":     func(c *config.Redis) { c.TLSCAFile = other.CAFile },
		"no TLS":         func(c *config.Redis) { c.TLS, c.TLSCAFile = false, "" },
	} {
		t.Run(name, func(t *testing.T) {
			c := good()
			edit(&c)
			e := startEngine(t, c, Options{Timeout: 300 * time.Millisecond}, enginetest.Nop{})
			if err := e.Ping(ctx); !errors.Is(err, engine.ErrUnavailable) {
				t.Fatalf("Ping = %v, want ErrUnavailable", err)
			}
			if _, err := e.Publish(ctx, enginetest.Pub("x", "y"), engine.PublishOptions{}); !errors.Is(err, engine.ErrUnavailable) {
				t.Fatalf("Publish = %v, want ErrUnavailable", err)
			}
		})
	}
}
