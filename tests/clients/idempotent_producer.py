"""confluent-kafka with enable.idempotence=true: every message lands exactly once and in order per partition."""
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check, consume_all

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic("idem", num_partitions=2, replication_factor=RF)])["idem"].result()
p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 2,
              "max.in.flight.requests.per.connection": 5})
errors = []
for i in range(5000):
    p.produce("idem", value=f"{i}".encode(), partition=i % 2,
              on_delivery=lambda err, msg: errors.append(err) if err else None)
    p.poll(0)
check(p.flush(60) == 0, "unflushed")
check(not errors, f"delivery errors: {errors[:3]}")
msgs = consume_all(bootstrap, "idem", [0, 1], 5000)
for part in (0, 1):
    vals = [int(m.value()) for m in msgs if m.partition() == part]
    check(vals == list(range(part, 5000, 2)), f"partition {part}: duplicates, gaps or reordering")
print("ok")
