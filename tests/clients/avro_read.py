"""Reads records that another producer (`fjord produce --value-format avro`) wrote in Confluent's wire format,
with confluent-kafka's AvroDeserializer for values (and keys when asked), fetching each writer schema from the
registry by the id in the record.

Usage: avro_read.py BOOTSTRAP REGISTRY_URL TOPIC COUNT [--keys]
Prints one JSON line per record: {"id": SCHEMA_ID, "key": ..., "value": ...}. Fails loudly.
"""
import json
import sys

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField

from common import check, consume_all


def main():
    bootstrap, url, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    keys = "--keys" in sys.argv[5:]
    sr = SchemaRegistryClient({"url": url})
    de = AvroDeserializer(sr)
    for m in consume_all(bootstrap, topic, [0], count):
        v = m.value()
        check(v is not None and v[0] == 0, f"value not in Confluent's wire format: {v!r}")
        key = m.key()
        if keys:
            check(key is not None and key[0] == 0, f"key not in Confluent's wire format: {key!r}")
            key = de(key, SerializationContext(topic, MessageField.KEY))
        elif key is not None:
            key = key.decode()
        value = de(v, SerializationContext(topic, MessageField.VALUE))
        print(json.dumps({"id": int.from_bytes(v[1:5], "big"), "key": key, "value": value}, sort_keys=True))


if __name__ == "__main__":
    main()
