package hooks

import (
	"context"
	"io"
	"net/http"
	"path"

	hooksv1 "github.com/herald-io/herald/gen/herald/hooks/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxRequest bounds a request body HTTPHandler reads.
const maxRequest = 4 << 20

// HTTPHandler serves srv in the hooks' HTTP/JSON form: a POST whose last
// path segment names the hook (…/connect, …/refresh, …/subscribe,
// …/publish, …/rpc), its body the request as JSON, answered 200 with the
// response as JSON. The request's Authorization header reaches srv as the
// `authorization` gRPC metadata of its context, so that one implementation
// checks hooks.api_key in both forms. An error from srv answers the HTTP
// status of its gRPC code (a bridge takes any status but 200 as a failed
// call).
func HTTPHandler(srv hooksv1.HooksServiceServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "POST a hook request", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		ctx := r.Context()
		if a := r.Header.Get("Authorization"); a != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", a))
		}
		var (
			req  proto.Message
			call func(context.Context) (proto.Message, error)
		)
		switch path.Base(r.URL.Path) {
		case "connect":
			m := &hooksv1.ConnectRequest{}
			req, call = m, func(ctx context.Context) (proto.Message, error) { return srv.Connect(ctx, m) }
		case "refresh":
			m := &hooksv1.RefreshRequest{}
			req, call = m, func(ctx context.Context) (proto.Message, error) { return srv.Refresh(ctx, m) }
		case "subscribe":
			m := &hooksv1.SubscribeRequest{}
			req, call = m, func(ctx context.Context) (proto.Message, error) { return srv.Subscribe(ctx, m) }
		case "publish":
			m := &hooksv1.PublishRequest{}
			req, call = m, func(ctx context.Context) (proto.Message, error) { return srv.Publish(ctx, m) }
		case "rpc":
			m := &hooksv1.RPCRequest{}
			req, call = m, func(ctx context.Context) (proto.Message, error) { return srv.RPC(ctx, m) }
		default:
			http.Error(w, "unknown hook: the path must end in connect, refresh, subscribe, publish or rpc", http.StatusNotFound)
			return
		}
		if err := UnmarshalJSON(body, req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		resp, err := call(ctx)
		if err != nil {
			st := status.Convert(err)
			http.Error(w, st.Message(), httpStatus(st.Code()))
			return
		}
		out, err := MarshalJSON(resp)
		if err != nil {
			http.Error(w, "encoding the answer: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})
}

func httpStatus(c codes.Code) int {
	switch c {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
