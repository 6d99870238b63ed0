package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.clients.admin.Admin;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Transactions with the Java producer: commit, abort, offsets in a transaction, a fenced zombie, read_committed. */
class TransactionsTest {
    static FjordBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of(
                "transaction.state.log.num.partitions", "4",
                "offsets.topic.num.partitions", "4",
                "group.initial.rebalance.delay.ms", "0"));
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    private static KafkaProducer<String, String> txnProducer(String id) {
        return Clients.producer(broker, ProducerConfig.TRANSACTIONAL_ID_CONFIG, id);
    }

    @Test
    void committedAndAbortedTransactionsAndReadCommitted() throws Exception {
        String topic = "java-txn";
        Clients.createTopic(broker, topic, 2);
        try (KafkaProducer<String, String> p = txnProducer("java-txn-1")) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, "c1-" + i));
            }
            p.commitTransaction();
            p.beginTransaction();
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, i % 2, null, "a-" + i));
            }
            p.flush();
            p.abortTransaction();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, 0, null, "c2"));
            p.commitTransaction();
        }
        List<TopicPartition> tps = List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1));
        try (KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")) {
            c.assign(tps);
            c.seekToBeginning(tps);
            List<ConsumerRecord<String, String>> got = Clients.pollUntil(c, l -> l.size() >= 11);
            List<String> values = got.stream().map(ConsumerRecord::value).sorted().toList();
            assertEquals(11, values.size());
            assertEquals(0, values.stream().filter(v -> v.startsWith("a-")).count(), "aborted values hidden");
            // Nothing else arrives: the committed end is reached.
            assertEquals(0, c.poll(java.time.Duration.ofMillis(500)).count());
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_uncommitted")) {
            c.assign(tps);
            c.seekToBeginning(tps);
            List<ConsumerRecord<String, String>> got = Clients.pollUntil(c, l -> l.size() >= 21);
            assertEquals(10, got.stream().filter(r -> r.value().startsWith("a-")).count());
        }
    }

    @Test
    void offsetsSentInATransactionAreCommittedWithIt() throws Exception {
        String in = "java-ctp-in";
        String out = "java-ctp-out";
        Clients.createTopic(broker, in, 1);
        Clients.createTopic(broker, out, 1);
        try (KafkaProducer<String, String> p = Clients.producer(broker)) {
            for (int i = 0; i < 5; i++) {
                p.send(new ProducerRecord<>(in, 0, null, "in-" + i)).get();
            }
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker, ConsumerConfig.GROUP_ID_CONFIG, "java-ctp");
                KafkaProducer<String, String> p = txnProducer("java-ctp-1")) {
            p.initTransactions();
            c.subscribe(List.of(in));
            List<ConsumerRecord<String, String>> got = Clients.pollUntil(c, l -> l.size() >= 5);
            p.beginTransaction();
            for (ConsumerRecord<String, String> r : got) {
                p.send(new ProducerRecord<>(out, 0, null, r.value().toUpperCase()));
            }
            TopicPartition tp = new TopicPartition(in, 0);
            p.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(5)), c.groupMetadata());
            p.commitTransaction();
            try (Admin a = Clients.admin(broker)) {
                Map<TopicPartition, OffsetAndMetadata> committed =
                        a.listConsumerGroupOffsets("java-ctp").partitionsToOffsetAndMetadata().get();
                assertEquals(5L, committed.get(tp).offset());
            }
        }
    }

    @Test
    void aNewInstanceFencesTheZombieAndAbortsItsTransaction() throws Exception {
        String topic = "java-zombie";
        Clients.createTopic(broker, topic, 1);
        KafkaProducer<String, String> zombie = txnProducer("java-zombie-1");
        zombie.initTransactions();
        zombie.beginTransaction();
        zombie.send(new ProducerRecord<>(topic, 0, null, "zombie")).get();
        try (KafkaProducer<String, String> fresh = txnProducer("java-zombie-1")) {
            fresh.initTransactions();
            fresh.beginTransaction();
            fresh.send(new ProducerRecord<>(topic, 0, null, "fresh"));
            fresh.commitTransaction();
            // As against Kafka: the partition refuses the zombie's older epoch (INVALID_PRODUCER_EPOCH, which the
            // client reports as fenced or abortable) and its commit cannot succeed.
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> zombie.send(new ProducerRecord<>(topic, 0, null, "late")).get());
            assertTrue(e.getCause() instanceof InvalidProducerEpochException
                    || e.getCause() instanceof ProducerFencedException, e.getCause().toString());
            assertThrows(KafkaException.class, zombie::commitTransaction);
        } finally {
            zombie.close(java.time.Duration.ZERO);
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.pollUntil(c, l -> !l.isEmpty());
            assertEquals(List.of("fresh"), got.stream().map(ConsumerRecord::value).toList());
        }
    }
}
