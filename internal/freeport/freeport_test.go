package freeport

import (
	"fmt"
	"net"
	"testing"
)

// Ports come from below the ephemeral range (where a parallel test's
// outgoing connection cannot take them), are free, and with withGap so is
// port+Gap.
func TestPortBelowTheEphemeralRange(t *testing.T) {
	start := ephemeralStart()
	if start-Gap <= lowest {
		t.Skipf("ephemeral range starts at %d: Port falls back on the kernel's choice", start)
	}
	seen := map[int]bool{}
	for range 50 {
		p, err := Port(true)
		if err != nil {
			t.Fatal(err)
		}
		if p < lowest || p+Gap >= start {
			t.Fatalf("port %d (and %d) not within [%d, %d)", p, p+Gap, lowest, start)
		}
		for _, q := range []int{p, p + Gap} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				t.Fatalf("port %d is not free: %v", q, err)
			}
			l.Close()
		}
		seen[p] = true
	}
	if len(seen) < 40 {
		t.Errorf("50 ports, only %d different: not chosen at random", len(seen))
	}
	// A port taken is not handed out.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if taken := l.Addr().(*net.TCPAddr).Port; free(taken) {
		t.Errorf("free(%d) while it is listened on", taken)
	}
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		t.Errorf("Addr %q: %v", a, err)
	}
}
