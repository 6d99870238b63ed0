"""Two kafka-python consumers in one group split a 4-partition topic with no overlap; when one closes, the
other owns all four within the session timeout and reads on."""
import sys
import threading
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

from common import check, die
from group_helpers import create_topic

bootstrap = sys.argv[1]
topic, group, parts = "split-kp", "split-kp-group", [0, 1, 2, 3]
SESSION_TIMEOUT = 6.0
create_topic(bootstrap, topic, 4)


class Member(ConsumerRebalanceListener):
    """A KafkaConsumer polled by its own thread, as applications run them; the main thread only observes."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.assigned = set()
        self.events = []
        self.values = []
        self.errors = []
        self.stop = threading.Event()
        self.c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=name,
                               auto_offset_reset="earliest", enable_auto_commit=True,
                               auto_commit_interval_ms=500, session_timeout_ms=6000,
                               heartbeat_interval_ms=500)
        self.c.subscribe([topic], listener=self)
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()

    def on_partitions_revoked(self, revoked):
        with self.lock:
            self.events.append(("revoke", sorted(tp.partition for tp in revoked)))
            self.assigned -= {tp.partition for tp in revoked}

    def on_partitions_assigned(self, assigned):
        with self.lock:
            self.events.append(("assign", sorted(tp.partition for tp in assigned)))
            self.assigned |= {tp.partition for tp in assigned}

    def run(self):
        try:
            while not self.stop.is_set():
                for tp, msgs in self.c.poll(timeout_ms=200).items():
                    with self.lock:
                        for m in msgs:
                            if tp.partition not in self.assigned:
                                self.errors.append(f"message from partition {tp.partition}, owns {sorted(self.assigned)}")
                            self.values.append((tp.partition, m.value.decode()))
            self.c.close()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.errors.append(repr(e))

    def owned(self):
        with self.lock:
            return set(self.assigned)

    def received(self):
        with self.lock:
            return list(self.values)

    def close(self):
        self.stop.set()
        self.thread.join(30)
        check(not self.thread.is_alive(), f"{self.name} did not close within 30s")


def wait_until(cond, timeout, what, members):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for m in members:
            check(not m.errors, f"{m.name}: {m.errors}")
        if cond():
            return
        time.sleep(0.05)
    die(f"timed out after {timeout}s waiting for {what}: " +
        "; ".join(f"{m.name} assigned={sorted(m.owned())} events={m.events}" for m in members))


a = Member("kp-a")
wait_until(lambda: a.owned() == set(parts), 30, "the first member to own every partition", [a])
b = Member("kp-b")
wait_until(lambda: a.owned() and b.owned() and not (a.owned() & b.owned())
           and a.owned() | b.owned() == set(parts), 30, "the two members to split the partitions", [a, b])

# kafka-python 3 is idempotent by default; InitProducerId arrives with issue #5.
p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
values = [f"m{i}" for i in range(400)]
for i, v in enumerate(values):
    p.send(topic, value=v.encode(), partition=i % 4)
p.flush(timeout=30)
wait_until(lambda: len(a.received()) + len(b.received()) >= 400, 30, "400 messages", [a, b])
got = sorted(v for m in (a, b) for _, v in m.received())
check(got == sorted(values), f"messages lost or duplicated: {len(got)} received, {len(set(got))} distinct")
for m in (a, b):
    for part, v in m.received():
        check(int(v[1:]) % 4 == part, f"{v} read from partition {part}")

b.close()
closed_at = time.time()
wait_until(lambda: a.owned() == set(parts), SESSION_TIMEOUT, "the survivor to own all four partitions", [a])
took = time.time() - closed_at
more = [f"n{i}" for i in range(100)]
for i, v in enumerate(more):
    p.send(topic, value=v.encode(), partition=i % 4)
p.flush(timeout=30)
p.close()
wait_until(lambda: {v for _, v in a.received()} >= set(more), 30, "the survivor to read every partition", [a])
a.close()
print(f"ok takeover {took:.2f}s")
