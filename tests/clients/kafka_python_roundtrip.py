"""kafka-python round trip: auto-created topic, keys, headers, values read back in order."""
import sys

from kafka import KafkaProducer, KafkaConsumer, TopicPartition

bootstrap = sys.argv[1]
topic = "kp-roundtrip"
# kafka-python 3 is idempotent by default: this also exercises InitProducerId and sequence checks.
p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
futures = [p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("n", str(i).encode())], partition=0)
           for i in range(1000)]
p.flush(timeout=30)
offsets = [f.get(timeout=10).offset for f in futures]
assert offsets == list(range(1000)), f"offsets {offsets[:5]}"
p.close()

c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=10000,
                  auto_offset_reset="earliest")
tp = TopicPartition(topic, 0)
c.assign([tp])
c.seek_to_beginning(tp)
got = []
for m in c:
    got.append(m)
    if len(got) == 1000:
        break
assert len(got) == 1000, f"got {len(got)}"
for i, m in enumerate(got):
    assert m.offset == i and m.key == f"k{i}".encode() and m.value == f"v{i}".encode(), m
    assert m.headers == [("n", str(i).encode())], m.headers
assert c.end_offsets([tp])[tp] == 1000
c.close()
print("ok")
