"""Produces sequence numbers with acks=all until the broker goes away; appends every acknowledged value to a
file (flushed per line), so the test knows exactly what the broker promised to keep."""
import os
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, ack_file, ready_file = sys.argv[1:5]
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2,
              "message.timeout.ms": 5000, "retries": 0, "enable.idempotence": False})
out = open(ack_file, "a", buffering=1)


def on_delivery(err, msg):
    if err is None:
        out.write(msg.value().decode() + "\n")
        out.flush()
        os.fsync(out.fileno())


i = 0
deadline = time.time() + 120
while time.time() < deadline:
    try:
        p.produce(topic, value=str(i).encode(), partition=0, on_delivery=on_delivery)
        i += 1
    except BufferError:
        p.poll(0.05)
    p.poll(0)
    if i == 2000:
        open(ready_file, "w").close()
    if i % 100 == 0:
        time.sleep(0.01)
p.flush(10)
