"""publish_stream.py: many publications on one PublishStream. Each request
gets exactly one response, in request order: its position, or an error for
that publication alone (the stream carries on).

  python3 publish_stream.py [channel]
"""
import sys

import grpc

from connect import connect, herald_pb2

stub, metadata = connect()
channel = sys.argv[1] if len(sys.argv) > 1 else "news"

messages = [
    (channel, '{"tick":1}'),
    ("nowhere:1", '{"tick":2}'),  # unknown namespace: refused
    (channel, '{"tick":3'),  # not JSON: refused, nothing stored
    (channel, '{"tick":4,"price":1.10}'),
]


def requests():
    # grpcio pulls from this generator as the stream can take more: it is
    # the backpressure. Give publications idempotency keys if you resend
    # what was not acknowledged after a broken stream.
    for i, (ch, text) in enumerate(messages, 1):
        yield herald_pb2.PublishStreamRequest(publish=herald_pb2.PublishRequest(channel=ch, json=text), sequence=i)


try:
    for res in stub.PublishStream(requests(), metadata=metadata):
        if res.WhichOneof("result") == "ok":
            print(f"{res.sequence} ok offset {res.ok.position.offset}")
        else:
            print(f"{res.sequence} refused {res.error.code}: {res.error.message}")
except grpc.RpcError as err:  # the whole stream failed (UNAVAILABLE, UNAUTHENTICATED…)
    sys.exit(f"stream failed: {err.code().name} {err.details()}")
