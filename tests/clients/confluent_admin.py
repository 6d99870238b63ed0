"""AdminClient against a Fjord broker: create/describe/alter/delete topics and Kafka's error codes."""
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AdminClient, ConfigSource, NewTopic, NewPartitions, ConfigResource,
                                   ConfigEntry, AlterConfigOpType, ResourceType)

from common import check, die

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})


def create(topics, **kw):
    futs = admin.create_topics(topics, operation_timeout=10, request_timeout=15, **kw)
    out = {}
    for name, f in futs.items():
        try:
            f.result()
            out[name] = None
        except KafkaException as e:
            out[name] = e.args[0]
    return out


# Plain create with configs, explicit assignment, validate_only.
r = create([NewTopic("orders", num_partitions=3, replication_factor=1, config={"retention.ms": "3600000", "cleanup.policy": "compact"}),
            NewTopic("assigned", num_partitions=2, replica_assignment=[[1], [1]])])
check(r == {"orders": None, "assigned": None}, f"create failed: {r}")
r = create([NewTopic("dry-run", num_partitions=2)], validate_only=True)
check(r["dry-run"] is None, f"validate_only failed: {r}")

# Kafka's errors.
r = create([NewTopic("orders", num_partitions=1)])
check(r["orders"].code() == KafkaError.TOPIC_ALREADY_EXISTS, f"duplicate: {r}")
r = create([NewTopic("bad name!", num_partitions=1)])
check(r["bad name!"].code() == KafkaError.TOPIC_EXCEPTION, f"bad name: {r}")
r = create([NewTopic("zero", num_partitions=0)])
check(r["zero"].code() == KafkaError.INVALID_PARTITIONS, f"zero partitions: {r}")
r = create([NewTopic("rf3", num_partitions=1, replication_factor=3)])
check(r["rf3"].code() == KafkaError.INVALID_REPLICATION_FACTOR, f"rf3: {r}")
r = create([NewTopic("badcfg", num_partitions=1, config={"retention.ms": "soon"})])
check(r["badcfg"].code() == KafkaError.INVALID_CONFIG, f"bad config: {r}")
r = create([NewTopic("unknowncfg", num_partitions=1, config={"no.such.config": "1"})])
check(r["unknowncfg"].code() == KafkaError.INVALID_CONFIG, f"unknown config: {r}")

md = admin.list_topics(timeout=10)
check("orders" in md.topics and len(md.topics["orders"].partitions) == 3, "orders not listed with 3 partitions")
check(len(md.topics["assigned"].partitions) == 2, "assigned topic partitions")
check("dry-run" not in md.topics, "validate_only created the topic")
check(md.topics["orders"].partitions[0].leader == 1, "leader is broker 1")
check(md.topics["orders"].partitions[0].isrs == [1], "isr is [1]")

# DescribeConfigs: override vs default, with sources.
res = ConfigResource(ResourceType.TOPIC, "orders")
cfg = admin.describe_configs([res])[res].result()
check(cfg["retention.ms"].value == "3600000", f"retention.ms {cfg['retention.ms'].value}")
check(cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, "retention.ms source")
check(cfg["segment.bytes"].value == "1073741824", "segment.bytes default")
check(cfg["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value, "segment.bytes source")
check(cfg["cleanup.policy"].value == "compact", "cleanup.policy")

# IncrementalAlterConfigs: set and delete.
res = ConfigResource(ResourceType.TOPIC, "orders", incremental_configs=[
    ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
    ConfigEntry("cleanup.policy", None, incremental_operation=AlterConfigOpType.DELETE)])
admin.incremental_alter_configs([res])[res].result()
res = ConfigResource(ResourceType.TOPIC, "orders")
cfg = admin.describe_configs([res])[res].result()
check(cfg["retention.ms"].value == "7200000", "incremental set")
check(cfg["cleanup.policy"].value == "delete", "incremental delete restores default")

# Legacy AlterConfigs replaces the whole set.
res = ConfigResource(ResourceType.TOPIC, "orders", set_config={"segment.ms": "60000"})
admin.alter_configs([res])[res].result()
cfg = admin.describe_configs([ConfigResource(ResourceType.TOPIC, "orders")])[ConfigResource(ResourceType.TOPIC, "orders")].result()
check(cfg["segment.ms"].value == "60000" and cfg["retention.ms"].value == "604800000", "alter_configs replace-all")

# Bad alter value.
res = ConfigResource(ResourceType.TOPIC, "orders", incremental_configs=[
    ConfigEntry("retention.ms", "nope", incremental_operation=AlterConfigOpType.SET)])
try:
    admin.incremental_alter_configs([res])[res].result()
    die("bad value accepted")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.INVALID_CONFIG, f"bad alter code {e}")

# CreatePartitions.
admin.create_partitions([NewPartitions("orders", 5)])["orders"].result()
try:
    admin.create_partitions([NewPartitions("orders", 2)])["orders"].result()
    die("shrinking partitions accepted")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.INVALID_PARTITIONS, f"shrink code {e}")
check(len(admin.list_topics(timeout=10).topics["orders"].partitions) == 5, "5 partitions after grow")

# Describe cluster.
cluster = admin.describe_cluster().result()
check(len(cluster.nodes) == 1 and cluster.nodes[0].id == 1, f"cluster nodes {cluster.nodes}")
check(cluster.cluster_id and len(cluster.cluster_id) == 22, f"cluster id {cluster.cluster_id}")

# Data, then delete: a topic re-created under the same name must start empty.
from confluent_kafka import Producer, Consumer, TopicPartition
prod = Producer({"bootstrap.servers": bootstrap})
for i in range(10):
    prod.produce("orders", value=b"old", partition=0)
check(prod.flush(10) == 0, "produce to orders")
for name, f in admin.delete_topics(["orders", "assigned"], operation_timeout=10).items():
    f.result()
try:
    admin.delete_topics(["orders"], operation_timeout=10)["orders"].result()
    die("deleting a missing topic succeeded")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"delete missing code {e}")
md = admin.list_topics(timeout=10)
check("orders" not in md.topics and "assigned" not in md.topics, "topics still listed after delete")
check(create([NewTopic("orders", num_partitions=1)])["orders"] is None, "re-create orders")
cons = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused"})
wm = cons.get_watermark_offsets(TopicPartition("orders", 0), timeout=10)
cons.close()
check(wm == (0, 0), f"re-created topic is not empty: watermarks {wm}")

# Internal topics are the broker's, by name: not created by a client (even before they exist), not deleted.
r = create([NewTopic("__transaction_state", num_partitions=1)])
check(r["__transaction_state"] is not None and r["__transaction_state"].code() == KafkaError.INVALID_REQUEST,
      f"create internal topic: {r}")
check("__transaction_state" not in admin.list_topics(timeout=10).topics, "a client created __transaction_state")
grp = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-internal"})
grp.list_topics(timeout=10)  # the group lookup creates __consumer_offsets
grp.close()
deadline = time.time() + 10
while "__consumer_offsets" not in admin.list_topics(timeout=10).topics and time.time() < deadline:
    time.sleep(0.1)
try:
    admin.delete_topics(["__consumer_offsets"], operation_timeout=10)["__consumer_offsets"].result()
    die("deleting __consumer_offsets succeeded")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.INVALID_REQUEST, f"delete internal topic: {e}")
check("__consumer_offsets" in admin.list_topics(timeout=10).topics, "__consumer_offsets is gone")
print("ok")
