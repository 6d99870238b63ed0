"""kafka-python's KafkaAdminClient against a Fjord cluster: alter_partition_reassignments moves a partition,
list_partition_reassignments shows it until it completes, a cancel of nothing is NO_REASSIGNMENT_IN_PROGRESS,
and an unknown broker is INVALID_REPLICA_ASSIGNMENT.

Usage: kafka_python_reassign.py BOOTSTRAP TOPIC TARGET (e.g. 2,3)
"""
import sys
import time

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError

from common import check, die


def main():
    bootstrap, topic, target = sys.argv[1], sys.argv[2], [int(b) for b in sys.argv[3].split(",")]
    tp = TopicPartition(topic, 0)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    r = admin.alter_partition_reassignments({tp: target})
    check(r == {tp: None}, f"reassignment refused: {r}")
    deadline = time.time() + 30
    while True:
        listed = admin.list_partition_reassignments()
        if tp not in listed:
            break
        check(set(target) <= set(listed[tp]["replicas"]), f"listed replicas are not a union: {listed}")
        if time.time() > deadline:
            die(f"the reassignment did not complete within 30 s: {listed}")
        time.sleep(0.2)
    md = admin.describe_topics([topic])[0]["partitions"][0]
    field = lambda *names: next((md[n] for n in names if n in md), None)
    check(field("replica_nodes", "replicas") == target, f"replicas after the move: {md}")
    check(sorted(field("isr_nodes", "isr")) == sorted(target), f"ISR after the move: {md}")
    check(field("leader_id", "leader") == target[0], f"leader after the move: {md}")
    r = admin.alter_partition_reassignments({tp: None})
    check(r[tp] is NoReassignmentInProgressError, f"cancelling nothing: {r}")
    r = admin.alter_partition_reassignments({tp: [target[0], 99]})
    check(r[tp] is InvalidReplicationAssignmentError, f"an unknown broker: {r}")
    admin.close()
    print("ok")


if __name__ == "__main__":
    main()
