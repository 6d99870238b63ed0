"""A KIP-848 member (group.protocol=consumer) keeps its membership across a kill -9 of the broker.

group_kip848_restart.py BOOTSTRAP FLAG_FILE

Creates `k848r` (4 partitions, 100 messages) and `k848r-aux` (1 partition); one member subscribes to both, then
to `k848r` alone (so the group epoch has moved past what a fresh join gives), consumes the 100 messages and
commits them. It prints `ready MEMBER_ID` and keeps polling until FLAG_FILE exists: meanwhile the test kills the
broker with SIGKILL and restarts it on the same data directory and port. Then 100 more messages are produced and
consumed, and the member stays until FLAG_FILE.done exists (the test describes the group). Checked: no rebalance callback at all (no revoke, no lost partitions, no new assignment) after the
restart, the same member id, and every message read exactly once (nothing lost, nothing read again)."""
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError

from common import check, die
from group_helpers import create_topic, produce

bootstrap, flag = sys.argv[1], sys.argv[2]
topic, aux, group = "k848r", "k848r-aux", "k848r-group"
parts = [0, 1, 2, 3]
create_topic(bootstrap, topic, 4)
create_topic(bootstrap, aux, 1)
first = produce(bootstrap, topic, [f"a{i}" for i in range(100)], parts)

events = []  # (kind, frozenset of (topic, partition))
assigned = set()
seen = []  # (partition, offset, value)
errors = []


def on_assign(c, tps):
    ps = frozenset((tp.topic, tp.partition) for tp in tps)
    events.append(("assign", ps))
    assigned.update(ps)


def on_revoke(c, tps):
    ps = frozenset((tp.topic, tp.partition) for tp in tps)
    events.append(("revoke", ps))
    assigned.difference_update(ps)


def on_lost(c, tps):
    ps = frozenset((tp.topic, tp.partition) for tp in tps)
    events.append(("lost", ps))
    assigned.difference_update(ps)


c = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
    "auto.offset.reset": "earliest", "enable.auto.commit": False, "client.id": "k848r",
    # Transport errors while the broker is down are expected; they are recorded, not fatal.
    "error_cb": lambda e: errors.append(str(e)),
    "reconnect.backoff.max.ms": 1000,
})


def poll(timeout=0.1):
    m = c.poll(timeout)
    if m is None:
        return
    if m.error():
        if m.error().code() == KafkaError._PARTITION_EOF:
            return
        die(f"consumer error {m.error()}")
    check(m.topic() == topic, f"a message from {m.topic()}")
    seen.append((m.partition(), m.offset(), m.value().decode()))


def wait_until(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        poll()
        if cond():
            return
    die(f"timed out after {timeout}s waiting for {what}; assigned={sorted(assigned)} events={events} "
        f"read={len(seen)} errors={errors[-3:]}")


c.subscribe([topic, aux], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
everything = {(topic, p) for p in parts} | {(aux, 0)}
wait_until(lambda: assigned == everything, 60, "the member to own both topics")
c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
wait_until(lambda: assigned == {(topic, p) for p in parts} and len(seen) >= 100, 60,
           "the member to give up the aux topic and read 100 messages")
committed = c.commit(asynchronous=False)
check(sorted((tp.partition, tp.offset) for tp in committed)
      == sorted((p, 1 + max(o for pp, o in first.values() if pp == p)) for p in parts),
      f"commit returned {committed}")
member = c.memberid()
check(member, "no member id")
print(f"ready {member}", flush=True)
mark = len(events)

deadline = time.time() + 120
while not os.path.exists(flag):
    if time.time() > deadline:
        die("the test never restarted the broker")
    poll()

second = produce(bootstrap, topic, [f"b{i}" for i in range(100)], parts)
wait_until(lambda: len(seen) >= 200, 90, "the 100 messages produced after the restart")
# Anything more would be a message read twice.
end = time.time() + 2
while time.time() < end:
    poll()
c.commit(asynchronous=False)
# The test looks at the group (the member's epoch) before this member leaves it.
print("consumed", flush=True)
deadline = time.time() + 60
while not os.path.exists(flag + ".done"):
    if time.time() > deadline:
        die("the test never looked at the group")
    poll()

check(events[mark:] == [], f"rebalance callbacks after the restart: {events[mark:]}")
check(c.memberid() == member, f"member id changed from {member} to {c.memberid()}")
where = {**first, **second}
got = sorted((p, o) for p, o, _ in seen)
check(got == sorted(where.values()), f"read {len(got)} messages, {len(set(got))} distinct, of {len(where)}")
for p, o, v in seen:
    check(where[v] == (p, o), f"{v} read at {p}/{o}, written at {where[v]}")
c.close()
print(f"ok member {member} errors-while-down {len(errors)}")
