package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCodeNames: PublishStream's per-publication codes ("invalid_argument")
// read back as the gRPC codes the node wrote, for every code.
func TestCodeNames(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if got := parseCode(codeName(c)); got != c {
			t.Errorf("%v → %q → %v", c, codeName(c), got)
		}
	}
	for name, want := range map[string]codes.Code{"invalid_argument": codes.InvalidArgument, "resource_exhausted": codes.ResourceExhausted, "ok": codes.OK, "nonsense": codes.Unknown} {
		if got := parseCode(name); got != want {
			t.Errorf("parseCode(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestCodeOf(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{newError(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{fmt.Errorf("wrapped: %w", newError(codes.Aborted, "x")), codes.Aborted},
		{status.Error(codes.NotFound, "raw status"), codes.NotFound},
		{context.Canceled, codes.Canceled},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{ErrFull, codes.ResourceExhausted},
		{ErrClosed, codes.FailedPrecondition},
		{errors.New("other"), codes.Unknown},
		{toError(ctx, status.Error(codes.Canceled, "context canceled")), codes.Canceled},
	} {
		if got := CodeOf(tc.err); got != tc.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	err := toError(ctx, status.Error(codes.Canceled, "context canceled"))
	if !errors.Is(err, context.Canceled) || status.Code(err) != codes.Canceled || err.Error() != "canceled: context canceled" {
		t.Fatalf("toError of the caller's cancellation: %v", err)
	}
}

// TestBackoff: waits grow from Initial, doubling, to Max, each drawn from
// the upper half of its step; reset starts over.
func TestBackoff(t *testing.T) {
	b := backoff{r: Retry{Initial: 100 * time.Millisecond, Max: time.Second}.withDefaults()}
	steps := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for round := 0; round < 2; round++ {
		for i, step := range steps {
			step *= time.Millisecond
			if d := b.next(); d < step/2 || d >= step {
				t.Fatalf("wait %d: %v, want in [%v, %v)", i, d, step/2, step)
			}
		}
		b.reset()
	}
	r := Retry{}.withDefaults()
	if r.Attempts != 10 || r.Initial != 100*time.Millisecond || r.Max != 5*time.Second || r.AttemptTimeout != 10*time.Second {
		t.Fatalf("defaults %+v", r)
	}
	if !r.exhausted(10) || r.exhausted(9) || (Retry{Attempts: -1}).exhausted(1000) {
		t.Fatal("exhausted")
	}
}

func TestParsePosition(t *testing.T) {
	p, err := ParsePosition("42@3f2a9c1b")
	if err != nil || p != (Position{42, "3f2a9c1b"}) || p.String() != "42@3f2a9c1b" {
		t.Fatalf("%v %v", p, err)
	}
	for _, bad := range []string{"", "42", "x@e", "-1@e"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("ParsePosition(%q) accepted", bad)
		}
	}
}
