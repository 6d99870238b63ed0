"""Retention and compaction on a live broker (started with short check intervals): old segments are deleted
by retention.bytes and the log start offset moves; a compacted topic keeps the last value per key, drops
tombstones, and never changes offsets."""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from common import check, consume_all

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
for _, f in admin.create_topics([
        NewTopic("ret", num_partitions=1, replication_factor=1,
                 config={"segment.bytes": "2000", "retention.bytes": "4000"}),
        NewTopic("compacted", num_partitions=1, replication_factor=1,
                 config={"cleanup.policy": "compact", "segment.bytes": "2000",
                         "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100"})]).items():
    f.result()

# linger.ms=0 and a flush per message: one batch per message, so segments roll often.
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})


def send(topic, key, value):
    p.produce(topic, key=key, value=value, partition=0)
    check(p.flush(10) == 0, "flush")


for i in range(200):
    send("ret", None, f"{i:04d}".encode() * 25)

tp = TopicPartition("ret", 0)
# Retention runs every 200 ms, also while the messages above were produced: wait until the log start has
# moved and then stayed put for a second.
deadline = time.time() + 30
earliest, stable_since = 0, time.time()
while time.time() < deadline:
    now_earliest = admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result().offset
    if now_earliest != earliest:
        earliest, stable_since = now_earliest, time.time()
    elif earliest > 0 and time.time() - stable_since >= 1.0:
        break
    time.sleep(0.2)
check(earliest > 0, "retention.bytes never deleted a segment")
latest = admin.list_offsets({tp: OffsetSpec.latest()})[tp].result().offset
check(latest == 200, f"latest offset {latest}")
msgs = consume_all(bootstrap, "ret", [0], 200 - earliest)
check(msgs[0].offset() == earliest and msgs[-1].value() == b"0199" * 25, "retained tail")

final = {}
for rnd in range(30):
    for k in range(10):
        v = f"k{k}-round{rnd}".encode()
        send("compacted", f"k{k}".encode(), v)
        final[f"k{k}"] = v
send("compacted", b"k0", None)  # tombstone
final["k0"] = None
# Records after the tombstone so it leaves the active segment.
for i in range(40):
    send("compacted", b"filler", f"filler-{i}".encode() * 10)
final["filler"] = b"filler-39" * 10

total = 30 * 10 + 1 + 40
deadline = time.time() + 40
kept = None
while time.time() < deadline:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition("compacted", 0, OFFSET_BEGINNING)])
    got = []
    while True:
        m = c.poll(2.0)
        if m is None:
            break
        if m.error():
            break  # partition EOF
        got.append(m)
    c.close()
    if len(got) < 120 and all(m.key() != b"k0" or m.value() is not None for m in got):
        kept = got
        break
    time.sleep(0.5)
check(kept is not None, "compaction never reduced the topic")
offsets = [m.offset() for m in kept]
check(offsets == sorted(offsets) and len(set(offsets)) == len(offsets), "offsets must stay increasing")
last = {}
for m in kept:
    last[m.key().decode()] = m.value()
for k in range(1, 10):
    check(last.get(f"k{k}") == final[f"k{k}"], f"k{k}: kept {last.get(f'k{k}')} want {final[f'k{k}']}")
check("k0" not in last or last["k0"] is None, "k0's older values must be gone after its tombstone")
check(last["filler"] == final["filler"], "latest filler")
print(f"ok (retention start offset {earliest}, compacted {total} -> {len(kept)})")
