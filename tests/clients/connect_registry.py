"""confluent-kafka's Avro and JSON Schema serializers/deserializers on both sides of Fjord Connect's AvroConverter
and JsonSchemaConverter.

Usage:
  connect_registry.py produce|produce-json BOOTSTRAP REGISTRY_URL TOPIC
      Produces PRODUCTS (below) to TOPIC with AvroSerializer (schema ITEM, registered under TOPIC-value), keyed by
      sku, then one record that is not in the wire format (plain text, a poison record) and one whose schema id
      (999999) the registry does not have. Prints `OK <n>`.
      produce-json: the same with JSONSerializer (schema ITEM_JSON), and the poison record is in the wire format
      with the schema's id but a value that does not match the schema.
  connect_registry.py consume|consume-json BOOTSTRAP REGISTRY_URL TOPIC N
      Reads N records of TOPIC from the start, decodes each value with AvroDeserializer (its writer schema fetched
      by the id in the record), and prints one JSON line per value (logical types as their str()), then
      `schema-id <id>` for each distinct id
      and the registered subject's schema as `schema <json>`.
  connect_registry.py produce-json-ref BOOTSTRAP REGISTRY_URL TOPIC
      Registers COMMON_JSON (definitions sku and money) under the subject `common`, then produces PRODUCTS'
      sku, qty and price with JSONSerializer and ITEM_JSON_REF, whose properties `$ref` common.json's
      definitions: the schema is registered under TOPIC-value with a reference to `common`. Prints `OK <n>`.
  connect_registry.py produce-protobuf-import BOOTSTRAP REGISTRY_URL TOPIC
      Produces ORDERS_WITH_IMPORT with ProtobufSerializer as shop.Order of shop/order_ref.proto, which imports
      shop/header.proto: the serializer registers the imported file under its own subject (shop/header.proto) and
      the order's schema under TOPIC-value with a reference to it. Prints `OK <n>`.
  connect_registry.py produce-raw BOOTSTRAP TOPIC KEY:HEX...
      Produces one record per argument to TOPIC: key KEY, value the bytes HEX (records a serializer would not
      write, e.g. for schemas that amplify). Prints `OK <n>`.
Fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer, JSONDeserializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from common import check, consume_all

ITEM = json.dumps({"type": "record", "name": "Item", "namespace": "com.example", "fields": [
    {"name": "sku", "type": "string"},
    {"name": "qty", "type": "int"},
    {"name": "price", "type": "double"},
    {"name": "note", "type": ["null", "string"], "default": None},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
]})

ITEM_JSON = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Item", "type": "object",
    "properties": {
        "sku": {"type": "string"},
        "qty": {"type": "integer"},
        "price": {"type": "number"},
        "note": {"oneOf": [{"type": "null"}, {"type": "string"}]},
        "day": {"type": "integer"},
    },
    "required": ["sku", "qty", "price", "day"],
    "additionalProperties": False})

COMMON_JSON = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {
    "sku": {"type": "string"},
    "money": {"type": "number"},
}})

ITEM_JSON_REF = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "Item", "type": "object",
    "properties": {
        "sku": {"$ref": "common.json#/definitions/sku"},
        "qty": {"type": "integer"},
        "price": {"$ref": "common.json#/definitions/money"},
    },
    "required": ["sku", "qty", "price"],
    "additionalProperties": False})

PRODUCTS = [
    {"sku": "a-1", "qty": 3, "price": 1.5, "note": None, "day": 19000},
    {"sku": "b-2", "qty": 7, "price": 2.25, "note": "fragile", "day": 19001},
    {"sku": "c-3", "qty": 0, "price": 10.0, "note": "x\ty", "day": 0},
]


def produce(bootstrap, url, topic, json_schema=False):
    sr = SchemaRegistryClient({"url": url})
    ser = JSONSerializer(ITEM_JSON, sr) if json_schema else AvroSerializer(sr, ITEM)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    n = 0
    for r in PRODUCTS:
        value = ser(r, SerializationContext(topic, MessageField.VALUE))
        check(value[0] == 0, "Confluent wire format starts with magic byte 0")
        p.produce(topic, key=r["sku"].encode(), value=value)
        n += 1
    if json_schema:
        # The schema's id, but a value the schema refuses (qty is not an integer).
        schema_id = value[1:5]
        p.produce(topic, key=b"poison", value=b"\x00" + schema_id + b'{"sku": "d-4", "qty": "many", "price": 1, "day": 1}')
    else:
        p.produce(topic, key=b"poison", value=b"not avro at all")
    # In the wire format, but with a schema id the registry does not have.
    p.produce(topic, key=b"unknown-id", value=b"\x00" + (999999).to_bytes(4, "big") + b"\x02x")
    n += 2
    check(p.flush(30) == 0, "undelivered messages")
    print(f"OK {n}")


def consume(bootstrap, url, topic, n, json_schema=False):
    sr = SchemaRegistryClient({"url": url})
    de = JSONDeserializer(None, schema_registry_client=sr) if json_schema else AvroDeserializer(sr)
    ids = []
    for m in consume_all(bootstrap, topic, [0], n):
        v = m.value()
        check(v is not None and v[0] == 0, f"not in the wire format: {v!r}")
        ids.append(int.from_bytes(v[1:5], "big"))
        # default=str: Avro's logical types come as Decimal, date, datetime and time.
        print(json.dumps(de(v, SerializationContext(topic, MessageField.VALUE)), sort_keys=True, default=str))
    for i in sorted(set(ids)):
        print(f"schema-id {i}")
    latest = sr.get_latest_version(f"{topic}-value")
    print(f"schema {latest.schema.schema_str}")


def produce_json_ref(bootstrap, url, topic):
    sr = SchemaRegistryClient({"url": url})
    sr.register_schema("common", Schema(COMMON_JSON, "JSON"))
    version = sr.get_latest_version("common").version
    schema = Schema(ITEM_JSON_REF, "JSON", [SchemaReference("common.json", "common", version)])
    ser = JSONSerializer(schema, sr)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for r in PRODUCTS:
        value = ser({k: r[k] for k in ("sku", "qty", "price")}, SerializationContext(topic, MessageField.VALUE))
        check(value[0] == 0, "Confluent wire format starts with magic byte 0")
        p.produce(topic, key=r["sku"].encode(), value=value)
    check(p.flush(30) == 0, "undelivered messages")
    print(f"OK {len(PRODUCTS)}")


ORDERS_WITH_IMPORT = [
    {"id": "r-1", "header": {"source": "app"}},
    {"id": "r-2"},
]


def order_with_import_class():
    """shop.Order in shop/order_ref.proto, whose header field's type comes from the imported shop/header.proto."""
    F = descriptor_pb2.FieldDescriptorProto
    header = descriptor_pb2.FileDescriptorProto(name="shop/header.proto", package="shop", syntax="proto3")
    h = header.message_type.add(name="Header")
    h.field.add(name="source", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="source")
    order = descriptor_pb2.FileDescriptorProto(name="shop/order_ref.proto", package="shop", syntax="proto3",
                                               dependency=["shop/header.proto"])
    o = order.message_type.add(name="Order")
    o.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="id")
    o.field.add(name="header", number=2, type=F.TYPE_MESSAGE, type_name=".shop.Header",
                label=F.LABEL_OPTIONAL, json_name="header")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(header)
    pool.Add(order)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def produce_protobuf_import(bootstrap, url, topic):
    sr = SchemaRegistryClient({"url": url})
    Order = order_with_import_class()
    ser = ProtobufSerializer(Order, sr, {"use.deprecated.format": False})
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    ctx = SerializationContext(topic, MessageField.VALUE)
    for r in ORDERS_WITH_IMPORT:
        p.produce(topic, value=ser(json_format.ParseDict(r, Order()), ctx))
    check(p.flush(30) == 0, "undelivered messages")
    print(f"OK {len(ORDERS_WITH_IMPORT)}")


def produce_raw(bootstrap, topic, records):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for r in records:
        key, value = r.split(":", 1)
        p.produce(topic, key=key.encode(), value=bytes.fromhex(value))
    check(p.flush(30) == 0, "undelivered messages")
    print(f"OK {len(records)}")


def main():
    if sys.argv[1] == "produce-raw":
        produce_raw(sys.argv[2], sys.argv[3], sys.argv[4:])
        return
    mode, bootstrap, url, topic = sys.argv[1:5]
    if mode == "produce-json-ref":
        produce_json_ref(bootstrap, url, topic)
        return
    if mode == "produce-protobuf-import":
        produce_protobuf_import(bootstrap, url, topic)
        return
    json_schema = mode.endswith("-json")
    if mode.startswith("produce"):
        produce(bootstrap, url, topic, json_schema)
    else:
        consume(bootstrap, url, topic, int(sys.argv[5]), json_schema)


if __name__ == "__main__":
    main()
