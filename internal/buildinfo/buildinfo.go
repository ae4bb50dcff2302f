// Package buildinfo says which build of Herald is running, from what the Go
// toolchain records in the binary (runtime/debug.ReadBuildInfo): the module
// version of `go install …@v1.2.3`, or, for a build from a source checkout,
// the VCS revision, whether the tree was modified, and the commit time.
package buildinfo

import (
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// override, when set with
// -ldflags "-X github.com/herald-io/herald/internal/buildinfo.override=v1.2.3",
// replaces the version read from the build information (for packagers that
// build from a tarball without VCS data).
var override string

// Info describes one build.
type Info struct {
	// Version is the main module's version ("v1.2.3") for a module build,
	// or "devel" for a build from a source tree.
	Version string
	// Revision is the VCS commit of a source build; empty when the build
	// did not record it (a module build, or -buildvcs=false).
	Revision string
	// Modified is set when the source tree had uncommitted changes.
	Modified bool
	// Time is the commit time of Revision (RFC 3339), as Go records it;
	// Go records no build time.
	Time string
	// Go is the toolchain, with the target ("go1.26.8 linux/amd64").
	Go string
}

var (
	once sync.Once
	info Info
)

// Read returns the running binary's build information.
func Read() Info {
	once.Do(func() {
		bi, _ := debug.ReadBuildInfo()
		info = parse(bi, override)
	})
	return info
}

// pseudo matches a pseudo-version's tail, "20261126015636-51d175ada29c":
// what Go stamps on a build from a checkout that is not at a tag.
var pseudo = regexp.MustCompile(`\d{14}-[0-9a-f]{12}(\+dirty)?$`)

func parse(bi *debug.BuildInfo, override string) Info {
	in := Info{Version: "devel", Go: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if override != "" {
			in.Version = override
		}
		return in
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	v := bi.Main.Version
	switch {
	case override != "":
		in.Version = override
	case v == "" || v == "(devel)":
	case in.Revision != "" && (pseudo.MatchString(v) || strings.HasSuffix(v, "+dirty")):
		// A source build that Go gave a pseudo-version: the revision
		// says more.
	default:
		in.Version = v
	}
	return in
}

// Version is the short form, for Info and the browser's ConnectedFrame:
// "v1.2.3", "devel-51d175ada29c", "devel-51d175ada29c-dirty", or "devel"
// when the build recorded no revision.
func Version() string { return Read().Short() }

// Short returns in's short form (see Version).
func (in Info) Short() string {
	v := in.Version
	if in.Version == "devel" && in.Revision != "" {
		v += "-" + abbrev(in.Revision)
		if in.Modified {
			v += "-dirty"
		}
	}
	return v
}

// String is the long form that `herald version` prints.
func (in Info) String() string {
	var b strings.Builder
	b.WriteString("herald " + in.Version + " (")
	switch {
	case in.Revision != "":
		b.WriteString("revision " + abbrev(in.Revision))
		if in.Modified {
			b.WriteString(", modified")
		}
		if in.Time != "" {
			b.WriteString(", committed " + in.Time)
		}
		b.WriteString("; ")
	case in.Version == "devel":
		b.WriteString("no VCS revision recorded: built with -buildvcs=false, from a git worktree or outside a checkout; ")
	}
	b.WriteString(in.Go + ")")
	return b.String()
}

func abbrev(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
