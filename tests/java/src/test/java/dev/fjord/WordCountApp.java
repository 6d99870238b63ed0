package dev.fjord;

import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;

/**
 * The Kafka Streams application that {@link StreamsTest} runs against Fjord, in its own JVM so that the test can
 * SIGKILL it mid-stream: a word count over tumbling event-time windows of {@link #WINDOW} with a grace period of
 * {@link #GRACE}, exactly once (exactly_once_v2).
 *
 * <p>Lines from the input topic are split into words, re-keyed by word (the repartition topic
 * {@code <app>-words-repartition}), counted per window in the persistent window store {@code counts} (changelog
 * {@code <app>-counts-changelog}), and written twice: every update of a count to the updates topic, and only the
 * final count of each window, once the window has closed, through {@code suppress(untilWindowCloses)} (its buffer's
 * changelog is {@code <app>-final-store-changelog}) to the output topic. Both carry the key
 * {@code word@windowStart} and the count as a decimal string.
 *
 * <p>Arguments: bootstrap, application.id, state.dir, input topic, output topic, updates topic. Prints
 * {@code STATE <new>} on every state change, so the test can wait for RUNNING.
 */
public final class WordCountApp {
    static final Duration WINDOW = Duration.ofSeconds(10);
    static final Duration GRACE = Duration.ofSeconds(5);

    private WordCountApp() {
    }

    static Topology topology(String input, String output, String updates) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<Windowed<String>, Long> counts = b
                .stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.split("\\s+")))
                .filter((k, word) -> !word.isEmpty())
                .groupBy((k, word) -> word, Grouped.with("words", Serdes.String(), Serdes.String()))
                .windowedBy(TimeWindows.ofSizeAndGrace(WINDOW, GRACE))
                .count(Materialized.as("counts"));
        counts.toStream()
                .map((w, n) -> KeyValue.pair(w.key() + "@" + w.window().start(), String.valueOf(n)))
                .to(updates, Produced.with(Serdes.String(), Serdes.String()));
        counts.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()).withName("final"))
                .toStream()
                .map((w, n) -> KeyValue.pair(w.key() + "@" + w.window().start(), String.valueOf(n)))
                .to(output, Produced.with(Serdes.String(), Serdes.String()));
        return b.build();
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length != 6) {
            System.err.println("usage: WordCountApp bootstrap application.id state.dir input output updates");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, args[1]);
        p.put(StreamsConfig.STATE_DIR_CONFIG, args[2]);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        // The test reads the whole repartition topic afterwards: Streams must not purge (DeleteRecords) what it
        // has consumed, which it does every 30 s by default.
        p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 86_400_000);
        // A restarted instance must not wait out the killed one's session (45 s by default) before the group
        // rebalances: the broker's minimum.
        p.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.mainConsumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);

        KafkaStreams streams = new KafkaStreams(topology(args[3], args[4], args[5]), p);
        CountDownLatch done = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            System.out.println("STATE " + now);
            System.out.flush();
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            done.countDown();
        }));
        streams.start();
        // Runs until SIGTERM (the shutdown hook closes it), SIGKILL, or an error stops it.
        done.await();
        streams.close(Duration.ofSeconds(20));
        System.exit(streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
    }
}
