#!/bin/sh
# generate.sh: Python stubs for Herald's API, from the repository's proto/
# and third_party/ (herald.proto imports google/api/annotations.proto, which
# imports google/api/http.proto: both need stubs too, or importing
# herald_pb2 fails with "No module named 'google.api'").
#
#   examples/python/generate.sh [--grpc-tools] [out]
#
# out defaults to the gen folder beside this script.
#
# By default it uses protoc and grpc_python_plugin, which on Debian 12 come
# from the packages protobuf-compiler and protobuf-compiler-grpc, the same
# versions as the runtime in python3-protobuf and python3-grpcio. With
# --grpc-tools it uses `python3 -m grpc_tools.protoc` instead: pip's
# grpcio-tools, or Debian's python3-grpc-tools.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tools=0
if [ "${1:-}" = "--grpc-tools" ]; then tools=1; shift; fi
out=${1:-$(dirname "$0")/gen}
mkdir -p "$out"
set -- -I "$root/proto" -I "$root/third_party" --python_out="$out" --grpc_python_out="$out" \
  herald/v1/herald.proto google/api/annotations.proto google/api/http.proto
if [ "$tools" = 1 ]; then
  exec "${PYTHON:-python3}" -m grpc_tools.protoc "$@"
fi
plugin=$(command -v grpc_python_plugin) || {
  echo "generate.sh: no grpc_python_plugin (Debian: apt-get install protobuf-compiler-grpc), or use --grpc-tools" >&2
  exit 1
}
exec protoc --plugin=protoc-gen-grpc_python="$plugin" "$@"
