// kafkajs transactions against a Fjord broker: a committed, an aborted and a committed-with-offsets transaction
// (sendOffsets = AddOffsetsToTxn + TxnOffsetCommit); a kafkajs consumer (read_committed by default) sees only
// committed values, and the offsets sent in the transaction are the group's committed offsets.
const { Kafka, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
const kafka = new Kafka({ clientId: 'fjord-e2e-txn', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });

function check(cond, msg) {
  if (!cond) {
    console.error(`FAIL: ${msg}`);
    process.exit(1);
  }
}

const msgs = (tag, from, to) => {
  const out = [];
  for (let i = from; i < to; i++) out.push({ value: `${tag}-${i}`, partition: 0 });
  return out;
};

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: 'js-txn', numPartitions: 1 }], waitForLeaders: true });

  const producer = kafka.producer({ transactionalId: 'js-txn-app', idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();

  let txn = await producer.transaction();
  await txn.send({ topic: 'js-txn', messages: msgs('c', 0, 10) });
  await txn.commit();

  txn = await producer.transaction();
  await txn.send({ topic: 'js-txn', messages: msgs('a', 0, 10) });
  await txn.abort();

  txn = await producer.transaction();
  await txn.send({ topic: 'js-txn', messages: msgs('c', 10, 15) });
  await txn.sendOffsets({ consumerGroupId: 'js-group', topics: [{ topic: 'js-txn', partitions: [{ partition: 0, offset: '5' }] }] });
  await txn.commit();
  await producer.disconnect();

  const offsets = await admin.fetchOffsets({ groupId: 'js-group', topics: ['js-txn'] });
  check(offsets[0].partitions[0].offset === '5', `offset sent in the transaction: ${JSON.stringify(offsets)}`);

  const consumer = kafka.consumer({ groupId: 'js-reader', readUncommitted: false });
  await consumer.connect();
  await consumer.subscribe({ topic: 'js-txn', fromBeginning: true });
  const seen = [];
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  const deadline = Date.now() + 30000;
  while (seen.length < 15 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1000)); // anything extra would arrive now
  await consumer.disconnect();
  await admin.disconnect();
  const want = [...msgs('c', 0, 10), ...msgs('c', 10, 15)].map((m) => m.value);
  check(JSON.stringify(seen) === JSON.stringify(want), `read_committed consumer saw ${JSON.stringify(seen)}`);
  console.log('ok');
}

main().catch((e) => {
  console.error(`FAIL: ${e.stack || e}`);
  process.exit(1);
});
