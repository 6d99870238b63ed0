// kafkajs against a Fjord broker: admin create and metadata, produce with keys and headers (gzip too),
// fetchTopicOffsets. kafkajs consumers always join a group, so the test reads the data back with kcat until
// the consumer-group issue lands.
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
const kafka = new Kafka({ clientId: 'fjord-e2e', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });

function check(cond, msg) {
  if (!cond) {
    console.error(`FAIL: ${msg}`);
    process.exit(1);
  }
}

async function main() {
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({ topics: [{ topic: 'js-topic', numPartitions: 2 }], waitForLeaders: true });
  check(created === true, 'createTopics returned false');
  const meta = await admin.fetchTopicMetadata({ topics: ['js-topic'] });
  check(meta.topics[0].partitions.length === 2, 'two partitions');

  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 200; i++) {
    messages.push({ key: `k${i}`, value: `v${i}`, partition: i % 2, headers: { n: `${i}` } });
  }
  await producer.send({ topic: 'js-topic', acks: -1, messages: messages.slice(0, 100) });
  await producer.send({ topic: 'js-topic', acks: -1, compression: CompressionTypes.GZIP, messages: messages.slice(100) });
  await producer.disconnect();

  const offsets = await admin.fetchTopicOffsets('js-topic');
  const total = offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  check(total === 200, `fetchTopicOffsets total ${total}`);
  await admin.disconnect();
  return offsets;
}

main()
  .then((offsets) => {
    console.log(JSON.stringify(offsets));
    console.log('ok');
  })
  .catch((e) => {
    console.error(`FAIL: ${e.stack || e}`);
    process.exit(1);
  });
