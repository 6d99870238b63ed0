"""Records for the dashboard's registry decoding, written by confluent-kafka's serializers against Fjord's registry.

Usage: dashboard_registry.py BOOTSTRAP REGISTRY_URL PREFIX
PREFIX-avro gets one record from AvroSerializer (key "k1" as plain text), then a record in the wire format naming
schema id 999999 (which the registry does not have) and a plain text record; PREFIX-json one record from
JSONSerializer; PREFIX-proto one from ProtobufSerializer (an Order that imports common/money.proto, so its
schema has a reference). Prints one line: OK and the schema ids as JSON. Fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from common import RF, check

AVRO = json.dumps({
    "type": "record", "name": "Reading", "namespace": "plant",
    "fields": [
        {"name": "sensor", "type": "string"},
        {"name": "celsius", "type": "double"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
})
JSON_SCHEMA = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Product", "type": "object",
    "properties": {"sku": {"type": "string"}, "price": {"type": "number"}},
    "required": ["sku", "price"],
})


def order_class():
    """shop.Order, which imports common.Money (built from descriptors: no protoc needed)."""
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


def main():
    bootstrap, url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    topics = [f"{prefix}-avro", f"{prefix}-json", f"{prefix}-proto"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, RF) for t in topics]).values():
        f.result(30)
    sr = SchemaRegistryClient({"url": url})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    ids = {}

    def send(topic, value, key=None, name=None):
        check(value[0] == 0 or name is None, "Confluent wire format starts with magic byte 0")
        if name:
            ids[name] = int.from_bytes(value[1:5], "big")
        producer.produce(topic, value=value, key=key)

    avro = AvroSerializer(sr, AVRO)
    send(topics[0], avro({"sensor": "boiler-7", "celsius": 81.5, "note": "steady"},
                         SerializationContext(topics[0], MessageField.VALUE)), key=b"k1", name="avro")
    send(topics[0], b"\x00" + (999999).to_bytes(4, "big") + b"\x02xy", key=b"k2")
    send(topics[0], b"just text", key=b"k3")
    js = JSONSerializer(JSON_SCHEMA, sr)
    send(topics[1], js({"sku": "a-1", "price": 2.5}, SerializationContext(topics[1], MessageField.VALUE)),
         name="json")
    Order = order_class()
    proto = ProtobufSerializer(Order, sr, {"use.deprecated.format": False})
    msg = json_format.ParseDict({"id": "o-1", "total": {"units": "1250", "currency": "EUR"}, "tags": ["new"]},
                                Order())
    send(topics[2], proto(msg, SerializationContext(topics[2], MessageField.VALUE)), name="proto")
    check(producer.flush(30) == 0, "undelivered messages")
    print("OK " + json.dumps(ids, sort_keys=True))


if __name__ == "__main__":
    main()
