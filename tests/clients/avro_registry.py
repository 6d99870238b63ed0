"""confluent-kafka's SchemaRegistryClient with AvroSerializer/AvroDeserializer against Fjord's registry.

Usage: avro_registry.py BOOTSTRAP REGISTRY_URL TOPIC
Registers (through the serializer) two schema versions of TOPIC-value, produces records with each, reads them
back with the deserializer, and prints one JSON line per decoded record plus a summary line. Fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import SerializationContext, MessageField

from common import RF, check, consume_all, die

V1 = json.dumps({"type": "record", "name": "Product", "namespace": "com.example",
                 "fields": [{"name": "sku", "type": "string"}, {"name": "price", "type": "double"}]})
V2 = json.dumps({"type": "record", "name": "Product", "namespace": "com.example",
                 "fields": [{"name": "sku", "type": "string"}, {"name": "price", "type": "double"},
                            {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}]})
BAD = json.dumps({"type": "record", "name": "Product", "namespace": "com.example",
                  "fields": [{"name": "sku", "type": "int"}]})


def main():
    bootstrap, url, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, RF)]).values():
        f.result(30)
    sr = SchemaRegistryClient({"url": url})
    subject = f"{topic}-value"
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    sent = []
    for schema, records in [
        (V1, [{"sku": "a-1", "price": 1.5}, {"sku": "a-2", "price": 2.25}]),
        (V2, [{"sku": "b-1", "price": 3.0, "tags": ["x", "y"]}]),
    ]:
        ser = AvroSerializer(sr, schema)
        for r in records:
            value = ser(r, SerializationContext(topic, MessageField.VALUE))
            check(value[0] == 0, "Confluent wire format starts with magic byte 0")
            producer.produce(topic, value=value)
            sent.append((r, int.from_bytes(value[1:5], "big")))
    check(producer.flush(30) == 0, "undelivered messages")

    # The registry agrees with what the serializer did.
    versions = sr.get_versions(subject)
    check(versions == [1, 2], f"versions {versions}")
    latest = sr.get_latest_version(subject)
    check(latest.version == 2 and latest.schema_id == sent[-1][1], f"latest {latest}")
    check(sr.get_schema(sent[0][1]).schema_str is not None, "schema by id")
    # An incompatible schema is refused with 409.
    try:
        sr.register_schema(subject, Schema(BAD, "AVRO"))
        die("an incompatible schema was accepted")
    except SchemaRegistryError as e:
        check(e.http_status_code == 409 and e.error_code == 409, f"incompatible: {e}")
    check(sr.test_compatibility(subject, Schema(V2, "AVRO")), "V2 is compatible with itself")
    check(not sr.test_compatibility(subject, Schema(BAD, "AVRO")), "BAD is not compatible")

    # A deserializer with no reader schema decodes each record with its writer's schema, fetched by id.
    de = AvroDeserializer(sr)
    msgs = consume_all(bootstrap, topic, [0], len(sent))
    for m, (expected, schema_id) in zip(msgs, sent):
        got = de(m.value(), SerializationContext(topic, MessageField.VALUE))
        check(got == expected, f"decoded {got}, sent {expected}")
        check(int.from_bytes(m.value()[1:5], "big") == schema_id, "schema id in the record")
        print(json.dumps({"id": schema_id, "value": got}, sort_keys=True))
    print(f"OK {len(sent)} records ids={sorted(set(i for _, i in sent))}")


if __name__ == "__main__":
    main()
