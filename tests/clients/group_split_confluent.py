"""Two confluent-kafka consumers in one group split a 4-partition topic with no overlap and each reads only
its own partitions; when one closes, the other owns all four within the session timeout and reads on."""
import sys
import time

from common import check
from group_helpers import Member, create_topic, produce, split_ok, wait_until

bootstrap = sys.argv[1]
topic, group, parts = "split-ck", "split-ck-group", [0, 1, 2, 3]
SESSION_TIMEOUT = 6.0
create_topic(bootstrap, topic, 4)

a = Member("a", bootstrap, group, topic)
wait_until(lambda: a.assigned == set(parts), 30, "the first member to own every partition", [a])
b = Member("b", bootstrap, group, topic)
wait_until(lambda: split_ok([a, b], parts), 30, "the two members to split the partitions", [a, b])
check(not (a.assigned & b.assigned), f"overlap: a={a.assigned} b={b.assigned}")

# Messages produced once the split is stable go to exactly one member: the owner of their partition.
values = [f"m{i}" for i in range(400)]
where = produce(bootstrap, topic, values, parts)
wait_until(lambda: len(a.messages) + len(b.messages) >= 400, 30, "400 messages", [a, b])
for m in (a, b):
    for _, p, _, v in m.messages:
        check(p in m.assigned, f"{m.name} got {v} from partition {p} it does not own ({sorted(m.assigned)})")
        check(where[v][0] == p, f"{v} came from partition {p}, was written to {where[v][0]}")
got = sorted(v for m in (a, b) for _, _, _, v in m.messages)
check(got == sorted(values), f"messages lost or duplicated: {len(got)} received, {len(set(got))} distinct")

# b leaves; a must own everything well within the session timeout.
b.close()
closed_at = time.time()
wait_until(lambda: a.assigned == set(parts), SESSION_TIMEOUT, "the survivor to own all four partitions", [a])
took = time.time() - closed_at
check(took <= SESSION_TIMEOUT, f"takeover took {took:.1f}s")
more = [f"n{i}" for i in range(100)]
produce(bootstrap, topic, more, parts)
wait_until(lambda: {v for _, _, _, v in a.messages} >= set(more), 30, "the survivor to read every partition", [a])
a.close()
print(f"ok takeover {took:.2f}s")
