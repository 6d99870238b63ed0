"""Producer/consumer round trip with confluent-kafka: keys, headers, null values, a 1 MB message, every
compression codec, watermarks and offsets_for_times."""
import sys
import time

from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check, consume_all, die

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
topics = ["rt-none", "rt-gzip", "rt-snappy", "rt-lz4", "rt-zstd", "rt-big"]
for name, f in admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=RF) for t in topics]).items():
    f.result()

before = int(time.time() * 1000) - 1
for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
    topic = f"rt-{codec}"
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5, "acks": "all"})
    errors = []
    cb = lambda err, msg: errors.append(err) if err else None
    for i in range(500):
        headers = [("h", f"v{i}".encode()), ("dup", b"1"), ("dup", b"2")]
        value = None if i % 50 == 0 else f"value-{i}-".encode() * 5
        p.produce(topic, key=f"k{i}".encode(), value=value, headers=headers, partition=i % 2, on_delivery=cb)
    check(p.flush(30) == 0, f"{codec}: messages left unflushed")
    check(not errors, f"{codec}: delivery errors {errors[:3]}")
    msgs = consume_all(bootstrap, topic, [0, 1], 500)
    by_part = {0: [], 1: []}
    for m in msgs:
        by_part[m.partition()].append(m)
    for part, ms in by_part.items():
        offsets = [m.offset() for m in ms]
        check(offsets == list(range(250)), f"{codec} p{part}: offsets not dense from 0: {offsets[:5]}...")
        for m in ms:
            i = int(m.key().decode()[1:])
            check(i % 2 == part, f"{codec}: key {i} on wrong partition")
            expect = None if i % 50 == 0 else f"value-{i}-".encode() * 5
            check(m.value() == expect, f"{codec}: value mismatch for {i}")
            check(m.headers() == [("h", f"v{i}".encode()), ("dup", b"1"), ("dup", b"2")], f"{codec}: headers {m.headers()}")
            check(m.timestamp()[1] >= before, f"{codec}: timestamp {m.timestamp()}")

# acks=0 (no response at all) and acks=1 (answered after the write).
for_acks = {}
for acks in ["0", "1"]:
    p = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5})
    for i in range(300):
        p.produce("rt-none", value=f"acks{acks}-{i}".encode(), partition=0)
    check(p.flush(30) == 0, f"acks={acks}: messages left unflushed")
msgs = consume_all(bootstrap, "rt-none", [0], 250 + 600)
vals = [m.value() for m in msgs[250:]]
check(vals == [f"acks0-{i}".encode() for i in range(300)] + [f"acks1-{i}".encode() for i in range(300)],
      "acks=0/1 messages missing or out of order")

# A 1 MB message (just under message.max.bytes with batch overhead).
p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 1048588, "acks": "all"})
big = bytes(range(256)) * 4000  # 1,024,000 bytes
p.produce("rt-big", value=big, partition=0)
check(p.flush(30) == 0, "big message not delivered")
msgs = consume_all(bootstrap, "rt-big", [0], 1)
check(msgs[0].value() == big, "big message corrupted")

# Watermarks and offsets_for_times.
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused", "enable.auto.commit": False})
lo, hi = c.get_watermark_offsets(TopicPartition("rt-none", 0), timeout=10)
check((lo, hi) == (0, 850), f"watermarks {(lo, hi)}")
res = c.offsets_for_times([TopicPartition("rt-none", 0, before)], timeout=10)
check(res[0].offset == 0, f"offsets_for_times(before) = {res[0].offset}")
res = c.offsets_for_times([TopicPartition("rt-none", 0, int(time.time() * 1000) + 3600_000)], timeout=10)
check(res[0].offset == -1, f"offsets_for_times(future) = {res[0].offset}")
c.close()
print("ok")
