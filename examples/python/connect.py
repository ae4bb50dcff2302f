"""connect.py: what every Python program needs to call Herald over gRPC.

The stubs come from generate.sh (run it first, and put its output folder on
PYTHONPATH):

  HERALD_ADDR     host:port of the node's gRPC listener (default 127.0.0.1:7400)
  HERALD_API_KEY  the backend's API key, sent as `authorization: Bearer <key>`
  HERALD_CA_FILE  PEM CA to verify the node's certificate: TLS (default: plaintext)
"""
import os

import grpc

from herald.v1 import herald_pb2, herald_pb2_grpc  # noqa: F401 (herald_pb2 is for the examples)

# Herald closes a connection that pings more often than every 10 s
# (GOAWAY too_many_pings): keep keepalive pings at 20 s or more.
OPTIONS = [
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def connect(options=()):
    """Returns a HeraldService stub for HERALD_ADDR and the metadata that
    carries the API key: pass it to every call."""
    addr = os.environ.get("HERALD_ADDR", "127.0.0.1:7400")
    ca = os.environ.get("HERALD_CA_FILE")
    opts = dict(OPTIONS)
    opts.update(options)
    if ca:
        with open(ca, "rb") as f:
            channel = grpc.secure_channel(addr, grpc.ssl_channel_credentials(f.read()), list(opts.items()))
    else:
        channel = grpc.insecure_channel(addr, list(opts.items()))
    key = os.environ.get("HERALD_API_KEY")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    return herald_pb2_grpc.HeraldServiceStub(channel), metadata
