"""Committed and aborted transactions, the last stable offset, and read_committed / read_uncommitted fetches.

txn_commit_abort.py BOOTSTRAP [full]: creates `txn` (2 partitions, 2 KiB segments, so every transaction spans
several segments). Transactional id `txn-ca` runs 6 transactions, alternately committed (`c-<n>-<i>`) and aborted
(`a-<n>-<i>`), each writing 20 values of ~200 bytes over both partitions in small batches. While each one is open
a plain producer appends `p-<n>-<partition>` behind it. For the first committed and the first aborted transaction,
a live read_committed consumer must stop at the open transaction's first offset (it must not get the plain records
behind it) until EndTxn, and then get the plain records (plus the transactional ones on commit), while a
read_uncommitted consumer gets everything at once. Then a last transaction writes `o-<partition+1>` with plain
`p-open-<partition>` behind it and is left open for a few seconds: invisible to read_committed, visible to
read_uncommitted, and visible to read_committed after the commit. Finally fresh consumers read both partitions
from the start: read_committed gets exactly the committed and plain values, each once, in per-partition produce
order; read_uncommitted gets all of them including the aborted ones.

txn_commit_abort.py BOOTSTRAP verify: only the final reads (run after a kill -9 and restart of the broker, so
aborted-transaction and LSO state must be rebuilt from the log), then checks `txn-ca` can be initialised again."""
import sys

from confluent_kafka import Producer

from common import check
from txn_helpers import RC, RU, Reader, create_topic, produce_plain, read_exactly

bootstrap = sys.argv[1]
mode = sys.argv[2] if len(sys.argv) > 2 else "full"
TOPIC, PARTS, TXNS, PER_TXN = "txn", [0, 1], 6, 20
PAD = "|" + "x" * 200


def txn_values(n):
    tag = "c" if n % 2 == 0 else "a"
    return [(i % 2, f"{tag}-{n}-{i}") for i in range(PER_TXN)]


def plain_values(n):
    return [(p, f"p-{n}-{p}") for p in PARTS]


def expected(committed_only):
    """Per-partition values in log order as each isolation level must see them once everything has ended."""
    out = {p: [] for p in PARTS}
    for n in range(TXNS):
        for p, v in txn_values(n) + plain_values(n):
            if not (committed_only and v.startswith("a-")):
                out[p].append(v)
    for p in PARTS:
        out[p] += [f"o-{p + 1}", f"p-open-{p}"]
    return out


def add(view, pairs):
    for p, v in pairs:
        view[p].append(v)


def copy(view):
    return {p: list(v) for p, v in view.items()}


def final_reads():
    read_exactly(bootstrap, TOPIC, PARTS, RC, expected(True), "final read_committed read")
    read_exactly(bootstrap, TOPIC, PARTS, RU, expected(False), "final read_uncommitted read")


if mode == "verify":
    final_reads()
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "txn-ca"})
    p.init_transactions(30)
    print("ok verified")
    sys.exit(0)

check(mode == "full", f"unknown mode {mode}")
create_topic(bootstrap, TOPIC, len(PARTS), {"segment.bytes": "2048"})
tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": "txn-ca", "linger.ms": 5,
               "batch.num.messages": 3})
tp.init_transactions(30)
rc = Reader(bootstrap, TOPIC, PARTS, RC)
ru = Reader(bootstrap, TOPIC, PARTS, RU)
committed_view = {p: [] for p in PARTS}  # what read_committed may see so far
all_view = {p: [] for p in PARTS}  # what is in the log so far

for n in range(TXNS):
    tp.begin_transaction()
    for p, v in txn_values(n):
        tp.produce(TOPIC, value=(v + PAD).encode(), partition=p)
    check(tp.flush(30) == 0, f"txn {n}: transactional messages left unflushed")
    produce_plain(bootstrap, TOPIC, plain_values(n), PAD)
    add(all_view, txn_values(n) + plain_values(n))
    if n < 2:
        # Open transaction: the LSO is its first offset, so the plain records behind it stay hidden.
        rc.expect(copy(committed_view), f"txn {n} open", settle=2.0)
        ru.expect(copy(all_view), f"txn {n} open")
    if n % 2 == 0:
        tp.commit_transaction(30)
        add(committed_view, txn_values(n))
    else:
        tp.abort_transaction(30)
    add(committed_view, plain_values(n))
    if n < 2:
        rc.expect(copy(committed_view), f"txn {n} {'committed' if n % 2 == 0 else 'aborted'}")

# A transaction left open for a while, with plain records behind it.
tp.begin_transaction()
opened = [(p, f"o-{p + 1}") for p in PARTS]
for p, v in opened:
    tp.produce(TOPIC, value=(v + PAD).encode(), partition=p)
check(tp.flush(30) == 0, "open txn: unflushed")
behind = [(p, f"p-open-{p}") for p in PARTS]
produce_plain(bootstrap, TOPIC, behind, PAD)
add(all_view, opened + behind)
rc.expect(copy(committed_view), "read_committed while a transaction is open", settle=3.0)
ru.expect(copy(all_view), "read_uncommitted while a transaction is open")
tp.commit_transaction(30)
add(committed_view, opened + behind)
rc.expect(copy(committed_view), "read_committed after the open transaction committed")
check(committed_view == expected(True) and all_view == expected(False), "script bookkeeping is inconsistent")
rc.close()
ru.close()

final_reads()
print("ok")
