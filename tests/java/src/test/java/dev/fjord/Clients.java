package dev.fjord;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.function.Predicate;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/** Client configurations and bounded helpers shared by the tests. */
final class Clients {
    static final Duration TIMEOUT = Duration.ofSeconds(60);

    private Clients() {
    }

    static Admin admin(FjordBroker b) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        return Admin.create(p);
    }

    static Properties producerProps(FjordBroker b) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        return p;
    }

    static KafkaProducer<String, String> producer(FjordBroker b, Object... kv) {
        Properties p = producerProps(b);
        for (int i = 0; i < kv.length; i += 2) {
            p.put(kv[i], kv[i + 1]);
        }
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(FjordBroker b, Object... kv) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        for (int i = 0; i < kv.length; i += 2) {
            p.put(kv[i], kv[i + 1]);
        }
        return new KafkaConsumer<>(p);
    }

    static void createTopic(FjordBroker b, String name, int partitions) throws Exception {
        try (Admin a = admin(b)) {
            // The broker's default.replication.factor: 1 on one broker, 3 on a cluster.
            a.createTopics(List.of(new NewTopic(name, java.util.Optional.of(partitions), java.util.Optional.empty())))
                    .all().get();
        }
    }

    /** Polls until {@code done} holds for everything read so far, or fails after {@link #TIMEOUT}. */
    static List<ConsumerRecord<String, String>> pollUntil(KafkaConsumer<String, String> c,
            Predicate<List<ConsumerRecord<String, String>>> done) {
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (!done.test(out)) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + TIMEOUT + " with " + out.size() + " records");
            }
            c.poll(Duration.ofMillis(200)).forEach(out::add);
        }
        return out;
    }
}
