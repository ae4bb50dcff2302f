package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: rev},
			{Key: "vcs.time", Value: "2026-11-26T01:56:36Z"},
			{Key: "vcs.modified", Value: modified},
		}
	}
	const rev = "51d175ada29c3229c5ddb4d787d25d3e646d609a"
	for _, tc := range []struct {
		name      string
		bi        *debug.BuildInfo
		override  string
		short     string
		longParts []string
	}{
		{
			name:      "go install at a tag",
			bi:        &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}},
			short:     "v1.2.3",
			longParts: []string{"herald v1.2.3 (go"},
		},
		{
			name:      "source build, clean",
			bi:        &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261126015636-51d175ada29c"}, Settings: vcs(rev, "false")},
			short:     "devel-51d175ada29c",
			longParts: []string{"herald devel (revision 51d175ada29c, committed 2026-11-26T01:56:36Z; go"},
		},
		{
			name:      "source build, modified",
			bi:        &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261126015636-51d175ada29c+dirty"}, Settings: vcs(rev, "true")},
			short:     "devel-51d175ada29c-dirty",
			longParts: []string{"revision 51d175ada29c, modified"},
		},
		{
			name:      "source build at a tag",
			bi:        &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}, Settings: vcs(rev, "false")},
			short:     "v1.4.0",
			longParts: []string{"herald v1.4.0 (revision 51d175ada29c"},
		},
		{
			name:      "-buildvcs=false",
			bi:        &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			short:     "devel",
			longParts: []string{"herald devel (no VCS revision recorded"},
		},
		{
			name:     "ldflags override",
			bi:       &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}},
			override: "v2.0.0",
			short:    "v2.0.0",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := parse(tc.bi, tc.override)
			if got := in.Short(); got != tc.short {
				t.Errorf("Short() = %q, want %q", got, tc.short)
			}
			for _, p := range tc.longParts {
				if !strings.Contains(in.String(), p) {
					t.Errorf("String() = %q, want it to contain %q", in.String(), p)
				}
			}
			if in.Short() == "dev" || strings.Contains(in.String(), " dev ") {
				t.Errorf("version %q / %q says only dev", in.Short(), in.String())
			}
		})
	}
}
