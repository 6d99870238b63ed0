"""Transaction timeouts and producer fencing.

txn_timeout_fencing.py BOOTSTRAP abandon: creates `zombie` (1 partition); transactional id `txn-zombie` with a 3 s
transaction timeout begins a transaction, writes z-1..z-5, flushes and dies without ending it.

txn_timeout_fencing.py BOOTSTRAP after: a plain `after-1` written behind the abandoned transaction reaches a
read_committed consumer (bounded, 30 s) only once the coordinator has aborted the timed-out transaction, which
moves the LSO past it; read_committed never sees z-*, read_uncommitted sees z-1..z-5. `txn-zombie` can be
initialised again and commit `z-new`. Then fencing on `fence` (1 partition): producer A (`txn-fence`) writes A-1 in
an open transaction; producer B with the same id initialises (fencing A and aborting its transaction) and commits
B-1; A's commit must then fail with the fenced error (fatal); read_committed sees only B-1, read_uncommitted
A-1 and B-1."""
import os
import sys
import time

from confluent_kafka import KafkaError, KafkaException, Producer

from common import check, die
from txn_helpers import RC, RU, Reader, create_topic, produce_plain, read_exactly

bootstrap, mode = sys.argv[1], sys.argv[2]


def txn_producer(tid, **extra):
    conf = {"bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 0}
    conf.update(extra)
    p = Producer(conf)
    p.init_transactions(30)
    return p


if mode == "abandon":
    create_topic(bootstrap, "zombie", 1)
    p = txn_producer("txn-zombie", **{"transaction.timeout.ms": 3000})
    p.begin_transaction()
    for i in range(1, 6):
        p.produce("zombie", value=f"z-{i}".encode(), partition=0)
    check(p.flush(30) == 0, "abandon: unflushed")
    print("abandoned", flush=True)
    os._exit(0)  # no commit, no abort, no close

elif mode == "after":
    zs = [f"z-{i}" for i in range(1, 6)]
    started = time.time()
    produce_plain(bootstrap, "zombie", [(0, "after-1")])
    rc = Reader(bootstrap, "zombie", [0], RC)
    check(rc.poll_for(30, until=lambda: "after-1" in rc.values[0]),
          f"read_committed never got past the abandoned transaction in 30 s (read {rc.values[0]})")
    print(f"after-1 visible to read_committed {time.time() - started:.1f} s after it was written", flush=True)
    rc.poll_for(1.0)
    check(rc.values[0] == ["after-1"], f"read_committed read {rc.values[0]}, expected only after-1")
    rc.close()
    read_exactly(bootstrap, "zombie", [0], RU, {0: zs + ["after-1"]}, "zombie, read_uncommitted")

    # The timed-out transactional id is usable again.
    p = txn_producer("txn-zombie")
    p.begin_transaction()
    p.produce("zombie", value=b"z-new", partition=0)
    p.commit_transaction(30)
    read_exactly(bootstrap, "zombie", [0], RC, {0: ["after-1", "z-new"]}, "zombie after reuse, read_committed")

    # Fencing: a second instance with the same transactional id takes over.
    create_topic(bootstrap, "fence", 1)
    a = txn_producer("txn-fence")
    a.begin_transaction()
    a.produce("fence", value=b"A-1", partition=0)
    check(a.flush(30) == 0, "A-1 unflushed")
    b = txn_producer("txn-fence")  # bumps the epoch and aborts A's open transaction
    b.begin_transaction()
    b.produce("fence", value=b"B-1", partition=0)
    b.commit_transaction(30)
    try:
        a.commit_transaction(30)
        die("the fenced producer A committed its transaction")
    except KafkaException as e:
        err = e.args[0]
        fenced = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
        check(err.code() in fenced or err.fatal(), f"A's commit failed with {err}, expected a fencing error")
        print(f"A's commit failed as expected: {err} (fatal={err.fatal()})", flush=True)
    read_exactly(bootstrap, "fence", [0], RC, {0: ["B-1"]}, "fence, read_committed")
    read_exactly(bootstrap, "fence", [0], RU, {0: ["A-1", "B-1"]}, "fence, read_uncommitted")
    print("ok", flush=True)
    os._exit(0)  # the fenced producer A is in a fatal state: do not wait on its teardown

else:
    die(f"unknown mode {mode}")
