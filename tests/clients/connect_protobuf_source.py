"""confluent-kafka's ProtobufDeserializer reading what a Fjord Connect source wrote with ProtobufConverter.

The message class is built at run time (no protoc) from the schema the records name: the registry's
`GET /schemas/ids/<id>?format=serialized` (a base64 FileDescriptorProto, what Confluent's clients ask for), its
imports taken from the Python packages that define them (google/protobuf's well-known types, google/type from
googleapis-common-protos, confluent/type/decimal and confluent/meta from confluent-kafka).

Usage:
  connect_protobuf_source.py read BOOTSTRAP REGISTRY_URL TOPIC COUNT
      reads COUNT records from the start of TOPIC (one partition) and prints one JSON line per record:
      {"id": schema id, "indexes": hex of the message-index byte, "value": the message as a dict (proto field
      names, unset fields left out), "timestamps": {field: milliseconds} for its google.protobuf.Timestamp
      fields}, then `schema <text>` with the registered .proto text of the first record's schema.
Fails loudly.
"""
import base64
import json
import sys
import urllib.request

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf import timestamp_pb2, wrappers_pb2
from google.type import date_pb2, timeofday_pb2
from confluent_kafka.schema_registry.confluent import meta_pb2
from confluent_kafka.schema_registry.confluent.type import decimal_pb2

from common import check, consume_all

KNOWN = {m.DESCRIPTOR.name: m for m in
         (descriptor_pb2, timestamp_pb2, wrappers_pb2, date_pb2, timeofday_pb2, meta_pb2, decimal_pb2)}


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def message_class(url, schema_id):
    serialized = get(f"{url}/schemas/ids/{schema_id}?format=serialized")["schema"]
    fd = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(serialized))
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        module = KNOWN.get(name)
        check(module is not None, f"the schema imports {name}, which this client does not know")
        dep = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(dep)
        for d in dep.dependency:
            add(d)
        pool.Add(dep)
        added.add(name)

    for d in fd.dependency:
        add(d)
    pool.Add(fd)
    full = (fd.package + "." if fd.package else "") + fd.message_type[0].name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full))


def timestamps(msg):
    out = {}
    for f, v in msg.ListFields():
        if f.message_type is not None and f.message_type.full_name == "google.protobuf.Timestamp":
            out[f.name] = v.ToMilliseconds()
    return out


def main():
    mode, bootstrap, url, topic, count = sys.argv[1:6]
    check(mode == "read", f"unknown mode {mode}")
    sr = SchemaRegistryClient({"url": url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    records = consume_all(bootstrap, topic, [0], int(count))
    check(records, "no records")
    first_id = int.from_bytes(records[0].value()[1:5], "big")
    cls = message_class(url, first_id)
    de = ProtobufDeserializer(cls, {"use.deprecated.format": False}, schema_registry_client=sr)
    for m in records:
        value = m.value()
        check(value[0] == 0, "Confluent wire format starts with magic byte 0")
        msg = de(value, ctx)
        print(json.dumps({"id": int.from_bytes(value[1:5], "big"), "indexes": value[5:6].hex(),
                          "value": json_format.MessageToDict(msg, preserving_proto_field_name=True),
                          "timestamps": timestamps(msg)}))
    print("schema " + json.dumps(get(f"{url}/schemas/ids/{first_id}")["schema"]))


if __name__ == "__main__":
    main()
