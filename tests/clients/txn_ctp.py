"""Exactly-once consume-transform-produce (the standard EOS loop) around a broker crash.

txn_ctp.py BOOTSTRAP seed N: creates `ctp-in` and `ctp-out` (2 partitions each) and writes "0".."N-1" to
`ctp-in` (value i to partition i % 2) with an idempotent producer.

txn_ctp.py BOOTSTRAP run READY_FILE [SECONDS]: consumer in group `ctp` (read_committed, no auto commit) and
transactional producer `ctp-app`. Per batch of up to 10 inputs: begin, produce "out-<v>" to the same partition of
`ctp-out`, send the consumer positions to the transaction, commit. Touches READY_FILE after the first commit and
sleeps a little per batch, so a test can kill the broker mid-stream. On an abortable error it aborts and rewinds the
consumer to the group's committed offsets. Exits 0 once the committed offsets reach the end of `ctp-in`; fails
after SECONDS (default 100).

txn_ctp.py BOOTSTRAP verify N: a read_committed consumer of `ctp-out` gets exactly "out-<i>" for every i < N,
once each, in input order per partition, and the group's committed offsets are the end of `ctp-in`."""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING

from common import check, die
from txn_helpers import RC, create_topic, read_exactly

bootstrap, mode = sys.argv[1], sys.argv[2]
IN, OUT, GROUP, PARTS = "ctp-in", "ctp-out", "ctp", [0, 1]


def group_committed(consumer):
    res = consumer.committed([TopicPartition(IN, p) for p in PARTS], timeout=15)
    return {tp.partition: tp.offset for tp in res}


if mode == "seed":
    n = int(sys.argv[3])
    create_topic(bootstrap, IN, len(PARTS))
    create_topic(bootstrap, OUT, len(PARTS))
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors = []
    for i in range(n):
        p.produce(IN, value=str(i).encode(), partition=i % 2,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    check(p.flush(30) == 0, "seed: unflushed")
    check(not errors, f"seed: delivery errors {errors[:3]}")
    print("ok seeded")

elif mode == "run":
    ready_file = sys.argv[3]
    deadline = time.time() + (float(sys.argv[4]) if len(sys.argv) > 4 else 100.0)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ctp-app", "linger.ms": 5,
                         "transaction.timeout.ms": 10000})
    # Before consuming: fences a previous instance and aborts (or completes) its transaction.
    producer.init_transactions(30)
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": GROUP, "isolation.level": RC, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
    })
    ends = {}
    for p in PARTS:
        _, hi = consumer.get_watermark_offsets(TopicPartition(IN, p), timeout=15)
        ends[p] = hi
    consumer.subscribe([IN])

    def rewind():
        """Back to the group's committed offsets, so the aborted batch is processed again."""
        for tp in consumer.committed(consumer.assignment(), timeout=15):
            tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            try:
                consumer.seek(tp)
            except KafkaException as e:  # not fetching yet: it will start from the committed offset anyway
                print(f"seek {tp}: {e}", flush=True)

    txns = aborts = 0
    while True:
        check(time.time() < deadline, f"not done in time: {txns} transactions committed, {aborts} aborted")
        msgs = consumer.consume(num_messages=10, timeout=0.5)
        for m in msgs:
            if m.error():
                die(f"consumer error: {m.error()}")
        if not msgs:
            try:
                done = group_committed(consumer)
            except KafkaException as e:  # e.g. the coordinator is still loading after a restart
                print(f"committed offsets not available yet: {e}", flush=True)
                continue
            if all(done.get(p, -1) >= ends[p] for p in PARTS):
                break
            continue
        try:
            producer.begin_transaction()
            for m in msgs:
                producer.produce(OUT, value=f"out-{m.value().decode()}".encode(), partition=m.partition())
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            for attempt in range(5):
                try:
                    producer.commit_transaction(30)
                    break
                except KafkaException as e:
                    if not e.args[0].retriable() or attempt == 4:
                        raise
                    print(f"commit retry after {e.args[0]}", flush=True)
        except KafkaException as e:
            err = e.args[0]
            if not err.txn_requires_abort():
                die(f"transaction failed with a non-abortable error: {err} (fatal={err.fatal()})")
            print(f"aborting after {err}", flush=True)
            producer.abort_transaction(30)
            rewind()
            aborts += 1
            continue
        txns += 1
        print(f"committed txn {txns}: {len(msgs)} inputs, positions "
              f"{sorted((tp.partition, tp.offset) for tp in positions)}", flush=True)
        if txns == 1:
            open(ready_file, "w").close()
        time.sleep(0.1)
    consumer.close()
    print(f"ok {txns} transactions committed, {aborts} aborted")

elif mode == "verify":
    n = int(sys.argv[3])
    want = {p: [f"out-{i}" for i in range(p, n, 2)] for p in PARTS}
    read_exactly(bootstrap, OUT, PARTS, RC, want, "ctp-out")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "isolation.level": RC,
                  "enable.auto.commit": False})
    got = group_committed(c)
    c.close()
    check(got == {p: len(want[p]) for p in PARTS}, f"group {GROUP} committed {got}, expected the ends of {IN}")
    print("ok")

else:
    die(f"unknown mode {mode}")
