"""confluent-kafka's JSONSerializer/JSONDeserializer on the other side of `fjord produce/consume
--value-format json-schema`.

Usage:
  json_schema_tools.py write BOOTSTRAP REGISTRY_URL TOPIC SCHEMA_JSON
      serializes the JSON lines of standard input with JSONSerializer(SCHEMA_JSON) (which registers the schema
      under TOPIC-value and validates each record) and produces them to TOPIC.
  json_schema_tools.py read BOOTSTRAP REGISTRY_URL TOPIC COUNT
      reads COUNT records from the start of TOPIC, decodes each with JSONDeserializer (the writer schema
      fetched by the id in the record) and prints one JSON line per record: {"id": schema id, "value": ...}.
Fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer, JSONDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField

from common import check, consume_all


def main():
    mode, bootstrap, url, topic = sys.argv[1:5]
    sr = SchemaRegistryClient({"url": url})
    ctx = SerializationContext(topic, MessageField.VALUE)
    if mode == "write":
        ser = JSONSerializer(sys.argv[5], sr)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for line in sys.stdin:
            if line.strip():
                producer.produce(topic, value=ser(json.loads(line), ctx))
        check(producer.flush(30) == 0, "undelivered messages")
    elif mode == "read":
        count = int(sys.argv[5])
        # No schema given: the deserializer uses the writer schema the record's id names.
        de = JSONDeserializer(None, schema_registry_client=sr)
        for m in consume_all(bootstrap, topic, [0], count):
            value = m.value()
            check(value[0] == 0, "Confluent wire format starts with magic byte 0")
            print(json.dumps({"id": int.from_bytes(value[1:5], "big"), "value": de(value, ctx)}))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
