"""Client-side cooperative-sticky assignment (incremental rebalancing) works unchanged against the classic
group protocol: two confluent-kafka members split four partitions; when one leaves, the other owns all."""
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic("coop", num_partitions=4, replication_factor=RF)])["coop"].result()


def member():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "coop-group",
                  "partition.assignment.strategy": "cooperative-sticky", "auto.offset.reset": "earliest",
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    c.subscribe(["coop"])
    return c


def owned(c):
    return {p.partition for p in c.assignment()}


c1 = member()
deadline = time.time() + 30
while time.time() < deadline and len(owned(c1)) < 4:
    c1.poll(0.2)
check(owned(c1) == {0, 1, 2, 3}, f"first member owns {owned(c1)}")
c2 = member()
deadline = time.time() + 30
while time.time() < deadline:
    c1.poll(0.2)
    c2.poll(0.2)
    if owned(c1) and owned(c2) and owned(c1) | owned(c2) == {0, 1, 2, 3} and not owned(c1) & owned(c2):
        break
check(owned(c1) and owned(c2) and not owned(c1) & owned(c2) and owned(c1) | owned(c2) == {0, 1, 2, 3},
      f"split {owned(c1)} {owned(c2)}")
c2.close()
deadline = time.time() + 30
while time.time() < deadline and len(owned(c1)) < 4:
    c1.poll(0.2)
check(owned(c1) == {0, 1, 2, 3}, f"survivor owns {owned(c1)}")
c1.close()
print("ok")
