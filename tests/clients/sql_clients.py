"""Third-party client side of the SQL tests (confluent-kafka).

  produce BOOTSTRAP TOPIC FIRST LAST       JSON records id-i -> {"item": "w<i>", "qty": i, "price": 1.5}, keys as strings
  produce-txn BOOTSTRAP TOPIC FIRST LAST   the same, in one committed transaction (the last offset is its marker)
  read BOOTSTRAP TOPIC EXPECTED            every record of every partition, once EXPECTED have arrived (60 s at most):
                                           one line per record, `key<TAB>value`, sorted
  committed BOOTSTRAP GROUP TOPIC          the sum of the group's committed offsets over the topic's partitions
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def partitions(c, topic):
    md = c.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return []
    return sorted(t.partitions.keys())


def main():
    cmd, bootstrap = sys.argv[1], sys.argv[2]
    if cmd == "produce":
        topic, first, last = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        errors = []
        for i in range(first, last):
            p.produce(topic, key=f"id-{i}".encode(),
                      value=json.dumps({"item": f"w{i}", "qty": i, "price": 1.5}).encode(),
                      on_delivery=lambda err, msg: errors.append(err) if err else None)
        left = p.flush(30)
        if left or errors:
            print(f"FAIL: {left} undelivered, errors {errors}", file=sys.stderr)
            sys.exit(1)
        print(f"ok produced {last - first}")
    elif cmd == "produce-txn":
        # The same records in one committed transaction: the topic's last offset is the commit marker.
        topic, first, last = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"sql-test-{topic}"})
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(first, last):
            p.produce(topic, key=f"id-{i}".encode(),
                      value=json.dumps({"item": f"w{i}", "qty": i, "price": 1.5}).encode())
        p.commit_transaction(30)
        print(f"ok produced {last - first} in a transaction")
    elif cmd == "read":
        topic, expected = sys.argv[3], int(sys.argv[4])
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sql-test-reader", "enable.auto.commit": False})
        deadline = time.time() + 60
        parts = []
        while not parts and time.time() < deadline:
            parts = partitions(c, topic)
            if not parts:
                time.sleep(0.5)
        # Wait (bounded) until the topic holds at least EXPECTED records, then read them all: more than expected
        # (a duplicate) shows up too.
        total = 0
        while time.time() < deadline:
            total = 0
            for p in parts:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += hi - lo
            if total >= expected:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        ends = {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out = []
        while ends and time.time() < deadline + 30:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                print(f"FAIL: {m.error()}", file=sys.stderr)
                sys.exit(1)
            out.append(f"{(m.key() or b'').decode()}\t{m.value().decode()}")
            if m.offset() + 1 >= ends.get(m.partition(), 0):
                ends.pop(m.partition(), None)
        c.close()
        for line in sorted(out):
            print(line)
    elif cmd == "committed":
        group, topic = sys.argv[3], sys.argv[4]
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(topic, p) for p in partitions(c, topic)]
        got = c.committed(tps, timeout=10)
        print(sum(tp.offset for tp in got if tp.offset >= 0))
        c.close()
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        sys.exit(2)


main()
