"""Prints every value of one partition from the beginning, one per line, reading until the high watermark."""
import sys

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

bootstrap, topic, partition = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused", "enable.auto.commit": False})
lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
n = 0
misses = 0
while n < hi - lo and misses < 40:
    m = c.poll(0.5)
    if m is None:
        misses += 1
        continue
    if m.error():
        print(f"error {m.error()}", file=sys.stderr)
        sys.exit(1)
    print(f"{m.offset()} {m.value().decode()}")
    n += 1
c.close()
print(f"# hw={hi} read={n}", file=sys.stderr)
sys.exit(0 if n == hi - lo else 1)
