"""KIP-848 (group.protocol=consumer): one confluent-kafka consumer changes its subscription many times in a tight
loop, unsubscribing now and then, as librdkafka's 0045 subscribe_many_updates test does. After each burst its
assignment must match the last subscription (every partition of those topics, or nothing after an unsubscribe).

librdkafka loses the subscription made while it is revoking partitions if the broker answered the heartbeat that
started that revocation before the application's next subscribe/unsubscribe calls were queued; Kafka's
coordinator answers such heartbeats only after its append linger (group.coordinator.append.linger.ms), and so
does Fjord's. Argument: bootstrap [iterations]."""
import sys
import time

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check, die

bootstrap = sys.argv[1]
iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 60
n_topics, parts, window = iterations + 4, 2, 4
run = f"{int(time.time() * 1000) % 1_000_000}"
topics = [f"subupd-{run}-{i}" for i in range(n_topics)]

admin = AdminClient({"bootstrap.servers": bootstrap})
for _, f in admin.create_topics([NewTopic(t, num_partitions=parts, replication_factor=RF) for t in topics],
                                operation_timeout=30, request_timeout=60).items():
    f.result()
deadline = time.time() + 30
while set(topics) - set(admin.list_topics(timeout=10).topics):
    check(time.time() < deadline, "the topics to be visible in metadata")
    time.sleep(0.2)

c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"subupd-{run}", "group.protocol": "consumer",
              "enable.auto.commit": False})


def current():
    return {(tp.topic, tp.partition) for tp in c.assignment()}


checks = 0
for i in range(iterations):
    subscription = topics[i:i + window]
    c.subscribe(subscription)
    unsubscribe = i % 7 == 0
    if unsubscribe:
        c.unsubscribe()
    if i % 5 == 0 or i == iterations - 1:
        expected = set() if unsubscribe else {(t, p) for t in subscription for p in range(parts)}
        until = time.time() + 30
        # Polling serves the rebalance events (confluent-kafka assigns from its rebalance callback).
        while current() != expected:
            if time.time() > until:
                die(f"iteration {i}: after 30 s the assignment is {sorted(current())}, expected "
                    f"{sorted(expected)} (subscription {subscription}, unsubscribed: {unsubscribe})")
            c.poll(0.1)
        checks += 1
c.close()
print(f"ok {iterations} subscription changes, {checks} assignments checked")
