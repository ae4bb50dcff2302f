// Command herald runs and talks to Herald, real-time messaging over gRPC
// and WebSocket. Run `herald help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/herald-io/herald/bench"
	"github.com/herald-io/herald/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
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
  herald version                           print the version, VCS revision and Go toolchain (also --version)

Run "herald COMMAND --help" for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve", "core", "bridge":
		return serve(ctx, cmd, rest, stderr)
	case "publish":
		return publish(ctx, rest, stdout)
	case "subscribe":
		return subscribeTo(ctx, rest, stdout, stderr)
	case "bench":
		return bench.Main(ctx, rest)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, buildinfo.Read())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}
