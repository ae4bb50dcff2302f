package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	heraldv1 "github.com/herald-io/herald/gen/herald/v1"
)

// TestNamespaceListCarriesEveryOption: every field of Namespace, set to a
// value other than its zero, survives the trip a core's namespaces make to
// its bridges. A field added to Namespace and not to NamespaceOptions
// fails here, instead of being silently dropped on split bridges.
func TestNamespaceListCarriesEveryOption(t *testing.T) {
	var ns Namespace
	v := reflect.ValueOf(&ns).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("n_1")
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(7 + i))
		default:
			t.Fatalf("field %s of kind %s: teach this test (and NamespaceList) about it", v.Type().Field(i).Name, f.Kind())
		}
	}
	ns.HistoryTTL = Duration(90 * time.Second)
	in := Namespaces{ns.Name: &ns, "": {Name: ""}}
	out, err := NamespacesFrom(in.NamespaceList())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("after the trip: %+v, want %+v (differences %v)", out, in, in.Diff(out, "sent", "received"))
	}
	if d := in.Diff(out, "sent", "received"); len(d) != 0 {
		t.Fatalf("Diff of equal namespaces: %v", d)
	}
}

func TestNamespacesFromRefusesWhatAConfigurationCouldNotHold(t *testing.T) {
	for _, tc := range []struct {
		name string
		list []*heraldv1.NamespaceOptions
		want string
	}{
		{"bad name", []*heraldv1.NamespaceOptions{{Name: "a:b"}}, "must be 1-64"},
		{"twice", []*heraldv1.NamespaceOptions{{Name: "a"}, {Name: "a"}}, "listed twice"},
		{"history too large", []*heraldv1.NamespaceOptions{{Name: "a", HistorySize: 2000000}}, "history_size"},
		{"history without ttl", []*heraldv1.NamespaceOptions{{Name: "a", HistorySize: 5}}, "history_ttl"},
		{"join_leave without presence", []*heraldv1.NamespaceOptions{{Name: "a", JoinLeave: true}}, "needs presence"},
	} {
		_, err := NamespacesFrom(&heraldv1.NamespaceList{Namespaces: tc.list})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestNamespacesDiff(t *testing.T) {
	a := Namespaces{
		"chat": {Name: "chat", HistorySize: 100, HistoryTTL: Duration(5 * time.Minute)},
		"old":  {Name: "old"},
	}
	b := Namespaces{
		"chat": {Name: "chat", HistorySize: 0, HistoryTTL: Duration(time.Minute), Presence: true},
		"new":  {Name: "new"},
	}
	got := strings.Join(a.Diff(b, "mine", "theirs"), "; ")
	want := `"chat": history_size 100 → 0, history_ttl 5m0s → 1m0s, presence false → true; "new" only in theirs; "old" only in mine`
	if got != want {
		t.Fatalf("Diff:\n got %s\nwant %s", got, want)
	}
}
