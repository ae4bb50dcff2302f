package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// NamespaceList is n as a core sends it to its bridges (the first message
// of a BridgeSession), sorted by name.
func (n Namespaces) NamespaceList() *heraldv1.NamespaceList {
	out := &heraldv1.NamespaceList{Namespaces: make([]*heraldv1.NamespaceOptions, 0, len(n))}
	for _, ns := range n {
		out.Namespaces = append(out.Namespaces, &heraldv1.NamespaceOptions{
			Name:           ns.Name,
			HistorySize:    uint32(ns.HistorySize),
			HistoryTtl:     durationpb.New(ns.HistoryTTL.D()),
			Presence:       ns.Presence,
			JoinLeave:      ns.JoinLeave,
			AllowPublish:   ns.AllowPublish,
			AllowSubscribe: ns.AllowSubscribe,
			AllowAnonymous: ns.AllowAnonymous,
			AllowHistory:   ns.AllowHistory,
			AllowPresence:  ns.AllowPresence,
			SubscribeHook:  ns.SubscribeHook,
			PublishHook:    ns.PublishHook,
		})
	}
	sort.Slice(out.Namespaces, func(i, j int) bool { return out.Namespaces[i].Name < out.Namespaces[j].Name })
	return out
}

// NamespacesFrom is the index of a core's namespace list, checked as the
// configuration's are: an error names the first entry a configuration
// could not have held.
func NamespacesFrom(l *heraldv1.NamespaceList) (Namespaces, error) {
	m := make(Namespaces, len(l.GetNamespaces()))
	for i, o := range l.GetNamespaces() {
		ns := &Namespace{
			Name:           o.GetName(),
			HistorySize:    int(o.GetHistorySize()),
			HistoryTTL:     Duration(o.GetHistoryTtl().AsDuration()),
			Presence:       o.GetPresence(),
			JoinLeave:      o.GetJoinLeave(),
			AllowPublish:   o.GetAllowPublish(),
			AllowSubscribe: o.GetAllowSubscribe(),
			AllowAnonymous: o.GetAllowAnonymous(),
			AllowHistory:   o.GetAllowHistory(),
			AllowPresence:  o.GetAllowPresence(),
			SubscribeHook:  o.GetSubscribeHook(),
			PublishHook:    o.GetPublishHook(),
		}
		if p := namespaceProblems(i, *ns); len(p) > 0 {
			return nil, errors.New(p[0])
		}
		switch {
		case m[ns.Name] != nil:
			return nil, fmt.Errorf("namespaces[%d]: namespace %q listed twice", i, ns.Name)
		case ns.HistorySize > 0 && ns.HistoryTTL.D() <= 0:
			return nil, fmt.Errorf("namespaces[%d] (%s): history_ttl must be positive", i, ns.Name)
		}
		m[ns.Name] = ns
	}
	return m, nil
}

// Diff lists how b differs from a, one entry a namespace, naming a and b
// by their labels: `"x" only in A`, `"x": history_size 100 → 0, presence
// false → true` (a's value first). Empty when they hold the same options.
func (a Namespaces) Diff(b Namespaces, labelA, labelB string) []string {
	names := make(map[string]struct{}, len(a)+len(b))
	for k := range a {
		names[k] = struct{}{}
	}
	for k := range b {
		names[k] = struct{}{}
	}
	sorted := make([]string, 0, len(names))
	for k := range names {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var out []string
	for _, name := range sorted {
		x, y := a[name], b[name]
		switch {
		case y == nil:
			out = append(out, fmt.Sprintf("%q only in %s", name, labelA))
		case x == nil:
			out = append(out, fmt.Sprintf("%q only in %s", name, labelB))
		default:
			var fields []string
			vx, vy := reflect.ValueOf(*x), reflect.ValueOf(*y)
			t := vx.Type()
			for i := 0; i < t.NumField(); i++ {
				fx, fy := vx.Field(i).Interface(), vy.Field(i).Interface()
				if reflect.DeepEqual(fx, fy) {
					continue
				}
				tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
				if d, ok := fx.(Duration); ok {
					fx, fy = time.Duration(d).String(), time.Duration(fy.(Duration)).String()
				}
				fields = append(fields, fmt.Sprintf("%s %v → %v", tag, fx, fy))
			}
			if len(fields) > 0 {
				out = append(out, fmt.Sprintf("%q: %s", name, strings.Join(fields, ", ")))
			}
		}
	}
	return out
}
