// Package payload owns what Herald does with a publication's payload as
// text: it checks that JSON text is valid JSON in UTF-8, compacts it,
// converts a google.protobuf.Value to JSON text, takes the raw text of a
// member out of a JSON object (the `data` of a REST body or a browser's
// publish frame), and writes publications as protobuf JSON with their JSON
// payloads spliced in exactly.
//
// A JSON payload is carried as its text end to end: the publisher's JSON,
// with insignificant whitespace removed, is what every reader gets. Numbers
// (integers beyond 2^53, `1.0`, `-0`, `1e400`), strings (escapes, astral
// characters, U+2028) and the order of object keys are never touched; only
// a google.protobuf.Value, which cannot hold them, loses them, and only
// where a reader asks for one.
//
// The core (service), the bridge (wsbridge), the REST gateway (node) and
// the CLI use this package, so that each of these rules is written once.
package payload
