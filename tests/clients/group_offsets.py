"""Reads or commits a group's offsets through confluent-kafka, independently of the fjord CLI.

group_offsets.py BOOTSTRAP GROUP get TOPIC P...      prints {"P": offset or null, ...} (OffsetFetch)
group_offsets.py BOOTSTRAP GROUP set TOPIC P=O...    commits the offsets (OffsetCommit outside any generation)"""
import json
import sys

from confluent_kafka import Consumer, TopicPartition

from common import check, die
from group_helpers import committed

bootstrap, group, op, topic = sys.argv[1:5]
args = sys.argv[5:]
if op == "get":
    print(json.dumps({str(p): o for p, o in committed(bootstrap, group, topic, [int(a) for a in args]).items()}))
elif op == "set":
    offsets = [TopicPartition(topic, int(p), int(o)) for p, o in (a.split("=") for a in args)]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    res = c.commit(offsets=offsets, asynchronous=False)
    c.close()
    check(all(tp.error is None for tp in res), f"commit failed: {res}")
    print("ok")
else:
    die(f"unknown operation {op}")
