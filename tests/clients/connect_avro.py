"""confluent-kafka's AvroSerializer/AvroDeserializer on both sides of Fjord Connect's AvroConverter.

Usage:
  connect_avro.py produce BOOTSTRAP REGISTRY_URL TOPIC
      Produces PRODUCTS (below) to TOPIC with AvroSerializer (schema ITEM, registered under TOPIC-value), keyed by
      sku, then one record that is not in the wire format (plain text, a poison record). Prints `OK <n>`.
  connect_avro.py consume BOOTSTRAP REGISTRY_URL TOPIC N
      Reads N records of TOPIC from the start, decodes each value with AvroDeserializer (its writer schema fetched
      by the id in the record), and prints one JSON line per value, then `schema-id <id>` for each distinct id
      and the registered subject's schema as `schema <json>`.
Fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField

from common import check, consume_all

ITEM = json.dumps({"type": "record", "name": "Item", "namespace": "com.example", "fields": [
    {"name": "sku", "type": "string"},
    {"name": "qty", "type": "int"},
    {"name": "price", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": None},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
]})

PRODUCTS = [
    {"sku": "a-1", "qty": 3, "price": 1.5, "note": None, "day": 19000},
    {"sku": "b-2", "qty": 7, "price": 2.25, "note": "fragile", "day": 19001},
    {"sku": "c-3", "qty": 0, "price": 10.0, "note": "x\ty", "day": 0},
]


def produce(bootstrap, url, topic):
    sr = SchemaRegistryClient({"url": url})
    ser = AvroSerializer(sr, ITEM)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    n = 0
    for r in PRODUCTS:
        value = ser(r, SerializationContext(topic, MessageField.VALUE))
        check(value[0] == 0, "Confluent wire format starts with magic byte 0")
        p.produce(topic, key=r["sku"].encode(), value=value)
        n += 1
    p.produce(topic, key=b"poison", value=b"not avro at all")
    n += 1
    check(p.flush(30) == 0, "undelivered messages")
    print(f"OK {n}")


def consume(bootstrap, url, topic, n):
    sr = SchemaRegistryClient({"url": url})
    de = AvroDeserializer(sr)
    ids = []
    for m in consume_all(bootstrap, topic, [0], n):
        v = m.value()
        check(v is not None and v[0] == 0, f"not in the wire format: {v!r}")
        ids.append(int.from_bytes(v[1:5], "big"))
        print(json.dumps(de(v, SerializationContext(topic, MessageField.VALUE)), sort_keys=True))
    for i in sorted(set(ids)):
        print(f"schema-id {i}")
    latest = sr.get_latest_version(f"{topic}-value")
    print(f"schema {latest.schema.schema_str}")


def main():
    mode, bootstrap, url, topic = sys.argv[1:5]
    if mode == "produce":
        produce(bootstrap, url, topic)
    else:
        consume(bootstrap, url, topic, int(sys.argv[5]))


if __name__ == "__main__":
    main()
