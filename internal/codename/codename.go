// Package codename is the one table of gRPC status codes and their lower
// snake case names (`invalid_argument`), as they travel in herald.v1.Error
// (SubscribeMany's `ended`, PublishStream's per-message errors) and in
// metric labels: the core writes names with Of, the bridge reads them
// back with Parse.
package codename

import "google.golang.org/grpc/codes"

// names is indexed by code: every code gRPC defines.
var names = [...]string{
	codes.OK:                 "ok",
	codes.Canceled:           "canceled",
	codes.Unknown:            "unknown",
	codes.InvalidArgument:    "invalid_argument",
	codes.DeadlineExceeded:   "deadline_exceeded",
	codes.NotFound:           "not_found",
	codes.AlreadyExists:      "already_exists",
	codes.PermissionDenied:   "permission_denied",
	codes.ResourceExhausted:  "resource_exhausted",
	codes.FailedPrecondition: "failed_precondition",
	codes.Aborted:            "aborted",
	codes.OutOfRange:         "out_of_range",
	codes.Unimplemented:      "unimplemented",
	codes.Internal:           "internal",
	codes.Unavailable:        "unavailable",
	codes.DataLoss:           "data_loss",
	codes.Unauthenticated:    "unauthenticated",
}

// Of returns the name of c ("unknown" for a code gRPC does not define).
func Of(c codes.Code) string {
	if int(c) < len(names) {
		return names[c]
	}
	return names[codes.Unknown]
}

// Parse returns the code named name, and codes.Unknown for a name it does
// not know.
func Parse(name string) codes.Code {
	for c, n := range names {
		if n == name {
			return codes.Code(c)
		}
	}
	return codes.Unknown
}
