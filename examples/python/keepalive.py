"""keepalive.py: what a keepalive setting does to a quiet subscription.
Herald closes a connection whose client pings more often than every 10 s
while nothing else flows; grpcio then ends the stream with an error that is
about pings, not about a slow subscriber.

  python3 keepalive.py <keepalive ms | default> <seconds> [channel]

It subscribes with grpc.keepalive_time_ms set to <keepalive ms> and
grpc.http2.max_pings_without_data 0 (grpcio's default, 2, stops pinging a
quiet connection after two pings), or with connect.py's settings, and
prints `ok` if the stream lived <seconds> seconds, or how it ended.
"""
import sys
import time

import grpc

from connect import connect, herald_pb2

ms, seconds = sys.argv[1], float(sys.argv[2])
channel = sys.argv[3] if len(sys.argv) > 3 else "news"
options = [] if ms == "default" else [("grpc.keepalive_time_ms", int(ms)), ("grpc.http2.max_pings_without_data", 0)]
stub, metadata = connect(options)
start = time.monotonic()
try:
    for ev in stub.Subscribe(herald_pb2.SubscribeRequest(channel=channel), metadata=metadata, timeout=seconds):
        if ev.WhichOneof("event") == "subscribed":
            print("subscribed", flush=True)
except grpc.RpcError as err:
    if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        print(f"ok: keepalive {ms}, the stream lived {seconds:g} s")
        sys.exit(0)
    print(f"ended after {time.monotonic() - start:.1f} s: {err.code().name}: {err.details()}")
    sys.exit(2)
print(f"ended after {time.monotonic() - start:.1f} s: the node ended the stream")
sys.exit(2)
