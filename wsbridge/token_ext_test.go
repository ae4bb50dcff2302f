package wsbridge_test

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-io/herald/node"
)

// TestTokenAudienceIssuer: with bridge.jwt_audience and jwt_issuer set, a
// token is accepted only with that aud and iss; a token minted for another
// service sharing the secret is refused with 4001 and a reason naming the
// claim. Without them, aud and iss are not checked.
func TestTokenAudienceIssuer(t *testing.T) {
	cfg := testConfig()
	cfg.Bridge.JWTAudience = "herald"
	cfg.Bridge.JWTIssuer = "https://auth.example.com"
	n := startNode(t, cfg, node.Serve)
	good := jwt.MapClaims{"aud": "herald", "iss": "https://auth.example.com"}
	connect(t, n, "", token(t, "u1", time.Minute, good))
	connect(t, n, "", token(t, "u1", time.Minute, jwt.MapClaims{"aud": []string{"billing", "herald"}, "iss": "https://auth.example.com"}))
	for _, tc := range []struct {
		name   string
		claims jwt.MapClaims
		reason string
	}{
		{"no aud", jwt.MapClaims{"iss": "https://auth.example.com"}, "aud"},
		{"other aud", jwt.MapClaims{"aud": "billing", "iss": "https://auth.example.com"}, "aud"},
		{"no iss", jwt.MapClaims{"aud": "herald"}, "iss"},
		{"other iss", jwt.MapClaims{"aud": "herald", "iss": "https://other.example.com"}, "iss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := dial(t, n, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.send(connectFrame(token(t, "u1", time.Minute, tc.claims)))
			d := c.expectClose(4001)
			if d == nil || !strings.Contains(d.Reason, "invalid token") || !strings.Contains(d.Reason, tc.reason) && !strings.Contains(d.Reason, map[string]string{"aud": "audience", "iss": "issuer"}[tc.reason]) {
				t.Fatalf("disconnect %v, want an invalid-token reason about %s", d, tc.reason)
			}
		})
	}
	// Not configured: aud and iss are not checked (compatible default).
	plain := startNode(t, testConfig(), node.Serve)
	connect(t, plain, "", token(t, "u1", time.Minute, jwt.MapClaims{"aud": "billing", "iss": "anyone"}))
}

// TestGrantPatterns: the `channels` claim's wildcards match whole
// ':'-separated segments. "user:1" does not grant user:10, "secret:*"
// grants secret:a but not secret:a:b, "secret:**" grants both, and a token
// with a partial-segment wildcard ("user:1*", which used to grant user:10
// and user:1x:…) is refused at connect with 4001 naming the pattern.
func TestGrantPatterns(t *testing.T) {
	n := startNode(t, testConfig(), node.Serve)
	sub := func(claims []string, channel string) uint32 {
		t.Helper()
		c := connect(t, n, "", token(t, "u9", time.Minute, jwt.MapClaims{"channels": claims}))
		r := c.subscribe(channel, nil)
		if r.GetSubscribe() != nil {
			return 0
		}
		return r.GetError().GetCode()
	}
	for _, tc := range []struct {
		claims  []string
		channel string
		code    uint32
	}{
		{[]string{"user:1"}, "user:1", 0},
		{[]string{"user:1"}, "user:10", 104},
		{[]string{"secret:*"}, "secret:a", 0},
		{[]string{"secret:*"}, "secret:a:b", 104},
		{[]string{"secret:**"}, "secret:a:b", 0},
		{[]string{"*"}, "secret:a", 104},
		{[]string{"*:a"}, "secret:a", 0},
		{[]string{"**"}, "user:10", 0},
	} {
		if got := sub(tc.claims, tc.channel); got != tc.code {
			t.Errorf("claims %q, subscribe %q: code %d, want %d", tc.claims, tc.channel, got, tc.code)
		}
	}
	for _, bad := range []string{"user:1*", "secret:team-*", "user:?"} {
		c, _, err := dial(t, n, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.send(connectFrame(token(t, "u9", time.Minute, jwt.MapClaims{"channels": []string{"chat:lobby", bad}})))
		if d := c.expectClose(4001); d == nil || !strings.Contains(d.Reason, bad) || !strings.Contains(d.Reason, "whole segment") {
			t.Errorf("claims with %q: disconnect %v, want 4001 naming the pattern", bad, d)
		}
	}
}
