"""confluent-kafka's SchemaRegistryClient, AvroSerializer and AvroDeserializer with Fjord's schema contexts.

Usage: registry_contexts.py BOOTSTRAP REGISTRY_URL TOPIC
One client on the registry's URL (the default context) and one on REGISTRY_URL/contexts/.team (Confluent's way to
put a client in a context): the same subject TOPIC-value gets a different schema and its own id 1 in each; the
default client sees both subjects qualified; records written through the team client are read back by a team
deserializer (which fetches their schema by id inside the context). Prints one JSON summary line; fails loudly.
"""
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient, Schema
from confluent_kafka.schema_registry.avro import AvroSerializer, AvroDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField

from common import RF, check, consume_all

PLAIN = json.dumps({"type": "record", "name": "Order", "fields": [{"name": "id", "type": "long"}]})
TEAM = json.dumps({"type": "record", "name": "TeamOrder", "fields": [{"name": "sku", "type": "string"}]})


def main():
    bootstrap, url, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, RF)]).values():
        f.result(30)
    subject = f"{topic}-value"
    default = SchemaRegistryClient({"url": url})
    team = SchemaRegistryClient({"url": url.rstrip("/") + "/contexts/.team"})
    plain_id = default.register_schema(subject, Schema(PLAIN, "AVRO"))
    team_id = team.register_schema(subject, Schema(TEAM, "AVRO"))
    check(plain_id == 1 and team_id == 1, f"each context numbers from 1: {plain_id} {team_id}")
    subjects = default.get_subjects()
    check(subjects == [f":.team:{subject}", subject], f"subjects {subjects}")
    check(team.get_subjects() == [f":.team:{subject}"], f"team subjects {team.get_subjects()}")
    check(default.get_schema(1).schema_str == PLAIN, "id 1 of the default context")
    check(team.get_schema(1).schema_str == TEAM, "id 1 of .team")
    check(default.get_latest_version(f":.team:{subject}").schema.schema_str == TEAM, "qualified subject")

    ser = AvroSerializer(team, TEAM, conf={"auto.register.schemas": False, "use.latest.version": True})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    sent = [{"sku": "t-1"}, {"sku": "t-2"}]
    for r in sent:
        producer.produce(topic, value=ser(r, SerializationContext(topic, MessageField.VALUE)))
    check(producer.flush(30) == 0, "undelivered messages")
    de = AvroDeserializer(team)
    got = [de(m.value(), SerializationContext(topic, MessageField.VALUE))
           for m in consume_all(bootstrap, topic, [0], len(sent))]
    check(got == sent, f"decoded {got}, sent {sent}")
    print(json.dumps({"plain_id": plain_id, "team_id": team_id, "subjects": subjects, "decoded": got}))


if __name__ == "__main__":
    main()
