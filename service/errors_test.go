package service

import (
	"testing"

	"github.com/herald-io/herald/internal/codename"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestErrorNamesEveryCode: the Error a SubscribeMany `ended` (or a
// PublishStream error) carries names the status's own code, for every
// code, and the name parses back to it, so that the bridge tells
// permanent refusals (unimplemented, not_found...) from temporary ones.
func TestErrorNamesEveryCode(t *testing.T) {
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		e := statusError(status.Error(c, "x"))
		if got := codename.Parse(e.Code); got != c {
			t.Errorf("%v travels as %q, read back as %v", c, e.Code, got)
		}
	}
}
