package redis

import (
	"os"
	"testing"

	"github.com/herald-io/herald/internal/redistest"
)

// TestMain stops the cluster that the tests share (redistest.SharedCluster).
func TestMain(m *testing.M) {
	code := m.Run()
	redistest.StopShared()
	os.Exit(code)
}
