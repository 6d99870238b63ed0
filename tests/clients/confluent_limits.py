"""Limits and offset administration with confluent-kafka: max.message.bytes (broker and topic level),
DeleteRecords, ListOffsets (earliest/latest/max-timestamp/by time), and a long-polling fetch woken by an append."""
import sys
import threading
import time

from confluent_kafka import Producer, Consumer, TopicPartition, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from common import check, consume_all, die

bootstrap = sys.argv[1]
admin = AdminClient({"bootstrap.servers": bootstrap})
for _, f in admin.create_topics([
        NewTopic("limits", num_partitions=1, replication_factor=1),
        NewTopic("small-topic", num_partitions=1, replication_factor=1, config={"max.message.bytes": "2000"}),
        NewTopic("offsets", num_partitions=1, replication_factor=1),
        NewTopic("longpoll", num_partitions=1, replication_factor=1)]).items():
    f.result()


def produce_one(topic, value, **conf):
    c = {"bootstrap.servers": bootstrap, "acks": "all", "retries": 0}
    c.update(conf)
    p = Producer(c)
    result = []
    p.produce(topic, value=value, partition=0, on_delivery=lambda err, msg: result.append(err))
    p.flush(20)
    check(len(result) == 1, "no delivery report")
    return result[0]


# Broker message.max.bytes (the test starts the broker with 100000): a bigger batch is refused.
err = produce_one("limits", b"x" * 200_000, **{"message.max.bytes": 1_000_000})
check(err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"oversized batch: {err}")
check(produce_one("limits", b"x" * 50_000) is None, "a batch under the limit must succeed")
# Topic-level max.message.bytes override.
err = produce_one("small-topic", b"y" * 5000)
check(err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"topic override: {err}")
check(produce_one("small-topic", b"y" * 100) is None, "small message on small-topic")

# Internal topics are written by the broker only (the first group lookup creates __consumer_offsets).
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "limits-group"})
c.list_topics(timeout=10)
c.close()
deadline = time.time() + 10
while "__consumer_offsets" not in admin.list_topics(timeout=10).topics and time.time() < deadline:
    time.sleep(0.1)
err = produce_one("__consumer_offsets", b"forged")
check(err is not None and err.code() == KafkaError.TOPIC_EXCEPTION, f"produce to internal topic: {err}")

# Offsets: 100 messages with increasing explicit timestamps.
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
base = int(time.time() * 1000) - 100_000
for i in range(100):
    p.produce("offsets", value=str(i).encode(), partition=0, timestamp=base + i * 10)
    p.poll(0)
check(p.flush(20) == 0, "offsets topic flush")
tp = TopicPartition("offsets", 0)


def list_offset(spec):
    r = admin.list_offsets({tp: spec}, request_timeout=10)
    return r[tp].result()


check(list_offset(OffsetSpec.earliest()).offset == 0, "earliest")
check(list_offset(OffsetSpec.latest()).offset == 100, "latest")
mx = list_offset(OffsetSpec.max_timestamp())
check(mx.offset == 99 and mx.timestamp == base + 990, f"max timestamp {mx.offset} {mx.timestamp}")
at = list_offset(OffsetSpec.for_timestamp(base + 505))
check(at.offset == 51, f"by timestamp: {at.offset}")

# DeleteRecords moves the log start offset; consumers from the beginning start there.
res = admin.delete_records([TopicPartition("offsets", 0, 40)], request_timeout=10)
low = res[tp].result()
check(low.low_watermark == 40, f"delete_records low watermark {low.low_watermark}")
check(list_offset(OffsetSpec.earliest()).offset == 40, "earliest after delete_records")
msgs = consume_all(bootstrap, "offsets", [0], 60)
check([m.offset() for m in msgs] == list(range(40, 100)), "consumer starts at the new log start offset")
try:
    admin.delete_records([TopicPartition("offsets", 0, 500)], request_timeout=10)[tp].result()
    die("delete_records beyond the high watermark succeeded")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, f"delete beyond hw: {e}")

# Long poll: a consumer parked in a 20 s fetch must get a new message promptly (woken by the append).
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "e2e-unused", "enable.auto.commit": False,
              "fetch.wait.max.ms": 20000, "fetch.min.bytes": 1})
c.assign([TopicPartition("longpoll", 0, 0)])
c.poll(2.0)  # connect and park a fetch
sent_at = []


def send_later():
    time.sleep(1.0)
    sent_at.append(time.time())
    produce_one("longpoll", b"wake up")


t = threading.Thread(target=send_later)
t.start()
got = None
deadline = time.time() + 15
while got is None and time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        got = time.time()
t.join()
c.close()
check(got is not None, "long-polling consumer never received the message")
latency = got - sent_at[0]
check(latency < 5.0, f"message took {latency:.1f}s: the parked fetch was not woken by the append")
print(f"ok (long-poll latency {latency * 1000:.0f} ms)")
