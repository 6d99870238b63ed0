"""Helpers for the transaction scripts: topics with configs, plain producers, and readers that keep per-partition
lists of the values they saw at either isolation level. Values may carry padding after a `|`; readers keep only
the part before it."""
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check, die

RC, RU = "read_committed", "read_uncommitted"


def create_topic(bootstrap, name, partitions, config=None):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = NewTopic(name, num_partitions=partitions, replication_factor=RF, config=config or {})
    for _, f in admin.create_topics([topic], operation_timeout=10, request_timeout=15).items():
        f.result()


def produce_plain(bootstrap, topic, pairs, pad=""):
    """Non-transactional acks=all writes of (partition, value) pairs, flushed before returning."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    errors = []
    for part, v in pairs:
        p.produce(topic, value=(v + pad).encode(), partition=part,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    check(p.flush(30) == 0, "plain messages left unflushed")
    check(not errors, f"plain delivery errors: {errors[:3]}")


def name(value):
    return value.decode().split("|", 1)[0]


class Reader:
    """A group-less consumer assigned to `partitions` of `topic` from the beginning at `isolation` level."""

    def __init__(self, bootstrap, topic, partitions, isolation):
        self.isolation = isolation
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": "txn-e2e-unused", "enable.auto.commit": False,
            "enable.partition.eof": False, "isolation.level": isolation, "fetch.wait.max.ms": 100,
        })
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.values = {p: [] for p in partitions}

    def count(self):
        return sum(len(v) for v in self.values.values())

    def poll_for(self, seconds, until=None):
        """Polls for up to `seconds`, or until `until()` holds; returns whether it held (False without one)."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if until is not None and until():
                return True
            m = self.c.poll(0.1)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                die(f"{self.isolation} consumer error: {m.error()}")
            self.values[m.partition()].append(name(m.value()))
        return until is not None and until()

    def expect(self, want, what, timeout=30.0, settle=1.5):
        """Waits until as many values as `want` holds arrived, polls `settle` more seconds for extras, and checks
        the per-partition lists equal `want` exactly."""
        total = sum(len(v) for v in want.values())
        self.poll_for(timeout, until=lambda: self.count() >= total)
        self.poll_for(settle)
        for p in sorted(want):
            got = self.values[p]
            if got != want[p]:
                extra = [v for v in got if v not in want[p]]
                missing = [v for v in want[p] if v not in got]
                die(f"{what}: {self.isolation} partition {p} read {len(got)} values, expected {len(want[p])}; "
                    f"unexpected {extra[:8]}, missing {missing[:8]}, got tail {got[-6:]}")

    def close(self):
        self.c.close()


def read_exactly(bootstrap, topic, partitions, isolation, want, what, timeout=60.0):
    """A fresh reader from the beginning must get exactly `want` ({partition: [values]})."""
    r = Reader(bootstrap, topic, partitions, isolation)
    try:
        r.expect(want, what, timeout=timeout, settle=2.0)
    finally:
        r.close()
