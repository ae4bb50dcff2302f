package redis

import (
	"context"
	_ "embed"

	goredis "github.com/redis/go-redis/v9"
)

//go:embed publish.lua
var publishLua string

//go:embed history.lua
var historyLua string

//go:embed presence_add.lua
var presenceAddLua string

//go:embed presence_get.lua
var presenceGetLua string

//go:embed presence_sweep.lua
var presenceSweepLua string

//go:embed check.lua
var checkLua string

//go:embed bump.lua
var bumpLua string

//go:embed registry_sweep.lua
var registrySweepLua string

var (
	publishScript       = goredis.NewScript(publishLua)
	historyScript       = goredis.NewScript(historyLua)
	presenceAddScript   = goredis.NewScript(presenceAddLua)
	presenceGetScript   = goredis.NewScript(presenceGetLua)
	presenceSweepScript = goredis.NewScript(presenceSweepLua)
	checkScript         = goredis.NewScript(checkLua)
	bumpScript          = goredis.NewScript(bumpLua)
	registrySweepScript = goredis.NewScript(registrySweepLua)
)

// once is a command that go-redis must not send twice: a cluster client
// still follows MOVED and ASK for it (the node refused it: it did not
// run), but does not retry it after a network error, when it may have run.
// Publishing twice would store and deliver a publication twice.
type once struct{ *goredis.Cmd }

// NoRetry tells go-redis not to retry the command.
func (once) NoRetry() bool { return true }

// evalArgs returns the arguments of EVALSHA (or EVAL) of s.
func evalArgs(cmd, script string, keys []string, args []any) []any {
	out := make([]any, 0, 3+len(keys)+len(args))
	out = append(out, cmd, script, len(keys))
	for _, k := range keys {
		out = append(out, k)
	}
	return append(out, args...)
}

// processer is what go-redis clients and pipelines have in common to run
// (or queue) a command.
type processer interface {
	Process(ctx context.Context, cmd goredis.Cmder) error
}

// evalShaOnce runs (or queues, on a pipeline) s by its digest, as a
// command sent at most once.
func evalShaOnce(ctx context.Context, p processer, s *goredis.Script, keys []string, args ...any) *goredis.Cmd {
	cmd := goredis.NewCmd(ctx, evalArgs("evalsha", s.Hash(), keys, args)...)
	_ = p.Process(ctx, once{cmd})
	return cmd
}

// evalOnce is evalShaOnce with the script's source (after NOSCRIPT).
func evalOnce(ctx context.Context, p processer, src string, keys []string, args ...any) *goredis.Cmd {
	cmd := goredis.NewCmd(ctx, evalArgs("eval", src, keys, args)...)
	_ = p.Process(ctx, once{cmd})
	return cmd
}

// runOnce runs s as a command sent at most once: by digest, then, if Redis
// does not have the script (a new node, a promoted replica), by source.
func runOnce(ctx context.Context, p processer, s *goredis.Script, src string, keys []string, args ...any) *goredis.Cmd {
	cmd := evalShaOnce(ctx, p, s, keys, args...)
	if goredis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		return evalOnce(ctx, p, src, keys, args...)
	}
	return cmd
}
