"""Shared helpers for the client scripts the Rust end-to-end tests run."""
import os
import sys
import time

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING


# The replication factor of the topics the scripts create: 1 against one broker, 3 when a test runs a script
# against a three-broker cluster (FJORD_TEST_RF=3).
RF = int(os.environ.get("FJORD_TEST_RF", "1"))


def die(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        die(msg)


def consume_all(bootstrap, topic, partitions, expected, timeout=60.0, **extra):
    """Reads `expected` messages from the start of `partitions` with an assigned (group-less) consumer."""
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "e2e-unused",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.message.max.bytes": 2 * 1024 * 1024,
    }
    conf.update(extra)
    c = Consumer(conf)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out = []
    deadline = time.time() + timeout
    while len(out) < expected and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            die(f"consumer error: {m.error()}")
        out.append(m)
    c.close()
    check(len(out) == expected, f"expected {expected} messages from {topic}, got {len(out)}")
    return out
