package codename

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// TestEveryCode: every gRPC code has a name that parses back to it, and
// the name is the code's own name in snake case.
func TestEveryCode(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		n := Of(c)
		if Parse(n) != c {
			t.Errorf("%v: %q parses to %v", c, n, Parse(n))
		}
		if strings.ReplaceAll(n, "_", "") != strings.ToLower(c.String()) {
			t.Errorf("%v named %q", c, n)
		}
	}
	if Parse("no_such_code") != codes.Unknown || Of(codes.Code(99)) != "unknown" {
		t.Error("unknown names and codes")
	}
}
