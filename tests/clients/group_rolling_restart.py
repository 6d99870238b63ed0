"""Rolling restart: three consumers process a stream while a producer keeps producing; each consumer is
restarted in turn (closed, then replaced by a new Consumer). Checks: every message is processed at least once;
the group's committed offsets, sampled all along with OffsetFetch, never go backwards; a message is processed
twice only when its partition changed owner before its offset was committed (the at-least-once window), and
never by two owners at once."""
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from common import check, die
from group_helpers import create_topic

bootstrap = sys.argv[1]
topic, group = "rolling", "rolling-group"
PARTS = list(range(6))
COMMIT_EVERY = 10  # the at-least-once window: messages processed since the last commit
RATE = 150  # messages per second
DURATION = 24.0  # seconds of producing
create_topic(bootstrap, topic, len(PARTS))

lock = threading.Lock()
processed = []  # (time, worker, partition, offset, value)
ownership = []  # (time, worker, "gain" | "lose", partition)
failures = []


class Worker:
    """One consumer instance: processes messages, commits synchronously every COMMIT_EVERY messages and before
    giving partitions up."""

    def __init__(self, name):
        self.name = name
        self.stop = threading.Event()
        self.since_commit = 0
        self.c = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 20000,
        })
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()

    def commit(self):
        if self.since_commit == 0:
            return
        try:
            self.c.commit(asynchronous=False)
            self.since_commit = 0
        except KafkaException as e:
            # A commit can fail during a rebalance; what it covered is redelivered (the window).
            print(f"{self.name}: commit failed: {e}", file=sys.stderr)

    def on_assign(self, consumer, partitions):
        with lock:
            for tp in partitions:
                ownership.append((time.time(), self.name, "gain", tp.partition))

    def on_revoke(self, consumer, partitions):
        self.commit()
        with lock:
            for tp in partitions:
                ownership.append((time.time(), self.name, "lose", tp.partition))

    def run(self):
        try:
            self.c.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                             on_lost=self.on_revoke)
            while not self.stop.is_set():
                m = self.c.poll(0.1)
                if m is None:
                    continue
                if m.error():
                    raise RuntimeError(f"consumer error {m.error()}")
                with lock:
                    processed.append((time.time(), self.name, m.partition(), m.offset(), m.value().decode()))
                self.since_commit += 1
                if self.since_commit >= COMMIT_EVERY:
                    self.commit()
            # close() revokes (on_revoke commits) and leaves the group.
            self.c.close()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append(f"{self.name}: {e!r}")

    def shutdown(self):
        self.stop.set()
        self.thread.join(30)
        check(not self.thread.is_alive(), f"{self.name} did not close within 30s")


produced = {}  # value -> (partition, offset)
produce_done = threading.Event()


def producer():
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})

    def cb(err, msg):
        if err:
            failures.append(f"delivery: {err}")
        else:
            produced[msg.value().decode()] = (msg.partition(), msg.offset())

    n = int(RATE * DURATION)
    start = time.time()
    for i in range(n):
        p.produce(topic, value=f"v{i}".encode(), partition=i % len(PARTS), on_delivery=cb)
        p.poll(0)
        delay = start + (i + 1) / RATE - time.time()
        if delay > 0:
            time.sleep(delay)
    if p.flush(30) != 0:
        failures.append("producer: messages left unflushed")
    produce_done.set()


samples = {p: [] for p in PARTS}  # partition -> [(time, committed offset)]
sampling = threading.Event()


def sampler():
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        while not sampling.is_set():
            try:
                res = c.committed([TopicPartition(topic, p) for p in PARTS], timeout=5)
            except KafkaException as e:
                failures.append(f"sampler: OffsetFetch failed: {e}")
                return
            now = time.time()
            for tp in res:
                if tp.error:
                    failures.append(f"sampler: {tp}")
                elif tp.offset >= 0:
                    samples[tp.partition].append((now, tp.offset))
            time.sleep(0.1)
    finally:
        c.close()


threads = [threading.Thread(target=producer, daemon=True), threading.Thread(target=sampler, daemon=True)]
workers = {n: Worker(n) for n in ("w0", "w1", "w2")}
for t in threads:
    t.start()

# Restart each worker in turn while the stream flows.
for name in ("w0", "w1", "w2"):
    time.sleep(DURATION / 4)
    check(not failures, f"failures: {failures}")
    workers[name].shutdown()
    workers[name] = Worker(name + "'")
    print(f"restarted {name}", file=sys.stderr)

produce_done.wait(DURATION + 60)
check(produce_done.is_set(), "producer did not finish")
expected = set(produced)
check(len(expected) == int(RATE * DURATION), f"only {len(expected)} messages were acknowledged")
deadline = time.time() + 60
while time.time() < deadline:
    with lock:
        done = expected <= {v for _, _, _, _, v in processed}
    if done or failures:
        break
    time.sleep(0.2)
for w in workers.values():
    w.shutdown()
time.sleep(0.5)
sampling.set()
threads[1].join(15)
check(not failures, f"failures: {failures}")

# 1. Every message processed at least once, from where it was written.
seen = {}
for t, w, p, o, v in processed:
    check(produced.get(v) == (p, o), f"{v} processed at {p}/{o}, written at {produced.get(v)}")
    seen.setdefault((p, o), []).append((t, w))
missing = expected - {v for _, _, _, _, v in processed}
check(not missing, f"{len(missing)} messages never processed, e.g. {sorted(missing)[:5]}")

# 2. Committed offsets never go backwards, and end at the log end.
for p, s in samples.items():
    for (t0, o0), (t1, o1) in zip(s, s[1:]):
        check(o1 >= o0, f"partition {p}: committed offset went back from {o0} to {o1} at {t1:.3f}")
    check(s, f"partition {p}: no committed offset sampled")
ends = {p: 1 + max(o for (pp, o) in produced.values() if pp == p) for p in PARTS}
final = {p: s[-1][1] for p, s in samples.items()}
check(final == ends, f"final committed offsets {final} != log ends {ends}")


# 3. Duplicates only in the at-least-once window: the second processing comes after the first worker lost
#    the partition (so never two owners at once), and at most COMMIT_EVERY offsets per lost ownership.
def lost_after(worker, partition, t):
    for (te, w, kind, pp) in ownership:
        if w == worker and pp == partition and kind == "lose" and te >= t:
            return te
    return None


window = {}
dups = 0
for (p, o), times in seen.items():
    times.sort()
    for (t0, w0), (t1, w1) in zip(times, times[1:]):
        dups += 1
        lost = lost_after(w0, p, t0)
        check(lost is not None and lost <= t1,
              f"{p}/{o} processed by {w0} at {t0:.3f} and again by {w1} at {t1:.3f} while {w0} still owned it")
        window.setdefault((w0, p, lost), []).append(o)
for (w, p, _), offsets in window.items():
    check(len(offsets) <= COMMIT_EVERY,
          f"{len(offsets)} messages of partition {p} redelivered after {w} lost it: {sorted(offsets)[:20]}")
print(f"ok {len(expected)} messages, {len(processed)} processed, {dups} duplicates")
