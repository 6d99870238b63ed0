"""confluent-kafka's JSONSerializer/JSONDeserializer and ProtobufSerializer/ProtobufDeserializer against
Fjord's registry.

Usage: json_protobuf_registry.py BOOTSTRAP REGISTRY_URL TOPIC_PREFIX
JSON Schema: registers two versions of TOPIC_PREFIX-json-value through the serializer, produces records with
each, reads them back with a deserializer that fetches the writer schema by id, and checks that an
incompatible schema gets 409. Protobuf: message classes are built at run time from FileDescriptorProtos (no
protoc needed): an Order that imports common/money.proto, so the serializer registers the import as a
reference first; records go through TOPIC_PREFIX-proto and come back through the deserializer, which fetches
the schemas in the serialized (descriptor) format. Prints one JSON line per decoded record and a summary line
per format. Fails loudly.
"""
import json
import sys
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.json_schema import JSONSerializer, JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer, ProtobufDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from common import RF, check, consume_all, die

J1 = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Product", "type": "object",
    "properties": {"sku": {"type": "string"}, "price": {"type": "number"}},
    "required": ["sku", "price"], "additionalProperties": False,
})
# An optional property added to a closed content model: BACKWARD compatible.
J2 = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Product", "type": "object",
    "properties": {"sku": {"type": "string"}, "price": {"type": "number"},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["sku", "price"], "additionalProperties": False,
})
# price turned into a string: TYPE_CHANGED.
JBAD = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Product", "type": "object",
    "properties": {"sku": {"type": "string"}, "price": {"type": "string"}},
    "required": ["sku", "price"], "additionalProperties": False,
})


def create_topics(bootstrap, names):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(n, 1, RF) for n in names]).values():
        f.result(30)


def json_round_trip(bootstrap, sr, topic):
    subject = f"{topic}-value"
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    sent = []
    for schema, records in [
        (J1, [{"sku": "a-1", "price": 1.5}, {"sku": "a-2", "price": 2.25}]),
        (J2, [{"sku": "b-1", "price": 3.0, "tags": ["x", "y"]}]),
    ]:
        ser = JSONSerializer(schema, sr)
        for r in records:
            value = ser(r, SerializationContext(topic, MessageField.VALUE))
            check(value[0] == 0, "Confluent wire format starts with magic byte 0")
            producer.produce(topic, value=value)
            sent.append((r, int.from_bytes(value[1:5], "big")))
    check(producer.flush(30) == 0, "undelivered messages")
    # The serializer validates records against the schema before sending.
    try:
        JSONSerializer(J1, sr)({"sku": 7, "price": 1.0}, SerializationContext(topic, MessageField.VALUE))
        die("an invalid record was serialized")
    except Exception as e:  # SerializationError
        check("sku" in str(e) or "7" in str(e), f"validation error names the field: {e}")

    versions = sr.get_versions(subject)
    check(versions == [1, 2], f"versions {versions}")
    latest = sr.get_latest_version(subject)
    check(latest.schema.schema_type == "JSON", f"latest type {latest.schema.schema_type}")
    check(latest.schema_id == sent[-1][1], f"latest {latest}")
    try:
        sr.register_schema(subject, Schema(JBAD, "JSON"))
        die("an incompatible JSON schema was accepted")
    except SchemaRegistryError as e:
        check(e.http_status_code == 409 and e.error_code == 409, f"incompatible: {e}")
    check(sr.test_compatibility(subject, Schema(J2, "JSON")), "J2 is compatible with itself")
    check(not sr.test_compatibility(subject, Schema(JBAD, "JSON")), "JBAD is not compatible")

    de = JSONDeserializer(None, schema_registry_client=sr)
    msgs = consume_all(bootstrap, topic, [0], len(sent))
    for m, (expected, schema_id) in zip(msgs, sent):
        got = de(m.value(), SerializationContext(topic, MessageField.VALUE))
        check(got == expected, f"decoded {got}, sent {expected}")
        check(int.from_bytes(m.value()[1:5], "big") == schema_id, "schema id in the record")
        print(json.dumps({"format": "json", "id": schema_id, "value": got}, sort_keys=True))
    print(f"OK json {len(sent)} records ids={sorted(set(i for _, i in sent))}")


def proto_classes():
    """Message classes from descriptors built here: common.Money and shop.Order (which imports Money)."""
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    money = descriptor_pb2.FileDescriptorProto(name="common/money.proto", package="common", syntax="proto3")
    m = money.message_type.add(name="Money")
    m.field.add(name="units", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, json_name="units")
    m.field.add(name="currency", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="currency")
    order = descriptor_pb2.FileDescriptorProto(name="shop/order.proto", package="shop", syntax="proto3",
                                               dependency=["common/money.proto"])
    o = order.message_type.add(name="Order")
    o.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="id")
    o.field.add(name="total", number=2, type=F.TYPE_MESSAGE, type_name=".common.Money",
                label=F.LABEL_OPTIONAL, json_name="total")
    o.field.add(name="tags", number=3, type=F.TYPE_STRING, label=F.LABEL_REPEATED, json_name="tags")
    pool.Add(money)
    pool.Add(order)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def proto_round_trip(bootstrap, sr, topic):
    Order = proto_classes()
    subject = f"{topic}-value"
    ser = ProtobufSerializer(Order, sr, {"use.deprecated.format": False})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    records = [
        {"id": "o-1", "total": {"units": "1250", "currency": "EUR"}, "tags": ["new"]},
        {"id": "o-2", "total": {"units": "99", "currency": "USD"}},
    ]
    sent = []
    for r in records:
        msg = json_format.ParseDict(r, Order())
        value = ser(msg, SerializationContext(topic, MessageField.VALUE))
        check(value[0] == 0, "Confluent wire format starts with magic byte 0")
        producer.produce(topic, value=value)
        sent.append((r, int.from_bytes(value[1:5], "big")))
    check(producer.flush(30) == 0, "undelivered messages")

    # The serializer registered the import as a reference under its own subject.
    check("common/money.proto" in sr.get_subjects(), f"subjects {sr.get_subjects()}")
    latest = sr.get_latest_version(subject)
    check(latest.schema.schema_type == "PROTOBUF", f"latest type {latest.schema.schema_type}")
    refs = [(r.name, r.subject) for r in latest.schema.references]
    check(refs == [("common/money.proto", "common/money.proto")], f"references {refs}")
    check("message Order" in latest.schema.schema_str, f"stored as .proto text: {latest.schema.schema_str}")
    # A field whose wire type changes is refused.
    bad = 'syntax = "proto3";\npackage shop;\nimport "common/money.proto";\n' \
          'message Order { int64 id = 1; common.Money total = 2; repeated string tags = 3; }\n'
    try:
        sr.register_schema(subject, Schema(bad, "PROTOBUF", latest.schema.references))
        die("an incompatible Protobuf schema was accepted")
    except SchemaRegistryError as e:
        check(e.http_status_code == 409, f"incompatible: {e}")

    de = ProtobufDeserializer(Order, {"use.deprecated.format": False}, schema_registry_client=sr)
    msgs = consume_all(bootstrap, topic, [0], len(sent))
    for m, (expected, schema_id) in zip(msgs, sent):
        got = de(m.value(), SerializationContext(topic, MessageField.VALUE))
        as_dict = json_format.MessageToDict(got)
        check(as_dict == expected, f"decoded {as_dict}, sent {expected}")
        print(json.dumps({"format": "protobuf", "id": schema_id, "value": as_dict}, sort_keys=True))
    print(f"OK protobuf {len(sent)} records ids={sorted(set(i for _, i in sent))}")


def main():
    bootstrap, url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    create_topics(bootstrap, [f"{prefix}-json", f"{prefix}-proto"])
    sr = SchemaRegistryClient({"url": url})
    with urllib.request.urlopen(f"{url}/schemas/types", timeout=30) as resp:
        types = json.load(resp)
    check(sorted(types) == ["AVRO", "JSON", "PROTOBUF"], f"supported types {types}")
    json_round_trip(bootstrap, sr, f"{prefix}-json")
    proto_round_trip(bootstrap, sr, f"{prefix}-proto")


if __name__ == "__main__":
    main()
