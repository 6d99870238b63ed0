"""KIP-467 per-record errors with confluent-kafka (librdkafka's 0011 produce_batch record_fail case): a topic
made compacted with an incremental APPEND to cleanup.policy refuses keyless records. In one batch, exactly the
keyless records fail with INVALID_RECORD and the others with _INVALID_DIFFERENT_RECORD (the batch is refused as a
whole, as Kafka does); one record per batch, only the keyless ones fail and the others are delivered."""
import sys
import time

from confluent_kafka import Producer, KafkaError
from confluent_kafka.admin import (AdminClient, NewTopic, ConfigResource, ConfigEntry, AlterConfigOpType,
                                   ResourceType)

from common import check

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
for _, f in admin.create_topics([NewTopic("record-errors", num_partitions=1, replication_factor=1)]).items():
    f.result()
res = ConfigResource(ResourceType.TOPIC, "record-errors",
                     incremental_configs=[ConfigEntry("cleanup.policy", "compact",
                                                      incremental_operation=AlterConfigOpType.APPEND)])
for _, f in admin.incremental_alter_configs([res]).items():
    f.result()
desc = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "record-errors")])
policy = list(desc.values())[0].result()["cleanup.policy"].value
check(policy == "delete,compact", f"APPEND made cleanup.policy {policy!r}")


def run(extra):
    counts = {"invalid": 0, "different": 0, "ok": 0, "other": []}

    def dr(err, msg):
        if err is None:
            counts["ok"] += 1
        elif err.code() == KafkaError.INVALID_RECORD:
            counts["invalid"] += 1
        elif err.code() == KafkaError._INVALID_DIFFERENT_RECORD:
            counts["different"] += 1
        else:
            counts["other"].append(err)

    # A long linger and the topic's metadata fetched first: all 100 records are queued before the batch may leave,
    # also on a loaded machine (with 100 ms, a first batch sometimes left with only a few of them).
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2000}
    conf.update(extra)
    p = Producer(conf)
    p.list_topics("record-errors", timeout=30)
    for i in range(100):
        key = None if i % 10 == 0 else f"key-{i}".encode()
        p.produce("record-errors", key=key, value=f"message {i}".encode(), partition=0, on_delivery=dr)
    check(p.flush(30) == 0, "all delivery reports arrived")
    return counts


one_batch = run({})
check(one_batch == {"invalid": 10, "different": 90, "ok": 0, "other": []}, f"one batch: {one_batch}")
per_record = run({"batch.size": 1})
check(per_record == {"invalid": 10, "different": 0, "ok": 90, "other": []}, f"one record per batch: {per_record}")
print("ok")
