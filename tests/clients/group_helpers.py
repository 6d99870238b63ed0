"""Helpers for the consumer-group scripts: topics, producing known messages, group members that track their
assignment through rebalance callbacks, and bounded waits that keep every member polling."""
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check, die


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _, f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=RF)],
                                    operation_timeout=10, request_timeout=15).items():
        f.result()


def produce(bootstrap, topic, values, partitions):
    """Sends `values` round-robin over `partitions` (acks=all); returns {value: (partition, offset)}."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    where, errors = {}, []

    def cb(err, msg):
        if err:
            errors.append(err)
        else:
            where[msg.value().decode()] = (msg.partition(), msg.offset())

    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=partitions[i % len(partitions)], on_delivery=cb)
    check(p.flush(30) == 0, "messages left unflushed")
    check(not errors, f"delivery errors: {errors[:3]}")
    return where


def committed(bootstrap, group, topic, partitions, timeout=10):
    """The group's committed offsets (OffsetFetch) as {partition: offset or None}; never joins the group."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        res = c.committed([TopicPartition(topic, p) for p in partitions], timeout=timeout)
    finally:
        c.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in res}


class Member:
    """A confluent-kafka group member that records its assignment (incremental or eager), its rebalance events
    and the messages it receives."""

    def __init__(self, name, bootstrap, group, topic, **conf):
        self.name = name
        self.topic = topic
        self.assigned = set()
        self.events = []  # (time, "assign" | "revoke" | "lost", frozenset of partitions)
        self.messages = []  # (time, partition, offset, value)
        base = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 500,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "client.id": name,
        }
        base.update(conf)
        self.consumer = Consumer({k: v for k, v in base.items() if v is not None})
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        self.closed = False

    def _on_assign(self, consumer, partitions):
        ps = frozenset(tp.partition for tp in partitions)
        self.events.append((time.time(), "assign", ps))
        self.assigned |= ps

    def _on_revoke(self, consumer, partitions):
        ps = frozenset(tp.partition for tp in partitions)
        self.events.append((time.time(), "revoke", ps))
        self.assigned -= ps

    def _on_lost(self, consumer, partitions):
        ps = frozenset(tp.partition for tp in partitions)
        self.events.append((time.time(), "lost", ps))
        self.assigned -= ps

    def poll(self, timeout=0.05):
        if self.closed:
            return None
        m = self.consumer.poll(timeout)
        if m is None:
            return None
        if m.error():
            # Informational events (partition EOF) are not failures.
            if m.error().code() == KafkaError._PARTITION_EOF:
                return None
            die(f"{self.name}: consumer error {m.error()}")
        self.messages.append((time.time(), m.partition(), m.offset(), m.value().decode()))
        return m

    def close(self):
        if not self.closed:
            self.consumer.close()
            self.closed = True


def wait_until(cond, timeout, what, members=()):
    """Polls `members` until `cond()` holds; fails with `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in members:
            m.poll(0.05)
        if cond():
            return
        if not members:
            time.sleep(0.05)
    die(f"timed out after {timeout}s waiting for {what}; state: " +
        "; ".join(f"{m.name} assigned={sorted(m.assigned)} events={[(e[1], sorted(e[2])) for e in m.events]}"
                  for m in members))


def split_ok(members, partitions):
    """Every member owns something, nobody shares a partition, and together they own them all."""
    sets = [m.assigned for m in members]
    union = set().union(*sets)
    return all(sets) and sum(len(s) for s in sets) == len(union) and union == set(partitions)
