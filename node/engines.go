package node

import (
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/engine"
	"github.com/herald-io/herald/engine/memory"
	"github.com/herald-io/herald/engine/redis"
)

// engines are the engines a configuration can name (`engine:`), each made
// from the configuration. A new engine is a package of its own that passes
// the suite of engine/enginetest, and one entry here.
var engines = map[string]func(cfg config.Config, log *slog.Logger) (engine.Engine, error){
	"memory": func(cfg config.Config, _ *slog.Logger) (engine.Engine, error) {
		return memory.New(memory.OptionsFrom(cfg.Limits)), nil
	},
	"redis": func(cfg config.Config, log *slog.Logger) (engine.Engine, error) {
		ns := cfg.NamespaceIndex()
		return redis.New(cfg.Redis, redis.Options{
			Log:         log,
			PresenceTTL: cfg.Redis.PresenceTTL.D(),
			HasPresence: func(channel string) bool { n, err := ns.Lookup(channel); return err == nil && n.Presence },
		})
	},
}

// newEngine makes the engine cfg names.
func newEngine(cfg config.Config, log *slog.Logger) (engine.Engine, error) {
	newFor, ok := engines[cfg.Engine]
	if !ok {
		names := make([]string, 0, len(engines))
		for n := range engines {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("engine %q is not available: want one of %s", cfg.Engine, strings.Join(names, ", "))
	}
	return newFor(cfg, log)
}
