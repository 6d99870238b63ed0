"""Static membership (KIP-345): a member with group.instance.id that restarts within the session timeout gets
its old partitions back without a rebalance; the other member keeps its assignment and sees no revoke, not
even after the old incarnation's session would have expired."""
import sys
import time

from common import check
from group_helpers import Member, create_topic, produce, split_ok, wait_until

bootstrap = sys.argv[1]
topic, group, parts = "static", "static-group", [0, 1, 2, 3]
SESSION_TIMEOUT = 6.0
create_topic(bootstrap, topic, 4)

a = Member("static-a", bootstrap, group, topic, **{"group.instance.id": "instance-a"})
b = Member("static-b", bootstrap, group, topic, **{"group.instance.id": "instance-b"})
wait_until(lambda: split_ok([a, b], parts), 30, "the two static members to split the partitions", [a, b])
# Let any rebalance still in flight settle, then remember what b has seen so far.
settle = time.time() + 2
wait_until(lambda: time.time() >= settle, 30, "a quiet moment", [a, b])
check(split_ok([a, b], parts), f"assignment changed while settling: a={a.assigned} b={b.assigned}")
a_parts, b_parts = set(a.assigned), set(b.assigned)
b_events = len(b.events)

# Restart a: close (a static member sends no LeaveGroup) and come back with the same instance id.
a.close()
restarted_at = time.time()
a2 = Member("static-a2", bootstrap, group, topic, **{"group.instance.id": "instance-a"})
wait_until(lambda: a2.assigned == a_parts, SESSION_TIMEOUT, "the restarted member to get its partitions back",
           [a2, b])
took = time.time() - restarted_at

# Keep both polling past the old incarnation's session timeout: still no rebalance.
values = [f"s{i}" for i in range(40)]
produce(bootstrap, topic, values, parts)
wait_until(lambda: time.time() - restarted_at > SESSION_TIMEOUT + 2, SESSION_TIMEOUT + 10,
           "the session timeout to pass", [a2, b])
check(b.events[b_events:] == [], f"b saw rebalance events: {b.events[b_events:]}")
check(b.assigned == b_parts, f"b's assignment changed from {b_parts} to {b.assigned}")
check([(e[1], set(e[2])) for e in a2.events] == [("assign", a_parts)],
      f"a2 events {a2.events}, expected one assignment of {a_parts}")
wait_until(lambda: len(a2.messages) + len(b.messages) >= 40, 30, "the new messages", [a2, b])
for m in (a2, b):
    for _, p, _, v in m.messages:
        check(p in m.assigned, f"{m.name} read {v} from partition {p} it does not own")
a2.close()
b.close()
print(f"ok rejoined in {took:.2f}s without a rebalance")
