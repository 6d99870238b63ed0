package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;

import java.util.Collection;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Consumer groups with the Java consumer: the classic protocol with the eager range and the cooperative-sticky
 * assignors, static membership, and the KIP-848 consumer protocol. In every case a second member joins while
 * records flow and later leaves; with a commit after each poll, every record is consumed, and none twice.
 */
class GroupsTest {
    static FjordBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of(
                "offsets.topic.num.partitions", "4",
                "group.initial.rebalance.delay.ms", "0"));
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    private static KafkaConsumer<String, String> member(String kind, String group, int n) {
        List<Object> kv = new ArrayList<>(List.of(ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50"));
        switch (kind) {
            case "eager" -> kv.addAll(List.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                    RangeAssignor.class.getName()));
            case "cooperative" -> kv.addAll(List.of(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                    CooperativeStickyAssignor.class.getName()));
            case "static" -> kv.addAll(List.of(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, group + "-" + n,
                    ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000"));
            case "consumer" -> kv.addAll(List.of(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer"));
            default -> throw new IllegalArgumentException(kind);
        }
        return Clients.consumer(broker, kv.toArray());
    }

    /** Polls {@code c} (committing after each poll) until {@code done} holds, bounded. */
    private static void pollWhile(KafkaConsumer<String, String> c, List<String> seen, String what,
            java.util.function.BooleanSupplier done) {
        long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (!done.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, "timed out waiting for: " + what);
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                seen.add(r.value());
            }
            commit(c);
        }
    }

    /** Commits after a poll; during a rebalance the revocation callback has committed what is given up. */
    private static void commit(KafkaConsumer<String, String> c) {
        try {
            c.commitSync();
        } catch (RebalanceInProgressException e) {
            // Partitions being revoked were committed by the listener; the rest are committed next time.
        }
    }

    /** Subscribes committing the positions of revoked partitions first, as applications that must not repeat
     *  records do. */
    private static void subscribe(KafkaConsumer<String, String> c, String topic) {
        c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                c.commitSync();
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            }
        });
    }

    private static void produce(KafkaProducer<String, String> p, String topic, int from, int to) {
        for (int i = from; i < to; i++) {
            p.send(new ProducerRecord<>(topic, "k" + i, "v" + i));
        }
        p.flush();
    }

    @ParameterizedTest
    @ValueSource(strings = {"eager", "cooperative", "static", "consumer"})
    void membersShareTheWorkAndNoRecordIsLostOrRepeated(String kind) throws Exception {
        String topic = "java-group-" + kind;
        String group = "jg-" + kind;
        Clients.createTopic(broker, topic, 4);
        List<String> seen = Collections.synchronizedList(new ArrayList<>());
        AtomicBoolean stopSecond = new AtomicBoolean(false);
        Set<Integer> secondAssigned = Collections.synchronizedSet(new HashSet<>());
        try (KafkaProducer<String, String> p = Clients.producer(broker);
                KafkaConsumer<String, String> first = member(kind, group, 1)) {
            subscribe(first, topic);
            // Alone, the first member gets all four partitions and everything produced.
            produce(p, topic, 0, 200);
            pollWhile(first, seen, kind + ": first member alone", () -> seen.size() >= 200);
            assertEquals(4, first.assignment().size(), kind + ": " + first.assignment());
            // A second member joins: the partitions are shared.
            Thread second = new Thread(() -> {
                try (KafkaConsumer<String, String> c = member(kind, group, 2)) {
                    subscribe(c, topic);
                    while (!stopSecond.get()) {
                        for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(100))) {
                            seen.add(r.value());
                        }
                        commit(c);
                        c.assignment().forEach(tp -> secondAssigned.add(tp.partition()));
                    }
                }
            });
            second.start();
            pollWhile(first, seen, kind + ": the partitions shared", () -> first.assignment().size() == 2
                    && secondAssigned.size() >= 2);
            produce(p, topic, 200, 400);
            pollWhile(first, seen, kind + ": both members consume", () -> seen.size() >= 400);
            // It leaves: the first member takes everything back.
            stopSecond.set(true);
            second.join(30_000);
            assertTrue(!second.isAlive(), kind + ": the second member closed");
            pollWhile(first, seen, kind + ": the first member has all partitions again",
                    () -> first.assignment().size() == 4);
            produce(p, topic, 400, 600);
            pollWhile(first, seen, kind + ": the rest", () -> seen.size() >= 600);
            // Nothing more arrives.
            for (int i = 0; i < 5; i++) {
                first.poll(Duration.ofMillis(100)).forEach(r -> seen.add(r.value()));
            }
        }
        assertEquals(600, seen.size(), kind + ": every record once");
        assertEquals(600, new HashSet<>(seen).size(), kind + ": no record twice");
    }
}
