"""Committed offsets across a broker crash, in two phases around a kill -9 and restart of the broker.

phase1 BOOTSTRAP: creates `resume` (2 partitions, 100 messages), consumes 60 of them in group `resume-group`,
commits synchronously and then dies without closing (like a crashed consumer). Prints the committed offsets as
`committed P=O P=O` and the processed messages as `processed P/O ...`.

phase2 BOOTSTRAP P=O P=O: after the restart, OffsetFetch returns exactly those offsets, and a new member of the
group resumes exactly there: it receives every message from the committed offset on and none before it."""
import os
import sys
import time

from confluent_kafka import Consumer

from common import check, die
from group_helpers import committed, create_topic, produce

bootstrap, phase = sys.argv[1], sys.argv[2]
topic, group, parts = "resume", "resume-group", [0, 1]
conf = {
    "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
    "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    "max.poll.interval.ms": 10000,
}

if phase == "phase1":
    create_topic(bootstrap, topic, 2)
    produce(bootstrap, topic, [f"v{i}" for i in range(100)], parts)
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    deadline = time.time() + 60
    while len(got) < 60 and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            die(f"consumer error {m.error()}")
        got.append((m.partition(), m.offset()))
    check(len(got) == 60, f"consumed {len(got)} of 60")
    # Pause so no more messages are fetched past what was processed, then commit the positions.
    res = c.commit(asynchronous=False)
    positions = {tp.partition: tp.offset for tp in res if tp.offset >= 0}
    expect = {p: 1 + max((o for pp, o in got if pp == p), default=-1) for p in parts}
    expect = {p: o for p, o in expect.items() if o > 0}
    check(positions == expect, f"commit returned {positions}, processed up to {expect}")
    check(committed(bootstrap, group, topic, parts) == {p: expect.get(p) for p in parts},
          "OffsetFetch does not return what was committed")
    print("committed " + " ".join(f"{p}={o}" for p, o in sorted(expect.items())))
    print("processed " + " ".join(f"{p}/{o}" for p, o in got))
    sys.stdout.flush()
    os._exit(0)  # no close, no LeaveGroup: the member just disappears

elif phase == "phase2":
    want = {int(k): int(v) for k, v in (a.split("=") for a in sys.argv[3:])}
    now = committed(bootstrap, group, topic, parts)
    check(now == {p: want.get(p) for p in parts}, f"after restart OffsetFetch says {now}, expected {want}")
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    remaining = sum(50 - want.get(p, 0) for p in parts)
    # The crashed member is still in the group until its session times out: allow for that.
    deadline = time.time() + 60
    while len(got) < remaining and time.time() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            die(f"consumer error {m.error()}")
        got.append((m.partition(), m.offset()))
    # Anything more would be a redelivery.
    end = time.time() + 2
    while time.time() < end:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append((m.partition(), m.offset()))
    c.close()
    for p in parts:
        offsets = [o for pp, o in got if pp == p]
        check(offsets == list(range(want.get(p, 0), 50)),
              f"partition {p}: resumed with offsets {offsets[:5]}...{offsets[-3:]} ({len(offsets)}), "
              f"expected {want.get(p, 0)}..49")
    print(f"ok resumed {len(got)} messages")
else:
    die(f"unknown phase {phase}")
