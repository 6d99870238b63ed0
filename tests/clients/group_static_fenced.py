"""KIP-848 static membership with confluent-kafka (librdkafka's 0102 do_test_fenced_member_consumer): while a
static member holds group.instance.id "consumer2", a second instance with that id is refused with the fatal
UNRELEASED_INSTANCE_ID, and the first two members keep their assignment."""
import sys
import time

from confluent_kafka import Consumer, KafkaError

from common import check, die
from group_helpers import Member, create_topic, split_ok, wait_until

bootstrap = sys.argv[1]
topic, group, parts = "static-fenced", "static-fenced-group", [0, 1, 2]
create_topic(bootstrap, topic, 3)
conf = {"group.protocol": "consumer", "session.timeout.ms": None, "heartbeat.interval.ms": None}
c1 = Member("consumer1", bootstrap, group, topic, **{"group.instance.id": "consumer1"}, **conf)
c2a = Member("consumer2a", bootstrap, group, topic, **{"group.instance.id": "consumer2"}, **conf)
wait_until(lambda: split_ok([c1, c2a], parts), 30, "the two static members to split the partitions", [c1, c2a])

c2b = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
                "group.instance.id": "consumer2", "client.id": "consumer2b"})
c2b.subscribe([topic])
deadline = time.time() + 20
got = None
while time.time() < deadline and got is None:
    m = c2b.poll(0.2)
    c1.poll(0.01)
    c2a.poll(0.01)
    if m is not None and m.error():
        got = m.error()
check(got is not None, "the conflicting instance got no error")
check(got.code() == KafkaError._FATAL, f"expected a fatal error, got {got}")
# The fatal error carries the broker's code: librdkafka's text for UNRELEASED_INSTANCE_ID.
check("instance ID is still used by another member" in got.str(), f"not UNRELEASED_INSTANCE_ID: {got}")
try:
    c2b.close()
except Exception:
    pass
# The holders are unaffected: still the same split, and still members.
deadline = time.time() + 3
while time.time() < deadline:
    c1.poll(0.05)
    c2a.poll(0.05)
check(split_ok([c1, c2a], parts), f"holders lost their split: {sorted(c1.assigned)} {sorted(c2a.assigned)}")
c1.close()
c2a.close()
print("ok")
