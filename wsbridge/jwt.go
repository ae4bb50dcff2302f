package wsbridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/herald-io/herald/channelname"
	"github.com/herald-io/herald/config"
	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// verifier checks browser tokens: HS256 with a shared secret, RS256 and
// ES256 with public keys. Only the algorithms of configured keys are
// accepted, so `none` and algorithm confusion (an HS256 token signed with an
// RSA public key as secret) are refused.
type verifier struct {
	secret  []byte
	rsa     []jwt.VerificationKey
	ecdsa   []jwt.VerificationKey
	methods []string
	parser  *jwt.Parser
}

// claims are the token claims Herald reads.
type claims struct {
	jwt.RegisteredClaims
	// Channels are grant patterns (channelname.Grant: "chat:*" one
	// segment, a final "**" the rest) of channels the token grants
	// subscription to.
	Channels []string `json:"channels,omitempty"`
	// Info is shown in presence; it must be a JSON object.
	Info json.RawMessage `json:"info,omitempty"`
}

// identity is who a verified token names.
//
// A session keeps its identity for its life, so it is kept small: 64
// bytes.
type identity struct {
	user string
	// channels are the grants. The last nSubscribe of them are the
	// channels the session is subscribed to at connect, besides the
	// personal channel (an authenticator may name them; JWTs do not).
	channels []string
	info     *structpb.Value
	expires  int64 // unix ns; 0: never
	// nSubscribe: see channels.
	nSubscribe int32
	// hook is set for identities of the connect hook: the refresh hook,
	// not a JWT, extends them. Their user may be empty (anonymous).
	hook bool
}

// subscribe returns the channels the session is subscribed to at connect.
func (id *identity) subscribe() []string { return id.channels[len(id.channels)-int(id.nSubscribe):] }

// setExpiry sets when id expires (zero: never).
func (id *identity) setExpiry(t time.Time) {
	id.expires = 0
	if !t.IsZero() {
		id.expires = t.UnixNano()
	}
}

// named reports whether id names a user (nil and an empty user are
// anonymous).
func (id *identity) named() bool { return id != nil && id.user != "" }

// newVerifier returns the verifier of the bridge's JWT options: keys, and
// the audience and issuer a token must carry when they are set.
func newVerifier(b config.Bridge) (*verifier, error) {
	secret, pemFiles := b.JWTSecret, b.JWTPublicKeys
	v := &verifier{}
	if secret != "" {
		v.secret = []byte(secret)
		v.methods = append(v.methods, "HS256")
	}
	for _, f := range pemFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("jwt public key: %w", err)
		}
		if k, err := jwt.ParseRSAPublicKeyFromPEM(b); err == nil {
			v.rsa = append(v.rsa, k)
			continue
		}
		k, err := jwt.ParseECPublicKeyFromPEM(b)
		if err != nil {
			return nil, fmt.Errorf("jwt public key %s: neither an RSA nor an ECDSA public key in PEM", f)
		}
		v.ecdsa = append(v.ecdsa, k)
	}
	if len(v.rsa) > 0 {
		v.methods = append(v.methods, "RS256")
	}
	if len(v.ecdsa) > 0 {
		v.methods = append(v.methods, "ES256")
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(v.methods), jwt.WithLeeway(5 * time.Second)}
	if b.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(b.JWTAudience))
	}
	if b.JWTIssuer != "" {
		opts = append(opts, jwt.WithIssuer(b.JWTIssuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// errNoKeys is returned when a token arrives and no key is configured.
var errNoKeys = errors.New("tokens are not accepted: no JWT key is configured")

func (v *verifier) keyFunc(t *jwt.Token) (any, error) {
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret != nil {
			return v.secret, nil
		}
	case *jwt.SigningMethodRSA:
		if len(v.rsa) > 0 {
			return jwt.VerificationKeySet{Keys: v.rsa}, nil
		}
	case *jwt.SigningMethodECDSA:
		if len(v.ecdsa) > 0 {
			return jwt.VerificationKeySet{Keys: v.ecdsa}, nil
		}
	}
	return nil, fmt.Errorf("no key for algorithm %v", t.Header["alg"])
}

// verify checks a token and returns its identity. Its errors are written
// for clients; errors.Is(err, jwt.ErrTokenExpired) tells expiry apart.
func (v *verifier) verify(token string) (*identity, error) {
	if len(v.methods) == 0 {
		return nil, errNoKeys
	}
	var c claims
	if _, err := v.parser.ParseWithClaims(token, &c, v.keyFunc); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, jwt.ErrTokenExpired
		}
		return nil, errors.New("invalid token: " + err.Error())
	}
	if c.Subject == "" {
		return nil, errors.New("invalid token: the sub claim (user id) is required")
	}
	if err := channelname.Validate(channelname.Personal(c.Subject)); err != nil {
		return nil, errors.New("invalid token: sub must be 1-250 letters, digits or _-.:@=,/+")
	}
	for _, p := range c.Channels {
		if err := channelname.ValidateGrant(p); err != nil {
			return nil, errors.New("invalid token: channels claim: " + err.Error())
		}
	}
	id := &identity{user: c.Subject, channels: c.Channels}
	if c.ExpiresAt != nil {
		id.setExpiry(c.ExpiresAt.Time)
	}
	if len(c.Info) > 0 && string(c.Info) != "null" {
		var m map[string]any
		if err := json.Unmarshal(c.Info, &m); err != nil {
			return nil, errors.New("invalid token: the info claim must be a JSON object")
		}
		s, err := structpb.NewStruct(m)
		if err != nil {
			return nil, errors.New("invalid token: info: " + err.Error())
		}
		id.info = structpb.NewStructValue(s)
	}
	return id, nil
}

// clientInfo is the ClientInfo of a connection with this identity.
func (id *identity) clientInfo(client string) *heraldv1.ClientInfo {
	if id == nil {
		return &heraldv1.ClientInfo{Client: client}
	}
	return &heraldv1.ClientInfo{Client: client, User: id.user, Info: id.info}
}

// jwtAuth authenticates with JWTs (verifier); an empty token connects
// anonymously where that is allowed.
type jwtAuth struct {
	v         *verifier
	anonymous bool
}

func (a *jwtAuth) authenticate(_ context.Context, c *credentials) (*identity, error) {
	if c.token == "" {
		if a.anonymous {
			return nil, nil
		}
		return nil, &refusal{code: CloseInvalidToken, reason: "a token is required", metric: "missing_token"}
	}
	id, err := a.v.verify(c.token)
	if errors.Is(err, jwt.ErrTokenExpired) {
		return nil, &refusal{code: CloseTokenExpired, reason: "token expired", reconnect: true, metric: "expired_token"}
	}
	if err != nil {
		return nil, &refusal{code: CloseInvalidToken, reason: err.Error(), metric: "invalid_token", err: err}
	}
	return id, nil
}

func (a *jwtAuth) refresh(_ context.Context, cur *identity, token string) (*identity, error) {
	id, err := a.v.verify(token)
	if err != nil {
		return nil, reqErr(ErrInvalidToken, "%s", err.Error())
	}
	if id.user != cur.user {
		return nil, &closeError{code: CloseForbidden, reason: "refresh token is for another user"}
	}
	return id, nil
}
