"""Third-party client side of the SQL tests (confluent-kafka).

  produce BOOTSTRAP TOPIC FIRST LAST       JSON records id-i -> {"item": "w<i>", "qty": i, "price": 1.5}, keys as strings
  produce-txn BOOTSTRAP TOPIC FIRST LAST   the same, in one committed transaction (the last offset is its marker)
  read BOOTSTRAP TOPIC EXPECTED            every record of every partition, once EXPECTED have arrived (60 s at most):
                                           one line per record, `key<TAB>value`, sorted
  committed BOOTSTRAP GROUP TOPIC          the sum of the group's committed offsets over the topic's partitions
  produce-raw BOOTSTRAP TOPIC KEY VALUE    one record with these bytes (UTF-8), acknowledged
  produce-big BOOTSTRAP TOPIC N SIZE       N JSON records {"v": "<SIZE x's>"}, no key
  produce-avro BOOTSTRAP REGISTRY TOPIC N  N Avro records (confluent-kafka's AvroSerializer, which registers
                                           TOPIC-value) with string keys sku-i: {sku, price, qty, tags}
  read-avro BOOTSTRAP REGISTRY TOPIC N     every record of TOPIC once N have arrived, values decoded with
                                           AvroDeserializer (the writer's schema from the registry by id): one
                                           line `key<TAB>json`, sorted
  produce-protobuf BOOTSTRAP REGISTRY TOPIC N
                                           N records of shop.Reading (READING_PROTO, the first message of its
                                           file; the class built at run time, no protoc) with
                                           ProtobufSerializer, which registers TOPIC-value; string keys r-i
  produce-json-sr BOOTSTRAP REGISTRY TOPIC N
                                           N records of ORDER_JSON_SCHEMA (local definitions through $ref, nullable
                                           oneOfs, a $ref to ADDRESS_JSON_SCHEMA, registered first under `address`
                                           and named `address.json` in the schema's references) with
                                           JSONSerializer, which validates them and registers TOPIC-value; keys o-i
  read-protobuf BOOTSTRAP REGISTRY TOPIC N [key]
                                           every record of TOPIC once N have arrived, each decoded with
                                           ProtobufDeserializer into the first message of the schema its id names
                                           (fetched from the registry as a serialized descriptor and built by
                                           google.protobuf itself): one line `key<TAB>json` (proto field names,
                                           defaults included; with `key` the key is decoded alike and printed as
                                           JSON), sorted; then a line `schema<TAB>id<TAB>text` per
                                           schema id seen (the registry's text) and `indexes<TAB>hex` per index
                                           bytes seen
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING


def partitions(c, topic):
    md = c.list_topics(topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return []
    return sorted(t.partitions.keys())


READING_PROTO = """syntax = "proto3";
package shop;

import "google/protobuf/timestamp.proto";

message Reading {
  string sensor = 1;
  int32 amount = 2;
  uint32 hits = 3;
  double temp = 4;
  bool ok = 5;
  Kind kind = 6;
  repeated string tags = 7;
  Place place = 8;
  map<string, int32> attrs = 9;
  google.protobuf.Timestamp taken = 10;
  uint64 big = 11;
  Kind alt = 12;
  oneof via {
    string wire = 13;
    int32 radio = 14;
  }
}

message Place {
  string city = 1;
  int64 zip = 2;
}

enum Kind {
  IDLE = 0;
  HOT = 1;
}
"""


ADDRESS_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {"city": {"type": "string"}, "zip": {"type": "integer", "connect.type": "int32"}},
}

ORDER_JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "definitions": {
        "Item": {"type": "object", "properties": {"sku": {"type": "string"},
                                                  "qty": {"type": "integer", "connect.type": "int32"}}},
    },
    "properties": {
        "id": {"type": "string"},
        "shop": {"type": "string"},
        "amount": {"type": "number"},
        "item": {"$ref": "#/definitions/Item"},
        "lines": {"type": "array", "items": {"$ref": "#/definitions/Item"}},
        "note": {"oneOf": [{"type": "null"}, {"type": "string"}]},
        "ship_to": {"oneOf": [{"type": "null"}, {"$ref": "address.json"}]},
    },
    "required": ["id"],
}


def reading_class():
    """shop.Reading of READING_PROTO, built from a FileDescriptorProto."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
    F = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.DescriptorPool()
    ts = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
    pool.Add(ts)
    fd = descriptor_pb2.FileDescriptorProto(name="shop/reading.proto", package="shop", syntax="proto3",
                                            dependency=["google/protobuf/timestamp.proto"])
    r = fd.message_type.add(name="Reading")
    opt = F.LABEL_OPTIONAL

    def field(m, name, number, type_, label=opt, type_name=None):
        f = m.field.add(name=name, number=number, type=type_, label=label, json_name=name)
        if type_name:
            f.type_name = type_name

    field(r, "sensor", 1, F.TYPE_STRING)
    field(r, "amount", 2, F.TYPE_INT32)
    field(r, "hits", 3, F.TYPE_UINT32)
    field(r, "temp", 4, F.TYPE_DOUBLE)
    field(r, "ok", 5, F.TYPE_BOOL)
    field(r, "kind", 6, F.TYPE_ENUM, type_name=".shop.Kind")
    field(r, "tags", 7, F.TYPE_STRING, label=F.LABEL_REPEATED)
    field(r, "place", 8, F.TYPE_MESSAGE, type_name=".shop.Place")
    entry = r.nested_type.add(name="AttrsEntry")
    entry.options.map_entry = True
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_INT32)
    field(r, "attrs", 9, F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".shop.Reading.AttrsEntry")
    field(r, "taken", 10, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    field(r, "big", 11, F.TYPE_UINT64)
    field(r, "alt", 12, F.TYPE_ENUM, type_name=".shop.Kind")
    r.oneof_decl.add(name="via")
    for name, number, type_ in (("wire", 13, F.TYPE_STRING), ("radio", 14, F.TYPE_INT32)):
        r.field.add(name=name, number=number, type=type_, label=opt, json_name=name, oneof_index=0)
    place = fd.message_type.add(name="Place")
    field(place, "city", 1, F.TYPE_STRING)
    field(place, "zip", 2, F.TYPE_INT64)
    kind = fd.enum_type.add(name="Kind")
    kind.value.add(name="IDLE", number=0)
    kind.value.add(name="HOT", number=1)
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Reading"))


def main():
    cmd, bootstrap = sys.argv[1], sys.argv[2]
    if cmd == "produce":
        topic, first, last = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        errors = []
        for i in range(first, last):
            p.produce(topic, key=f"id-{i}".encode(),
                      value=json.dumps({"item": f"w{i}", "qty": i, "price": 1.5}).encode(),
                      on_delivery=lambda err, msg: errors.append(err) if err else None)
        left = p.flush(30)
        if left or errors:
            print(f"FAIL: {left} undelivered, errors {errors}", file=sys.stderr)
            sys.exit(1)
        print(f"ok produced {last - first}")
    elif cmd == "produce-txn":
        # The same records in one committed transaction: the topic's last offset is the commit marker.
        topic, first, last = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"sql-test-{topic}"})
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(first, last):
            p.produce(topic, key=f"id-{i}".encode(),
                      value=json.dumps({"item": f"w{i}", "qty": i, "price": 1.5}).encode())
        p.commit_transaction(30)
        print(f"ok produced {last - first} in a transaction")
    elif cmd == "read":
        topic, expected = sys.argv[3], int(sys.argv[4])
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sql-test-reader", "enable.auto.commit": False})
        deadline = time.time() + 60
        parts = []
        while not parts and time.time() < deadline:
            parts = partitions(c, topic)
            if not parts:
                time.sleep(0.5)
        # Wait (bounded) until the topic holds at least EXPECTED records, then read them all: more than expected
        # (a duplicate) shows up too.
        total = 0
        while time.time() < deadline:
            total = 0
            for p in parts:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += hi - lo
            if total >= expected:
                break
            time.sleep(0.5)
        time.sleep(1.0)
        ends = {}
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi > lo:
                ends[p] = hi
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out = []
        while ends and time.time() < deadline + 30:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                print(f"FAIL: {m.error()}", file=sys.stderr)
                sys.exit(1)
            out.append(f"{(m.key() or b'').decode()}\t{m.value().decode()}")
            if m.offset() + 1 >= ends.get(m.partition(), 0):
                ends.pop(m.partition(), None)
        c.close()
        for line in sorted(out):
            print(line)
    elif cmd == "committed":
        group, topic = sys.argv[3], sys.argv[4]
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        tps = [TopicPartition(topic, p) for p in partitions(c, topic)]
        got = c.committed(tps, timeout=10)
        print(sum(tp.offset for tp in got if tp.offset >= 0))
        c.close()
    elif cmd == "produce-raw":
        topic, key, value = sys.argv[3], sys.argv[4], sys.argv[5]
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        errors = []
        p.produce(topic, key=key.encode(), value=value.encode(), partition=0,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
        if p.flush(30) or errors:
            print(f"FAIL: {errors}", file=sys.stderr)
            sys.exit(1)
        print("ok produced 1")
    elif cmd == "produce-big":
        topic, n, size = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
        value = json.dumps({"v": "x" * size}).encode()
        for _ in range(n):
            while True:
                try:
                    p.produce(topic, value=value)
                    break
                except BufferError:
                    p.poll(0.1)
        if p.flush(60):
            print("FAIL: undelivered", file=sys.stderr)
            sys.exit(1)
        print(f"ok produced {n}")
    elif cmd == "produce-avro":
        from confluent_kafka.admin import AdminClient, NewTopic
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import SerializationContext, MessageField
        url, topic, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            f.result(30)
        schema = json.dumps({"type": "record", "name": "Product", "namespace": "com.example", "fields": [
            {"name": "sku", "type": "string"}, {"name": "price", "type": "double"},
            {"name": "qty", "type": "int"}, {"name": "tags", "type": {"type": "array", "items": "string"}}]})
        ser = AvroSerializer(SchemaRegistryClient({"url": url}), schema)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for i in range(n):
            v = {"sku": f"sku-{i}", "price": 1.5 * i, "qty": i, "tags": [f"t{i}"]}
            p.produce(topic, key=f"sku-{i}".encode(), value=ser(v, SerializationContext(topic, MessageField.VALUE)))
        if p.flush(30):
            print("FAIL: undelivered", file=sys.stderr)
            sys.exit(1)
        print(f"ok produced {n}")
    elif cmd == "read-avro":
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import SerializationContext, MessageField
        url, topic, expected = sys.argv[3], sys.argv[4], int(sys.argv[5])
        de = AvroDeserializer(SchemaRegistryClient({"url": url}))
        deadline = time.time() + 60
        out = []
        # Not assign(): the group starts at the beginning (auto.offset.reset), and the loop ends once EXPECTED
        # have arrived plus a second for any extra (a duplicate shows up).
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sql-test-avro-reader",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        quiet_until = None
        while time.time() < deadline and (quiet_until is None or time.time() < quiet_until):
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # partition EOF
                    continue
                print(f"FAIL: {m.error()}", file=sys.stderr)
                sys.exit(1)
            check_magic = m.value()[0] == 0
            if not check_magic:
                print(f"FAIL: not in the registry wire format: {m.value()[:10]}", file=sys.stderr)
                sys.exit(1)
            v = de(m.value(), SerializationContext(topic, MessageField.VALUE))
            out.append(f"{(m.key() or b'').decode(errors='replace')}\t{json.dumps(v, sort_keys=True)}")
            if len(out) >= expected and quiet_until is None:
                quiet_until = time.time() + 1.0
        c.close()
        for line in sorted(out):
            print(line)
    elif cmd == "produce-protobuf":
        from confluent_kafka.admin import AdminClient, NewTopic
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
        from confluent_kafka.serialization import SerializationContext, MessageField
        url, topic, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            f.result(30)
        Reading = reading_class()
        ser = ProtobufSerializer(Reading, SchemaRegistryClient({"url": url}), {"use.deprecated.format": False})
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for i in range(n):
            r = Reading(sensor=f"s{i % 2}", amount=10 * i, hits=4_000_000_000 + i, temp=20.5 + i, ok=i % 2 == 0,
                        kind=1 if i >= 3 else 0, tags=[f"t{i}"])
            if i != 2:
                r.place.city = f"c{i}"
                r.place.zip = 1000 + i
            r.attrs["a"] = i
            r.taken.seconds = 1_700_000_000 + i
            r.taken.nanos = 250_000_000
            # Above 2^63 (SQL reads it as Java's long does); an enum number Kind does not define (proto3 enums
            # are open); the oneof set to either member or neither.
            r.big = 2**63 + i
            r.alt = 7 if i == 4 else 1
            if i % 3 == 0:
                r.wire = f"w{i}"
            elif i % 3 == 1:
                r.radio = i
            p.produce(topic, key=f"r-{i}".encode(), value=ser(r, SerializationContext(topic, MessageField.VALUE)))
        if p.flush(30):
            print("FAIL: undelivered", file=sys.stderr)
            sys.exit(1)
        print(f"ok produced {n}")
    elif cmd == "produce-json-sr":
        from confluent_kafka.admin import AdminClient, NewTopic
        from confluent_kafka.schema_registry import Schema, SchemaReference, SchemaRegistryClient
        from confluent_kafka.schema_registry.json_schema import JSONSerializer
        from confluent_kafka.serialization import SerializationContext, MessageField
        url, topic, n = sys.argv[3], sys.argv[4], int(sys.argv[5])
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            f.result(30)
        sr = SchemaRegistryClient({"url": url})
        sr.register_schema("address", Schema(json.dumps(ADDRESS_JSON_SCHEMA), "JSON"))
        version = sr.get_latest_version("address").version
        schema = Schema(json.dumps(ORDER_JSON_SCHEMA), "JSON",
                        [SchemaReference("address.json", "address", version)])
        ser = JSONSerializer(schema, sr)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        for i in range(n):
            v = {"id": f"o-{i}", "shop": f"s{i % 2}", "amount": 2.5 * i, "item": {"sku": f"sku-{i}", "qty": i},
                 "lines": [{"sku": f"l{i}", "qty": 10 + i}],
                 "note": None if i % 2 else f"note {i}",
                 "ship_to": None if i == 1 else {"city": f"c{i}", "zip": 1000 + i}}
            p.produce(topic, key=f"o-{i}".encode(), value=ser(v, SerializationContext(topic, MessageField.VALUE)))
        if p.flush(30):
            print("FAIL: undelivered", file=sys.stderr)
            sys.exit(1)
        print(f"ok produced {n}")
    elif cmd == "read-protobuf":
        import base64
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
        from confluent_kafka.serialization import SerializationContext, MessageField
        from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory, timestamp_pb2
        url, topic, expected = sys.argv[3], sys.argv[4], int(sys.argv[5])
        with_key = sys.argv[6:] == ["key"]
        sr = SchemaRegistryClient({"url": url})
        deserializers, schemas, indexes = {}, {}, set()

        def deserializer(schema_id):
            if schema_id not in deserializers:
                # Two clients: one caches a schema by id whatever the format asked.
                schemas[schema_id] = SchemaRegistryClient({"url": url}).get_schema(schema_id).schema_str
                serialized = sr.get_schema(schema_id, fmt="serialized").schema_str
                fd = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(serialized))
                pool = descriptor_pool.DescriptorPool()
                ts = descriptor_pb2.FileDescriptorProto()
                timestamp_pb2.DESCRIPTOR.CopyToProto(ts)
                pool.Add(ts)
                pool.Add(fd)
                first = fd.message_type[0].name
                name = f"{fd.package}.{first}" if fd.package else first
                cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
                deserializers[schema_id] = ProtobufDeserializer(cls, {"use.deprecated.format": False}, sr)
            return deserializers[schema_id]

        deadline = time.time() + 60
        out = []
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sql-test-protobuf-reader",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.subscribe([topic])
        quiet_until = None
        while time.time() < deadline and (quiet_until is None or time.time() < quiet_until):
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # partition EOF
                    continue
                print(f"FAIL: {m.error()}", file=sys.stderr)
                sys.exit(1)
            value = m.value()
            if value[0] != 0:
                print(f"FAIL: not in the registry wire format: {value[:10]}", file=sys.stderr)
                sys.exit(1)
            schema_id = int.from_bytes(value[1:5], "big")
            indexes.add(value[5:6].hex())
            msg = deserializer(schema_id)(value, SerializationContext(topic, MessageField.VALUE))
            v = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
            if with_key:
                key = m.key()
                key_id = int.from_bytes(key[1:5], "big")
                k = deserializer(key_id)(key, SerializationContext(topic, MessageField.KEY))
                key = json.dumps(json_format.MessageToDict(k, preserving_proto_field_name=True,
                                                           always_print_fields_with_no_presence=True),
                                 sort_keys=True)
            else:
                key = (m.key() or b'').decode(errors='replace')
            out.append(f"{key}\t{json.dumps(v, sort_keys=True)}")
            if len(out) >= expected and quiet_until is None:
                quiet_until = time.time() + 1.0
        c.close()
        for line in sorted(out):
            print(line)
        for schema_id, text in sorted(schemas.items()):
            print(f"schema\t{schema_id}\t{json.dumps(text)}")
        for i in sorted(indexes):
            print(f"indexes\t{i}")
    else:
        print(f"unknown command {cmd}", file=sys.stderr)
        sys.exit(2)


main()
