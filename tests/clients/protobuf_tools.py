"""confluent-kafka's ProtobufSerializer/ProtobufDeserializer on the other side of `fjord produce/consume
--value-format protobuf`.

The message classes are built at run time from a FileDescriptorProto (no protoc needed) and match ORDER_PROTO,
the .proto text the Rust test gives fjord: package shop, messages Header (index 0) and Order (index 1), so the
message-index array is not the one-byte shortcut.

Usage:
  protobuf_tools.py proto
      prints ORDER_PROTO.
  protobuf_tools.py write BOOTSTRAP REGISTRY_URL TOPIC
      serializes the JSON lines of standard input as shop.Order with ProtobufSerializer (which registers the
      schema under TOPIC-value) and produces them to TOPIC.
  protobuf_tools.py read BOOTSTRAP REGISTRY_URL TOPIC COUNT
      reads COUNT records from the start of TOPIC, decodes each with ProtobufDeserializer(shop.Order) and prints
      one JSON line per record: {"id": schema id, "indexes": hex of the message-index bytes, "value": ...}.
Fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer, ProtobufDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from common import check, consume_all

ORDER_PROTO = """syntax = "proto3";
package shop;

message Header {
  string source = 1;
}

message Order {
  string id = 1;
  int64 units = 2;
  repeated string tags = 3;
  Header header = 4;
}
"""


def order_class():
    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="shop/order.proto", package="shop", syntax="proto3")
    h = fd.message_type.add(name="Header")
    h.field.add(name="source", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="source")
    o = fd.message_type.add(name="Order")
    o.field.add(name="id", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="id")
    o.field.add(name="units", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL, json_name="units")
    o.field.add(name="tags", number=3, type=F.TYPE_STRING, label=F.LABEL_REPEATED, json_name="tags")
    o.field.add(name="header", number=4, type=F.TYPE_MESSAGE, type_name=".shop.Header",
                label=F.LABEL_OPTIONAL, json_name="header")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def main():
    mode = sys.argv[1]
    if mode == "proto":
        sys.stdout.write(ORDER_PROTO)
        return
    bootstrap, url, topic = sys.argv[2:5]
    sr = SchemaRegistryClient({"url": url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    Order = order_class()
    conf = {"use.deprecated.format": False}
    if mode == "write":
        ser = ProtobufSerializer(Order, sr, conf)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for line in sys.stdin:
            if line.strip():
                producer.produce(topic, value=ser(json_format.ParseDict(json.loads(line), Order()), ctx))
        check(producer.flush(30) == 0, "undelivered messages")
    elif mode == "read":
        count = int(sys.argv[5])
        de = ProtobufDeserializer(Order, conf, schema_registry_client=sr)
        for m in consume_all(bootstrap, topic, [0], count):
            value = m.value()
            check(value[0] == 0, "Confluent wire format starts with magic byte 0")
            got = json_format.MessageToDict(de(value, ctx))
            print(json.dumps({"id": int.from_bytes(value[1:5], "big"), "indexes": value[5:7].hex(),
                              "value": got}))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
