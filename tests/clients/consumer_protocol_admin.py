"""KIP-848: two group.protocol=consumer members split a topic; the admin client describes the group
(ConsumerGroupDescribe) and lists it (ListGroups v5) with its type and state."""
import sys
import time

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupType
from confluent_kafka.admin import AdminClient, NewTopic

from common import check

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
admin.create_topics([NewTopic("k848-admin", num_partitions=4, replication_factor=1)])["k848-admin"].result()


def member():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "k848-admin-group", "group.protocol": "consumer",
                  "auto.offset.reset": "earliest"})
    c.subscribe(["k848-admin"])
    return c


c1, c2 = member(), member()
deadline = time.time() + 30
while time.time() < deadline:
    c1.poll(0.2)
    c2.poll(0.2)
    a1 = {p.partition for p in c1.assignment()}
    a2 = {p.partition for p in c2.assignment()}
    if a1 and a2 and a1 | a2 == {0, 1, 2, 3}:
        break
check(a1 and a2 and not (a1 & a2) and a1 | a2 == {0, 1, 2, 3}, f"split: {a1} {a2}")

d = admin.describe_consumer_groups(["k848-admin-group"])["k848-admin-group"].result()
check(d.type == ConsumerGroupType.CONSUMER, f"type {d.type}")
check(d.state == ConsumerGroupState.STABLE, f"state {d.state}")
described = sorted(sorted(tp.partition for tp in m.assignment.topic_partitions) for m in d.members)
check(described == sorted([sorted(a1), sorted(a2)]), f"described assignments {described} vs {a1} {a2}")

listed = {g.group_id: g for g in admin.list_consumer_groups().result().valid}
check("k848-admin-group" in listed, f"not listed: {list(listed)}")
check(listed["k848-admin-group"].type == ConsumerGroupType.CONSUMER, "listed type")
c1.close()
c2.close()
print("ok")
