package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	herald "github.com/herald-io/herald"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// restRoutes are the REST routes and their methods.
var restRoutes = mustRouteMethods(herald.OpenAPI)

// methodNotAllowed is the REST gateway's option that answers a method a
// route does not take with 405 (see routingErrors).
var methodNotAllowed = runtime.WithRoutingErrorHandler(restRoutes.routingErrors)

// takes reports whether path has a route and whether that route takes
// method; allow lists the methods it takes.
func (rm routeMethods) takes(path, method string) (allow []string, known, ok bool) {
	// Without allocating for the request that is taken (every REST
	// publish): the list is made only for a refusal's Allow header.
	p := strings.Trim(path, "/")
	for _, r := range rm {
		if !r.matches(p) {
			continue
		}
		known = true
		for _, m := range r.methods {
			if m == method || method == http.MethodHead && m == http.MethodGet {
				return nil, true, true
			}
		}
	}
	if !known {
		return nil, false, false
	}
	return rm.allow(path), true, false
}

// matches reports whether p, a path without its outer slashes, has r's
// segments ("{channel}" matching any one).
func (r route) matches(p string) bool {
	for i, s := range r.segments {
		seg, rest, more := strings.Cut(p, "/")
		if more == (i == len(r.segments)-1) { // too many segments, or too few
			return false
		}
		if !strings.HasPrefix(s, "{") && s != seg {
			return false
		}
		p = rest
	}
	return true
}

func mustRouteMethods(openapi []byte) routeMethods {
	rm, err := newRouteMethods(openapi)
	if err != nil {
		panic(err) // the document is generated and embedded: a build defect
	}
	return rm
}

// routeMethods knows which HTTP methods each REST route takes, read from
// the OpenAPI document that buf generates from the same google.api.http
// annotations as the gateway's routes.
type routeMethods []route

type route struct {
	segments []string // "{channel}" matches one segment
	methods  []string // sorted, upper case
}

func newRouteMethods(openapi []byte) (routeMethods, error) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openapi, &doc); err != nil {
		return nil, fmt.Errorf("openapi document: %w", err)
	}
	var rm routeMethods
	for path, ops := range doc.Paths {
		r := route{segments: strings.Split(strings.Trim(path, "/"), "/")}
		for m := range ops {
			r.methods = append(r.methods, strings.ToUpper(m))
		}
		sort.Strings(r.methods)
		rm = append(rm, r)
	}
	return rm, nil
}

// allow returns the methods of the routes whose template matches path,
// split as sent (escaped).
func (rm routeMethods) allow(path string) []string {
	p := strings.Trim(path, "/")
	seen := map[string]bool{}
	var out []string
	for _, r := range rm {
		if !r.matches(p) {
			continue
		}
		for _, m := range r.methods {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	sort.Strings(out)
	return out
}

// routingErrors answers a request whose path has a route but not for its
// method with 405 Method Not Allowed and an Allow header, where the
// gateway's default answers 501; the body keeps the gateway's error shape
// ({"code":12,"message":"Method Not Allowed"}). Other routing
// errors (404, 400) get the gateway's default handling.
func (rm routeMethods) routingErrors(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
	if code != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, code)
		return
	}
	if allow := rm.allow(r.URL.EscapedPath()); len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
	}
	runtime.HTTPError(ctx, mux, m, w, r, &runtime.HTTPStatusError{
		HTTPStatus: http.StatusMethodNotAllowed,
		Err:        status.Error(codes.Unimplemented, http.StatusText(http.StatusMethodNotAllowed)),
	})
}
