// Command herald runs and talks to Herald, real-time messaging over gRPC
// and WebSocket. Run `herald help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/herald-io/herald/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "herald:", err)
		os.Exit(1)
	}
}

const usage = `herald: real-time messaging over gRPC and WebSocket.

Usage:
  herald serve      [flags]   run core, bridge, REST gateway and console (in-memory engine by default)
  herald core       [flags]   run the core only (gRPC API and REST gateway)
  herald bridge     [flags]   run a WebSocket bridge against a core (--core ADDR)
  herald publish    [flags] CHANNEL JSON   publish a JSON payload
  herald subscribe  [flags] CHANNEL        print a channel's publications as JSON lines
  herald bench      MODE [flags]           load a running Herald: idle, fanout, channels, publish
  herald version

Run "herald COMMAND --help" for the flags of a command.
`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve", "core", "bridge":
		return serve(ctx, cmd, rest)
	case "publish":
		return publish(ctx, rest, os.Stdout)
	case "subscribe":
		return subscribe(ctx, rest, os.Stdout)
	case "bench":
		return bench.Main(ctx, rest)
	case "version":
		fmt.Println(version())
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
