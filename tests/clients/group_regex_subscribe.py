"""KIP-848 regex subscription with confluent-kafka (librdkafka's 0033 regex_subscribe with the consumer protocol):
the broker resolves SubscribedTopicRegex against whole topic names, assigns every match, picks up a matching
topic created later, and the member reads from it."""
import sys
import time

from confluent_kafka import Consumer

from common import check, die
from group_helpers import create_topic, produce

bootstrap = sys.argv[1]
create_topic(bootstrap, "regex-a", 2)
create_topic(bootstrap, "regex-other", 1)
create_topic(bootstrap, "xregex-a", 1)
assigned = set()


def on_assign(c, parts):
    assigned.update((tp.topic, tp.partition) for tp in parts)


def on_revoke(c, parts):
    assigned.difference_update((tp.topic, tp.partition) for tp in parts)


c = Consumer({"bootstrap.servers": bootstrap, "group.id": "regex-group", "group.protocol": "consumer",
              "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
c.subscribe(["^regex-(a|b)$"], on_assign=on_assign, on_revoke=on_revoke)
got = []


def wait(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = c.poll(0.1)
        if m is not None and not m.error():
            got.append((m.topic(), m.value().decode()))
        if cond():
            return time.time()
    die(f"timed out waiting for {what}: assigned {sorted(assigned)}")


wait(lambda: assigned == {("regex-a", 0), ("regex-a", 1)}, 30, "regex-a's partitions only")
created = time.time()
create_topic(bootstrap, "regex-b", 2)
done = wait(lambda: assigned == {("regex-a", 0), ("regex-a", 1), ("regex-b", 0), ("regex-b", 1)}, 30,
            "the new matching topic regex-b")
produce(bootstrap, "regex-b", [f"b{i}" for i in range(20)], [0, 1])
wait(lambda: len([v for t, v in got if t == "regex-b"]) == 20, 30, "the 20 records of regex-b")
c.close()
print(f"ok new topic assigned after {done - created:.2f}s")
