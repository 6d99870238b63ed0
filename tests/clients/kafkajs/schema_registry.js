// @kafkajs/confluent-schema-registry against Fjord's registry: register an Avro schema (and a compatible second
// version), encode records in Confluent's wire format, produce them with kafkajs, and decode them again with a
// fresh client that fetches the writer schema by id. Prints the topic's name and `ok`; fails loudly.
//
// Usage: node schema_registry.js BOOTSTRAP REGISTRY_URL TOPIC
const { Kafka, logLevel } = require('kafkajs');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

const [bootstrap, url, topic] = process.argv.slice(2);

function check(cond, msg) {
  if (!cond) {
    console.error(`FAIL: ${msg}`);
    process.exit(1);
  }
}

const V1 = {
  type: 'record', name: 'Click', namespace: 'com.example',
  fields: [{ name: 'page', type: 'string' }, { name: 'ms', type: 'long' }],
};
const V2 = {
  ...V1,
  fields: [...V1.fields, { name: 'ref', type: ['null', 'string'], default: null }],
};

async function main() {
  const registry = new SchemaRegistry({ host: url });
  const subject = `${topic}-value`;
  const { id: id1 } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(V1) }, { subject });
  const { id: id2 } = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(V2) }, { subject });
  check(id1 !== id2, `two versions, two ids (${id1}, ${id2})`);
  const again = await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(V1) }, { subject });
  check(again.id === id1, `re-registering gives the same id (${again.id} vs ${id1})`);
  check((await registry.getLatestSchemaId(subject)) === id2, 'latest schema id');
  check((await registry.getRegistryId(subject, 1)) === id1, 'registry id of version 1');

  const records = [
    [id1, { page: '/a', ms: 1 }],
    [id2, { page: '/b', ms: 2, ref: 'x' }],
    [id2, { page: '/c', ms: 3, ref: null }],
  ];
  const encoded = [];
  for (const [id, r] of records) {
    const buf = await registry.encode(id, r);
    check(buf[0] === 0 && buf.readUInt32BE(1) === id, 'Confluent wire format: magic byte 0, then the id');
    encoded.push(buf);
  }

  // An incompatible schema is refused.
  let refused = false;
  try {
    await registry.register(
      { type: SchemaType.AVRO, schema: JSON.stringify({ ...V1, fields: [{ name: 'page', type: 'int' }] }) },
      { subject },
    );
  } catch (e) {
    refused = /409|incompatible/i.test(String(e.message || e));
  }
  check(refused, 'an incompatible schema was not refused with 409');

  const kafka = new Kafka({ clientId: 'fjord-e2e', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: encoded.map((value) => ({ value })) });
  await producer.disconnect();

  // A fresh client has nothing cached: it fetches each writer schema by the id in the record.
  const fresh = new SchemaRegistry({ host: url });
  for (let i = 0; i < encoded.length; i++) {
    const got = await fresh.decode(encoded[i]);
    const want = { ref: null, ...records[i][1] };
    if (records[i][0] === id1) delete want.ref;
    check(JSON.stringify(got, Object.keys(got).sort()) === JSON.stringify(want, Object.keys(want).sort()),
      `decoded ${JSON.stringify(got)}, sent ${JSON.stringify(want)}`);
  }
  console.log(JSON.stringify({ topic, ids: [id1, id2] }));
}

main()
  .then(() => console.log('ok'))
  .catch((e) => {
    console.error(`FAIL: ${e.stack || e}`);
    process.exit(1);
  });
