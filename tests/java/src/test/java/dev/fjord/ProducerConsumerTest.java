package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** The Java producer and consumer: acks, every compression codec, headers, idempotence, seeks and lookups. */
class ProducerConsumerTest {
    static FjordBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of());
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    @Test
    void everyAcksAndCompressionRoundTripsKeysValuesAndHeaders() throws Exception {
        String topic = "java-codecs";
        Clients.createTopic(broker, topic, 1);
        List<String> expected = new ArrayList<>();
        for (String acks : List.of("0", "1", "all")) {
            for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
                // acks=0 and 1 cannot be idempotent; acks=all keeps the 4.x default (idempotence on).
                boolean idempotent = acks.equals("all");
                try (KafkaProducer<String, String> p = Clients.producer(broker,
                        ProducerConfig.ACKS_CONFIG, acks,
                        ProducerConfig.COMPRESSION_TYPE_CONFIG, codec,
                        ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, String.valueOf(idempotent),
                        ProducerConfig.LINGER_MS_CONFIG, "5")) {
                    for (int i = 0; i < 20; i++) {
                        String v = acks + "-" + codec + "-" + i + "-" + "x".repeat(i * 10);
                        ProducerRecord<String, String> r = new ProducerRecord<>(topic, 0, "k" + i, v);
                        r.headers().add("codec", codec.getBytes(StandardCharsets.UTF_8));
                        p.send(r);
                        expected.add(v);
                    }
                    p.flush();
                }
            }
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            TopicPartition tp = new TopicPartition(topic, 0);
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.pollUntil(c, l -> l.size() >= expected.size());
            assertEquals(expected, got.stream().map(ConsumerRecord::value).toList());
            for (int i = 0; i < got.size(); i++) {
                ConsumerRecord<String, String> r = got.get(i);
                assertEquals(i, r.offset());
                assertEquals("k" + (i % 20), r.key());
                Header h = r.headers().lastHeader("codec");
                assertNotNull(h, "header at " + i);
                String codec = r.value().split("-")[1];
                assertArrayEquals(codec.getBytes(StandardCharsets.UTF_8), h.value());
            }
        }
    }

    @Test
    void idempotentSendsGetConsecutiveOffsetsAndMetadata() throws Exception {
        String topic = "java-idem";
        Clients.createTopic(broker, topic, 3);
        try (KafkaProducer<String, String> p = Clients.producer(broker,
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true",
                ProducerConfig.MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, "5")) {
            Map<Integer, Long> next = new HashMap<>();
            for (int i = 0; i < 300; i++) {
                RecordMetadata m = p.send(new ProducerRecord<>(topic, i % 3, null, "v" + i)).get();
                long want = next.getOrDefault(m.partition(), 0L);
                assertEquals(want, m.offset(), "partition " + m.partition());
                next.put(m.partition(), want + 1);
            }
            assertEquals(Map.of(0, 100L, 1, 100L, 2, 100L), next);
        }
    }

    @Test
    void seeksOffsetsForTimesAndPauseResume() throws Exception {
        String topic = "java-seek";
        Clients.createTopic(broker, topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 100_000;
        try (KafkaProducer<String, String> p = Clients.producer(broker)) {
            for (int i = 0; i < 10; i++) {
                p.send(new ProducerRecord<>(topic, 0, base + i * 1000L, null, "v" + i)).get();
            }
        }
        try (KafkaConsumer<String, String> c = Clients.consumer(broker)) {
            c.assign(List.of(tp));
            Map<TopicPartition, Long> end = c.endOffsets(List.of(tp));
            Map<TopicPartition, Long> begin = c.beginningOffsets(List.of(tp));
            assertEquals(10L, end.get(tp));
            assertEquals(0L, begin.get(tp));
            Map<TopicPartition, OffsetAndTimestamp> at = c.offsetsForTimes(Map.of(tp, base + 4500L));
            assertEquals(5L, at.get(tp).offset());
            assertEquals(base + 5000L, at.get(tp).timestamp());
            assertEquals(null, c.offsetsForTimes(Map.of(tp, base + 999_999L)).get(tp));

            c.seek(tp, 7);
            List<ConsumerRecord<String, String>> got = Clients.pollUntil(c, l -> l.size() >= 3);
            assertEquals(List.of("v7", "v8", "v9"), got.stream().map(ConsumerRecord::value).toList());

            c.seekToBeginning(List.of(tp));
            c.pause(List.of(tp));
            assertEquals(Set.of(tp), c.paused());
            assertTrue(c.poll(Duration.ofMillis(500)).isEmpty(), "a paused partition returns nothing");
            c.resume(List.of(tp));
            got = Clients.pollUntil(c, l -> l.size() >= 10);
            assertEquals("v0", got.get(0).value());

            c.seekToEnd(List.of(tp));
            assertEquals(10L, c.position(tp));
        }
    }
}
