package memory_test

import (
	"context"
	"testing"

	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/enginetest"
	"github.com/herald-io/herald/engine/memory"
)

// TestContract runs the engine contract suite on the memory engine.
func TestContract(t *testing.T) {
	enginetest.Run(t, enginetest.Factory{
		Name: "memory",
		New: func(t *testing.T, h engine.Handler) engine.Engine {
			e := memory.New(memory.Options{})
			if err := e.Start(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = e.Close() })
			return e
		},
	})
}
