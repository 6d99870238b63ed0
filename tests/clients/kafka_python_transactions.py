"""kafka-python 3 transactions: a committed, an aborted and a committed-with-offsets transaction
(send_offsets_to_transaction); a kafka-python read_committed consumer sees only committed values, a
read_uncommitted one sees all, and the offsets sent in the transaction are the group's committed offsets."""
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from common import RF

bootstrap = sys.argv[1]
topic = "kp-txn"
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=RF)])

p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-txn-app")
p.init_transactions()
p.begin_transaction()
for i in range(10):
    p.send(topic, value=f"c-{i}".encode(), partition=0)
p.commit_transaction()
p.begin_transaction()
for i in range(10):
    p.send(topic, value=f"a-{i}".encode(), partition=0)
p.flush()
p.abort_transaction()
p.begin_transaction()
for i in range(10, 15):
    p.send(topic, value=f"c-{i}".encode(), partition=0)
p.send_offsets_to_transaction({TopicPartition(topic, 0): OffsetAndMetadata(5, "", -1)}, "kp-group")
p.commit_transaction()
p.close()


def read(isolation, expected):
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000,
                      auto_offset_reset="earliest", isolation_level=isolation)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = [m.value.decode() for m in c]
    c.close()
    assert got == expected, f"{isolation}: {got}"


committed = [f"c-{i}" for i in range(15)]
read("read_committed", committed)
read("read_uncommitted", committed[:10] + [f"a-{i}" for i in range(10)] + committed[10:])
offsets = admin.list_group_offsets({"kp-group": None})["kp-group"]
assert offsets[TopicPartition(topic, 0)].offset == 5, offsets
print("ok")
