"""subscribe.py: tail a channel and resume after every drop, from the last
position seen, with nothing missed and nothing twice; or say plainly when
that is impossible (recovered: false), so that the state is reloaded.

  python3 subscribe.py [channel] [offset@epoch]
"""
import random
import sys
import time

import grpc

from connect import connect, herald_pb2

stub, metadata = connect()
channel = sys.argv[1] if len(sys.argv) > 1 else "news"
since = None  # the last position seen
if len(sys.argv) > 2:
    offset, epoch = sys.argv[2].split("@")
    since = herald_pb2.StreamPosition(offset=int(offset), epoch=epoch)

# Codes with which a node ends a subscription that a resubscribe from
# `since` continues: restart, drain or lost connection (UNAVAILABLE), lost
# continuity (ABORTED), a subscriber too slow (RESOURCE_EXHAUSTED).
RESUMABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}

delay = 0.0
while True:
    resumed = since is not None
    try:
        for ev in stub.Subscribe(herald_pb2.SubscribeRequest(channel=channel, since=since), metadata=metadata):
            delay = 0.0
            kind = ev.WhichOneof("event")
            if kind == "subscribed":
                position, recovered = ev.subscribed.position, ev.subscribed.recovered
                if resumed and not recovered:
                    print(f"unrecovered: what came after {since.offset}@{since.epoch} is lost; reload the state")
                # A successful resume replays up to `position`, and each
                # replayed publication moves `since`; otherwise we are live
                # from `position`.
                if not resumed or not recovered:
                    since = herald_pb2.StreamPosition(offset=position.offset, epoch=position.epoch)
                print(f"subscribed at {position.offset}@{position.epoch}" + (f" recovered={recovered}" if resumed else ""))
            elif kind == "publication":
                pub = ev.publication
                if pub.offset:  # 0: the namespace keeps no history
                    since = herald_pb2.StreamPosition(offset=pub.offset, epoch=pub.epoch)
                # `json` holds the exact text; a binary payload is in `binary` (bytes).
                text = pub.json if pub.WhichOneof("payload") == "json" else pub.binary.hex()
                print(f"{pub.offset}@{pub.epoch} {text}")
        reason = "OK: the stream ended"
    except grpc.RpcError as err:
        if err.code() not in RESUMABLE:
            sys.exit(f"subscription refused: {err.code().name}: {err.details()}")
        reason = f"{err.code().name}: {err.details()}"
    delay = min(delay * 2 or 0.1, 5.0)
    print(f"stream ended ({reason}); resubscribing in {delay * 1000:.0f} ms")
    time.sleep(delay * random.uniform(0.5, 1))  # jitter
