"""confluent-kafka idempotent producer whose connections are cut by a proxy right after produce requests reach the
broker (the test's chaos proxy): the client never sees those responses and retries the batches, and every message
must still land exactly once, in order, per partition.

idempotent_retries.py BOOTSTRAP(proxy) COUNT"""
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, consume_all

bootstrap, count = sys.argv[1], int(sys.argv[2])
admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic("retried", num_partitions=2, replication_factor=1)])["retried"].result(30)
p = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 50,
    "max.in.flight.requests.per.connection": 5,
    "reconnect.backoff.ms": 10,
    "retry.backoff.ms": 10,
    "message.timeout.ms": 120000,
})
errors = []
for i in range(count):
    p.produce("retried", value=f"{i}".encode(), partition=i % 2,
              on_delivery=lambda err, msg: errors.append(err) if err else None)
    p.poll(0)
check(p.flush(120) == 0, "unflushed")
check(not errors, f"delivery errors: {errors[:3]}")
msgs = consume_all(bootstrap, "retried", [0, 1], count)
for part in (0, 1):
    vals = [int(m.value()) for m in msgs if m.partition() == part]
    check(vals == list(range(part, count, 2)), f"partition {part}: duplicates, gaps or reordering")
print("ok")
