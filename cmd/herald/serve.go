package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/herald-io/herald/config"
	"github.com/herald-io/herald/node"
)

// loadConfig builds the configuration of a serving command: defaults, then
// the file named by --config (or $HERALD_CONFIG), then HERALD_* variables,
// then flags.
// roles maps the serving commands to the parts of a node they run.
var roles = map[string]config.Role{"serve": config.RoleServe, "core": config.RoleCore, "bridge": config.RoleBridge}

func loadConfig(name string, args []string, stderr io.Writer) (config.Config, error) {
	cfg := config.Default()
	path := os.Getenv("HERALD_CONFIG")
	for i, a := range args {
		a = strings.TrimLeft(a, "-")
		if v, ok := strings.CutPrefix(a, "config="); ok {
			path = v
		} else if a == "config" && i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, err
		}
	}
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", path, "configuration file, YAML or JSON; unknown keys are errors ($HERALD_CONFIG)")
	cfg.FlagsFor(fs, roles[name])
	fs.Usage = func() {
		ns := "Namespaces are set in the config file (see README)."
		if name == "bridge" {
			ns = "Namespaces come from the core (its config file); the bridge needs none of its own."
		}
		fmt.Fprintf(stderr, "Usage: herald %s [flags]\n\nPrecedence: defaults < config file < HERALD_* environment < flags.\n%s\n\nFlags:\n", name, ns)
		fs.PrintDefaults()
	}
	if err := config.ApplyEnv(fs, os.LookupEnv); err != nil {
		return cfg, err
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	return cfg, nil
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(ctx context.Context, name string, args []string, stderr io.Writer) error {
	cfg, err := loadConfig(name, args, stderr)
	if err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	mode := map[string]node.Mode{"serve": node.Serve, "core": node.Core, "bridge": node.BridgeOnly}[name]
	return node.Run(ctx, cfg, mode, newLogger(cfg, stderr))
}
