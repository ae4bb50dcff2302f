package wsbridge

import (
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
)

// FuzzVerifyToken feeds arbitrary tokens to the verifier: it must never
// panic, accept only tokens signed with the configured secret, and return
// a user it would accept as a personal channel name. The committed corpus
// (testdata/fuzz/FuzzVerifyToken) holds a valid token, alg none, an RS256
// header and malformed ones.
func FuzzVerifyToken(f *testing.F) {
	const secret = "fuzz-secret-fuzz-secret-fuzz-secret"
	v, err := newVerifier(config.Bridge{JWTSecret: secret})
	if err != nil {
		f.Fatal(err)
	}
	sign := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	f.Add(sign(jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "channels": []string{"chat:*"}, "info": map[string]any{"n": 1}}))
	f.Add(sign(jwt.MapClaims{"sub": "u1", "info": []int{1}}))
	f.Add(sign(jwt.MapClaims{"sub": ""}))
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := v.verify(tok)
		if err != nil {
			if strings.Contains(err.Error(), tok) && len(tok) > 8 {
				t.Fatalf("error quotes the token: %v", err)
			}
			return
		}
		if id.user == "" || channelname.Validate(channelname.Personal(id.user)) != nil {
			t.Fatalf("accepted user %q", id.user)
		}
	})
}
