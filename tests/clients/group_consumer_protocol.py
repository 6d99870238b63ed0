"""KIP-848 (group.protocol=consumer): confluent-kafka members join through ConsumerGroupHeartbeat with
server-side assignment, split a 4-partition topic without overlap, consume, and rebalance when one leaves."""
import sys
import time

from common import check
from group_helpers import Member, create_topic, produce, split_ok, wait_until

bootstrap = sys.argv[1]
topic, group, parts = "kip848", "kip848-group", [0, 1, 2, 3]
create_topic(bootstrap, topic, 4)
# The session and heartbeat timeouts are the broker's under this protocol; the client must not set them.
conf = {"group.protocol": "consumer", "session.timeout.ms": None, "heartbeat.interval.ms": None}

a = Member("kip848-a", bootstrap, group, topic, **conf)
wait_until(lambda: a.assigned == set(parts), 30, "the first member to own every partition", [a])
b = Member("kip848-b", bootstrap, group, topic, **conf)
wait_until(lambda: split_ok([a, b], parts), 30, "the two members to split the partitions", [a, b])

values = [f"k{i}" for i in range(200)]
produce(bootstrap, topic, values, parts)
wait_until(lambda: {v for m in (a, b) for _, _, _, v in m.messages} >= set(values), 30, "200 messages", [a, b])
for m in (a, b):
    for _, p, _, v in m.messages:
        check(p in m.assigned, f"{m.name} read {v} from partition {p} it does not own ({sorted(m.assigned)})")

b.close()
left_at = time.time()
wait_until(lambda: a.assigned == set(parts), 15, "the survivor to own all four partitions", [a])
took = time.time() - left_at
more = [f"l{i}" for i in range(100)]
produce(bootstrap, topic, more, parts)
wait_until(lambda: {v for _, _, _, v in a.messages} >= set(more), 30, "the survivor to read every partition", [a])
a.close()
print(f"ok takeover {took:.2f}s")
