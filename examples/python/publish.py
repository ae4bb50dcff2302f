"""publish.py: publish JSON to a channel, exactly as written.

  python3 publish.py [channel]
"""
import sys

import grpc
from google.protobuf import json_format, struct_pb2

from connect import connect, herald_pb2

stub, metadata = connect()
channel = sys.argv[1] if len(sys.argv) > 1 else "news"

try:
    # The way to publish JSON: its text in `json`. Every reader gets this
    # text as it is: 12345678901234567891, 10.0 and the key order survive.
    ack = stub.Publish(
        herald_pb2.PublishRequest(
            channel=channel,
            json='{"order":12345678901234567891,"total":10.0,"status":"paid"}',
            idempotency_key="order-12345678901234567891-paid",  # a retry with this key publishes nothing twice
        ),
        metadata=metadata,
        timeout=10,
    )
    # offset is a uint64: a Python int, exact at any size.
    print(f"json: offset {ack.position.offset!r} epoch {ack.position.epoch}")

    # An empty google.protobuf.Value (no kind set) is refused, not
    # published as null.
    try:
        stub.Publish(herald_pb2.PublishRequest(channel=channel, data=struct_pb2.Value()), metadata=metadata, timeout=10)
    except grpc.RpcError as err:
        print(f"empty Value: {err.code().name}: {err.details()}")

    # If you must send a Value, ParseDict builds one. It is lossy: numbers
    # become doubles and keys are sorted (see the history below).
    value = json_format.ParseDict({"status": "paid", "total": 10.0, "order": 42}, struct_pb2.Value())
    ack2 = stub.Publish(herald_pb2.PublishRequest(channel=channel, data=value), metadata=metadata, timeout=10)
    print(f"data as a Value: offset {ack2.position.offset!r}")

    # What readers get: the exact text of each JSON payload, in `json`.
    since = herald_pb2.StreamPosition(offset=ack.position.offset - 1, epoch=ack.position.epoch)
    history = stub.History(herald_pb2.HistoryRequest(channel=channel, since=since, limit=10), metadata=metadata, timeout=10)
    for pub in history.publications:
        print(f"history: {pub.offset} {pub.json}")
except grpc.RpcError as err:
    sys.exit(f"publish failed: {err.code().name} {err.details()}")
