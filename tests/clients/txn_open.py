"""Leaves transactions for the `fjord transactions` admin commands to find.

txn_open.py BOOTSTRAP TOPIC: transactional id `txn-done` writes done-1, done-2 to partition 0 of TOPIC and commits;
then `txn-open` (transaction timeout 600 s, so it stays Ongoing for the whole test) begins a transaction, writes
open-1..open-3 to the same partition, flushes, prints `open` and exits without committing or aborting."""
import os
import sys

from confluent_kafka import Producer

from common import check

bootstrap, topic = sys.argv[1], sys.argv[2]


def txn_producer(tid, **extra):
    conf = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 0}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


done = txn_producer("txn-done")
done.begin_transaction()
for i in (1, 2):
    done.produce(topic, value=f"done-{i}".encode(), partition=0)
done.commit_transaction(30)
print("committed", flush=True)

p = txn_producer("txn-open", **{"transaction.timeout.ms": 600000})
p.begin_transaction()
for i in range(1, 4):
    p.produce(topic, value=f"open-{i}".encode(), partition=0)
check(p.flush(30) == 0, "open: unflushed")
print("open", flush=True)
os._exit(0)  # no commit, no abort, no close: the transaction stays Ongoing
