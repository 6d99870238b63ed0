"""Topic-level compression.type with confluent-kafka (librdkafka's 0081 admin case): CreateTopics accepts every
codec Kafka accepts, refuses an unknown one with INVALID_CONFIG, and records produced in another codec come back
intact from a topic that stores them recompressed."""
import sys

from confluent_kafka import Producer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource, ResourceType

from common import check, consume_all

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
codecs = ["gzip", "snappy", "lz4", "zstd", "uncompressed", "producer"]
topics = {f"codec-{c}": c for c in codecs}
for _, f in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1,
                                          config={"compression.type": c}) for t, c in topics.items()]).items():
    f.result()
try:
    admin.create_topics([NewTopic("codec-bad", num_partitions=1, replication_factor=1,
                                  config={"compression.type": "brotli"})])["codec-bad"].result()
    check(False, "compression.type=brotli was accepted")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.INVALID_CONFIG, f"brotli: {e}")

for t, c in topics.items():
    desc = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t)])
    got = list(desc.values())[0].result()["compression.type"].value
    check(got == c, f"{t}: compression.type {got!r}")
    # Sent in a codec other than the topic's, so the broker recompresses (the topic "producer" keeps it).
    sent = "lz4" if c != "lz4" else "zstd"
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": sent, "linger.ms": 20, "acks": "all"})
    expected = [f"{t}-{i}".encode() * 3 for i in range(500)]
    for v in expected:
        p.produce(t, key=v[:8], value=v, headers=[("h", b"x")], partition=0)
    check(p.flush(30) == 0, f"{t}: flush")
    got = consume_all(bootstrap, t, [0], len(expected))
    values = [m.value() for m in got]
    check(values == expected, f"{t}: {len(values)} values back, first {values[:2]}")
    check(all(m.headers() == [("h", b"x")] for m in got), f"{t}: headers lost")
print("ok")
