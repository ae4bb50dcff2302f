// connect.js: what every Node program needs to call Herald over gRPC,
// with @grpc/grpc-js and @grpc/proto-loader (no generated code).
//
//   HERALD_ADDR     host:port of the node's gRPC listener (default 127.0.0.1:7400)
//   HERALD_API_KEY  the backend's API key, sent as `authorization: Bearer <key>`
//   HERALD_CA_FILE  PEM CA to verify the node's certificate: TLS (default: plaintext)
//   HERALD_PROTO    the folder holding proto/ and third_party/ (default: this repository)
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const root = process.env.HERALD_PROTO || path.join(__dirname, '..', '..');
const definition = protoLoader.loadSync('herald/v1/herald.proto', {
  // herald.proto imports google/api/annotations.proto (its REST routes),
  // which is in third_party/: without that folder the load fails with
  // "ENOENT: no such file or directory, open '…/google/api/annotations.proto'".
  includeDirs: [path.join(root, 'proto'), path.join(root, 'third_party')],
  // Field names as written in herald.proto (raw_json, time_unix_ms). The
  // google.protobuf.Value bundled with protobufjs stays camelCase
  // (stringValue) even so: see publish.js.
  keepCase: true,
  // int64 and uint64 fields (offset, time_unix_ms) as decimal strings: a
  // JavaScript number is exact only up to 2^53, and the default is a Long.
  longs: String,
  enums: String,
  // Unset fields as their defaults, so that `recovered` is false, not
  // undefined, and oneofs: true names the set member (pub.payload === 'json').
  defaults: true,
  oneofs: true,
});
const { HeraldService } = grpc.loadPackageDefinition(definition).herald.v1;

// connect returns a client of the node at HERALD_ADDR and the metadata that
// carries the API key; pass it to every call.
function connect(options = {}) {
  const addr = process.env.HERALD_ADDR || '127.0.0.1:7400';
  const ca = process.env.HERALD_CA_FILE;
  const creds = ca ? grpc.credentials.createSsl(fs.readFileSync(ca)) : grpc.credentials.createInsecure();
  const client = new HeraldService(addr, creds, {
    // Herald closes a connection that pings more often than every 10 s
    // (GOAWAY too_many_pings): keep keepalive pings at 20 s or more.
    'grpc.keepalive_time_ms': 30000,
    'grpc.keepalive_timeout_ms': 10000,
    'grpc.keepalive_permit_without_calls': 1, // allowed: also between calls
    ...options,
  });
  const metadata = new grpc.Metadata();
  if (process.env.HERALD_API_KEY) {
    metadata.set('authorization', `Bearer ${process.env.HERALD_API_KEY}`);
  }
  return { client, metadata };
}

module.exports = { connect, grpc };
