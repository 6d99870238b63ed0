"""An aborted and a committed transaction for the dashboard's message browser and search (confluent-kafka).

Usage: dashboard_txn.py BOOTSTRAP TOPIC
Writes to partition 0 of TOPIC (created here): "needle aborted 1" and "needle aborted 2" in a transaction that is
aborted, "needle plain" without a transaction, then "needle committed" in a transaction that commits. Prints OK.
"""
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import RF, check


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, RF)]).values():
        f.result(30)
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": "dashboard-txn"})
    txn.init_transactions(30)
    txn.begin_transaction()
    txn.produce(topic, value=b"needle aborted 1", partition=0)
    txn.produce(topic, value=b"needle aborted 2", partition=0)
    check(txn.flush(30) == 0, "undelivered transactional messages")
    txn.abort_transaction(30)
    plain = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    plain.produce(topic, value=b"needle plain", partition=0)
    check(plain.flush(30) == 0, "undelivered message")
    txn.begin_transaction()
    txn.produce(topic, value=b"needle committed", partition=0)
    txn.commit_transaction(30)
    print("OK")


if __name__ == "__main__":
    main()
