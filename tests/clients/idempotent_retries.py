"""confluent-kafka idempotent producer whose connections are cut by a proxy right after produce requests reach the
broker (the test's chaos proxy): the client never sees those responses and retries the batches, and every message
must still land exactly once, in order, per partition.

idempotent_retries.py BOOTSTRAP(proxy) COUNT [READY_FILE PAUSE_EVERY]: with a ready file, the file is created on
the first delivery and the producer pauses 10 ms every PAUSE_EVERY messages, so the test can kill -9 the broker
mid-stream (and restart it behind the same proxy address); the producer's retries must then be de-duplicated by
the state the restarted broker rebuilt from its log."""
import os
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, consume_all

bootstrap, count = sys.argv[1], int(sys.argv[2])
ready_file = sys.argv[3] if len(sys.argv) > 3 else None
pause_every = int(sys.argv[4]) if len(sys.argv) > 4 else 0
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
delivered = [0]


def on_delivery(err, msg):
    if err:
        errors.append(err)
        return
    delivered[0] += 1
    if ready_file and delivered[0] == 1:
        open(ready_file, "w").close()


for i in range(count):
    p.produce("retried", value=f"{i}".encode(), partition=i % 2, on_delivery=on_delivery)
    p.poll(0)
    if pause_every and i % pause_every == 0:
        time.sleep(0.01)
check(p.flush(120) == 0, "unflushed")
check(not errors, f"delivery errors: {errors[:3]}")
msgs = consume_all(bootstrap, "retried", [0, 1], count)
for part in (0, 1):
    vals = [int(m.value()) for m in msgs if m.partition() == part]
    check(vals == list(range(part, count, 2)), f"partition {part}: duplicates, gaps or reordering")
print("ok")
