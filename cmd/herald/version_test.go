package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"github.com/herald-io/herald/internal/buildinfo"
	"github.com/herald-io/herald/service"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestVersionCommand: `herald version` and `herald --version` print the
// build's version and toolchain, never a bare "dev"; the core reports the
// same version in Info.
func TestVersionCommand(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out, &errOut); err != nil {
			t.Fatalf("herald %s: %v (stderr %q)", arg, err, errOut.String())
		}
		got := strings.TrimSpace(out.String())
		if got != buildinfo.Read().String() || !strings.HasPrefix(got, "herald devel") || !strings.Contains(got, "go1.") {
			t.Fatalf("herald %s printed %q", arg, got)
		}
	}
	if service.Version != buildinfo.Version() || service.Version == "dev" {
		t.Fatalf("service.Version = %q, buildinfo says %q", service.Version, buildinfo.Version())
	}
}

// TestVersionOfASourceBuild: a binary built from this checkout names its
// revision (and whether the tree was modified) in `herald version`, and
// its Info RPC reports the same revision.
func TestVersionOfASourceBuild(t *testing.T) {
	bin := heraldBinary(t)
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	// Go stamps VCS information only where .git is a directory: not in a
	// `git worktree`, whose .git is a file.
	if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err != nil || !fi.IsDir() {
		t.Skip("a git worktree: the go command records no VCS information here")
	}
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	porcelain, err := exec.Command("git", "status", "--porcelain").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "devel-" + strings.TrimSpace(string(rev))[:12]
	if len(porcelain) > 0 {
		want += "-dirty"
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("herald version: %v\n%s", err, out)
	}
	line := string(out)
	if !strings.HasPrefix(line, "herald devel (revision "+strings.TrimSpace(string(rev))[:12]) ||
		strings.Contains(line, ", modified") != (len(porcelain) > 0) || !strings.Contains(line, "committed 20") {
		t.Fatalf("herald version printed %q; want revision %s (modified: %v)", line, rev, len(porcelain) > 0)
	}

	p := startProc(t)
	cc, err := grpc.NewClient(p.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	info, err := heraldv1.NewHeraldServiceClient(cc).Info(context.Background(), &heraldv1.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != want {
		t.Fatalf("Info.version = %q, want %q", info.Version, want)
	}
	resp, err := http.Get("http://" + p.http + "/v1/info")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var viaREST heraldv1.InfoResponse
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if err := protojson.Unmarshal(buf.Bytes(), &viaREST); err != nil || viaREST.Version != want {
		t.Fatalf("GET /v1/info: %s (%v), want version %q", buf.String(), err, want)
	}
}
