package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.utils.Utils;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * A Kafka Streams application ({@link WordCountApp}: windowed word count, exactly_once_v2, a persistent window
 * store with its changelog, a repartition topic, suppressed final results) against Fjord. The test computes the
 * final count of every closed window from its own input, with Kafka Streams' grace rules, and checks that the
 * application's suppressed output is exactly that (no window missing, none twice, no count off), with and without
 * the application's JVM SIGKILLed mid-stream and restarted on the same state directory.
 *
 * <p>How the input keeps the reference unambiguous. Kafka Streams decides lateness per task: a windowed count drops
 * a record when the task's stream time (the largest timestamp its processor has seen) minus the grace period has
 * reached the end of the record's window. After the repartition by word, a task's records come from every input
 * partition in an order that depends on scheduling. So the words are split into one group per input partition,
 * each group the words that the repartition topic's partitioner (murmur2 of the key, as for any keyed record) puts
 * in that partition: input partition p only holds lines of group-p words, repartition partition p gets only those,
 * in input order, and the aggregating task of partition p sees exactly the timestamps of input partition p in order
 * (the test checks this assumption on the repartition topic). The stream time of that processor is not kept across
 * a crash (it restarts from the records replayed after the last commit), which can only lower it; so the first
 * phase (produced before the kill) has late records that count with any lower stream time, and only the second
 * phase (produced after the kill, opened by a record later than all of the first) has records beyond the grace
 * period: those are dropped with or without the crash.
 */
class StreamsTest {
    static final int PARTITIONS = 3;
    static final long W = WordCountApp.WINDOW.toMillis();
    static final long G = WordCountApp.GRACE.toMillis();
    static final Duration WAIT = Duration.ofSeconds(120);

    static FjordBroker broker;
    static final List<Process> children = new ArrayList<>();

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of(
                "offsets.topic.num.partitions", "4",
                "transaction.state.log.num.partitions", "4",
                "group.initial.rebalance.delay.ms", "0"));
        // Whatever happens, no Streams JVM outlives the test run.
        Runtime.getRuntime().addShutdownHook(new Thread(StreamsTest::killChildren));
    }

    @AfterAll
    static void stop() throws Exception {
        killChildren();
        broker.close();
    }

    static synchronized void killChildren() {
        for (Process p : children) {
            p.destroyForcibly();
        }
    }

    /** One line of input: its partition, event time and text. */
    record Line(int partition, long ts, String text) {
    }

    /** The words of each input partition's group: words whose repartition partition is that partition. */
    static List<List<String>> wordGroups(int perGroup) {
        List<List<String>> groups = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            groups.add(new ArrayList<>());
        }
        String[] stems = {"fjord", "kafka", "stream", "window", "grace", "count", "topic", "offset", "epoch",
            "commit", "fence", "store", "log", "raft", "broker", "record", "batch", "marker"};
        for (int i = 0; groups.stream().anyMatch(g -> g.size() < perGroup); i++) {
            assertTrue(i < 10_000, "could not fill the word groups");
            String w = stems[i % stems.length] + (i / stems.length);
            List<String> g = groups.get(repartitionOf(w));
            if (g.size() < perGroup) {
                g.add(w);
            }
        }
        return groups;
    }

    /** The partition Kafka's default partitioning gives the key {@code word} (a String key) among PARTITIONS. */
    static int repartitionOf(String word) {
        return Utils.toPositive(Utils.murmur2(word.getBytes(StandardCharsets.UTF_8))) % PARTITIONS;
    }

    /**
     * The input of one run, per partition in produce order: phase 1 (in order, with late records within the grace
     * period, nothing droppable) and phase 2 (opened by a record later than all of phase 1, with late records within
     * and beyond the grace period, closed by one record far ahead that closes every earlier window).
     */
    static List<List<Line>> input(long seed, long t0) {
        Random rnd = new Random(seed);
        // The application's grace period (the reference's G is the same; kept apart so that a reference with a
        // grace period 1 ms off can be seen to fail).
        long grace = WordCountApp.GRACE.toMillis();
        List<List<String>> groups = wordGroups(6);
        List<List<Line>> phases = List.of(new ArrayList<>(), new ArrayList<>());
        for (int p = 0; p < PARTITIONS; p++) {
            List<String> words = groups.get(p);
            long streamTime = t0;
            long t = t0;
            for (int phase = 0; phase < 2; phase++) {
                if (phase == 1) {
                    t = streamTime + 1 + rnd.nextInt(3000);
                    phases.get(1).add(new Line(p, t, line(rnd, words)));
                    streamTime = t;
                }
                for (int i = 0; i < 120; i++) {
                    long ts;
                    int kind = rnd.nextInt(10);
                    if (kind == 0) {
                        // Late, within the grace period: its window ends after stream time - grace.
                        ts = streamTime - rnd.nextInt((int) grace);
                    } else if (kind == 1 && phase == 1) {
                        // Beyond the grace period: its window ended at least a whole grace period ago.
                        ts = streamTime - grace - W - rnd.nextInt((int) W);
                    } else if (kind == 2) {
                        // On the edge: stream time moves to 1 ms before the window [e - W, e) closes (or, in phase
                        // 2, to exactly when it closes), then a record in its first or last millisecond.
                        long e = Math.floorDiv(streamTime - grace, W) * W + W;
                        long edge = e + grace - (phase == 1 && rnd.nextBoolean() ? 0 : 1);
                        phases.get(phase).add(new Line(p, edge, line(rnd, words)));
                        streamTime = edge;
                        t = Math.max(t, edge);
                        ts = rnd.nextBoolean() ? e - 1 : e - W;
                    } else {
                        t += rnd.nextInt(800);
                        ts = t;
                    }
                    streamTime = Math.max(streamTime, ts);
                    phases.get(phase).add(new Line(p, ts, line(rnd, words)));
                }
            }
            // Far ahead: closes every window before it (its own stays open, so it is never final output).
            phases.get(1).add(new Line(p, streamTime + 10 * W, words.get(0)));
        }
        return List.of(interleave(phases.get(0)), interleave(phases.get(1)));
    }

    /** The lines round-robin over the partitions, each partition's in its order, so every task has work at once. */
    static List<Line> interleave(List<Line> lines) {
        List<List<Line>> per = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) {
            final int part = p;
            per.add(lines.stream().filter(l -> l.partition() == part).toList());
        }
        List<Line> out = new ArrayList<>();
        for (int i = 0; out.size() < lines.size(); i++) {
            for (List<Line> l : per) {
                if (i < l.size()) {
                    out.add(l.get(i));
                }
            }
        }
        return out;
    }

    static String line(Random rnd, List<String> words) {
        int n = 1 + rnd.nextInt(5);
        List<String> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(words.get(rnd.nextInt(words.size())));
        }
        return String.join(" ", out);
    }

    /** What the application must output: the final counts of the closed windows; the rest is diagnostics. */
    record Reference(Map<String, Long> closed, Set<String> open, int dropped) {
    }

    /**
     * Kafka Streams' windowed count of {@code lines}, keyed {@code word@windowStart}: per partition (= per
     * aggregating task, see the class comment) stream time is the largest timestamp so far; a record counts in its
     * window [start, start + W) iff start + W > streamTime - G, else it is dropped; a window's final count is
     * emitted once start + W <= streamTime - G. Windows still open at the end are never final output.
     */
    static Reference reference(Collection<Line> lines) {
        Map<String, Long> closed = new TreeMap<>();
        Set<String> open = new HashSet<>();
        int dropped = 0;
        for (int p = 0; p < PARTITIONS; p++) {
            final int part = p;
            long streamTime = Long.MIN_VALUE;
            Map<String, Long> counts = new HashMap<>();
            Map<String, Long> windowEnds = new HashMap<>();
            for (Line l : lines.stream().filter(l -> l.partition() == part).toList()) {
                streamTime = Math.max(streamTime, l.ts());
                long start = l.ts() - Math.floorMod(l.ts(), W);
                if (start + W > streamTime - G) {
                    for (String w : l.text().split(" ")) {
                        counts.merge(w + "@" + start, 1L, Long::sum);
                        windowEnds.put(w + "@" + start, start + W);
                    }
                } else {
                    dropped++;
                }
            }
            for (var e : counts.entrySet()) {
                // One task per word: the words of two partitions must differ (see wordGroups).
                assertTrue(!closed.containsKey(e.getKey()) && !open.contains(e.getKey()), e.getKey());
                if (windowEnds.get(e.getKey()) <= streamTime - G) {
                    closed.put(e.getKey(), e.getValue());
                } else {
                    open.add(e.getKey());
                }
            }
        }
        return new Reference(closed, open, dropped);
    }

    // ---- running the application in its own JVM ----

    static final class App implements AutoCloseable {
        final Process process;
        final Path log;

        App(Process process, Path log) {
            this.process = process;
            this.log = log;
        }

        String log() {
            try {
                return Files.readString(log);
            } catch (IOException e) {
                return "(no log: " + e + ")";
            }
        }

        /** SIGKILL: no close, no commit, no flush, the open transaction left behind. */
        void kill() throws InterruptedException {
            process.destroyForcibly();
            assertTrue(process.waitFor(30, TimeUnit.SECONDS), "the Streams JVM did not die");
        }

        @Override
        public void close() throws InterruptedException {
            long start = System.nanoTime();
            process.destroy();
            if (!process.waitFor(40, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(10, TimeUnit.SECONDS);
            }
            System.err.println("StreamsTest: app stopped in " + (System.nanoTime() - start) / 1_000_000 + " ms");
        }
    }

    static App startApp(String appId, Path stateDir, String in, String out, String updates, Path log)
            throws IOException, InterruptedException {
        // The log is appended to across restarts: this start is RUNNING once one more RUNNING line appears.
        long runningBefore = runningLines(Files.readString(log));
        List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", System.getProperty("java.class.path"), WordCountApp.class.getName(),
                broker.bootstrap(), appId, stateDir.toString(), in, out, updates);
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        synchronized (StreamsTest.class) {
            children.add(p);
        }
        App app = new App(p, log);
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (runningLines(app.log()) <= runningBefore) {
            if (!p.isAlive()) {
                throw new AssertionError("the Streams app exited (" + p.exitValue() + "):\n" + app.log());
            }
            if (System.nanoTime() > deadline) {
                app.close();
                throw new AssertionError("the Streams app was not RUNNING within " + WAIT + ":\n" + app.log());
            }
            Thread.sleep(100);
        }
        return app;
    }

    static long runningLines(String log) {
        return log.lines().filter("STATE RUNNING"::equals).count();
    }

    // ---- producing and reading ----

    static void produce(String inTopic, List<Line> lines) {
        try (KafkaProducer<String, String> p = Clients.producer(broker, ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true")) {
            for (Line l : lines) {
                p.send(new ProducerRecord<>(inTopic, l.partition(), l.ts(), null, l.text()));
            }
            p.flush();
        }
    }

    /** Everything committed in {@code topic}, read with read_committed from the beginning. */
    static KafkaConsumer<String, String> committedReader(String topic) throws Exception {
        KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        List<TopicPartition> tps = c.partitionsFor(topic, Duration.ofSeconds(30)).stream()
                .map(i -> new TopicPartition(topic, i.partition())).toList();
        c.assign(tps);
        c.seekToBeginning(tps);
        return c;
    }

    /** Polls {@code c} until {@code done} holds or {@link #WAIT} passes (the caller's assertion then says what). */
    static void pollInto(KafkaConsumer<String, String> c, List<ConsumerRecord<String, String>> into,
            java.util.function.BooleanSupplier done) {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!done.getAsBoolean() && System.nanoTime() < deadline) {
            c.poll(Duration.ofMillis(200)).forEach(into::add);
        }
    }

    /** Reads to the end of what is committed in every partition now (bounded by {@link #WAIT}). */
    static void readToEnd(KafkaConsumer<String, String> c, List<ConsumerRecord<String, String>> into) {
        Map<TopicPartition, Long> end = c.endOffsets(c.assignment());
        pollInto(c, into, () -> end.entrySet().stream().allMatch(e -> c.position(e.getKey()) >= e.getValue()));
    }

    /** Whether some partition of {@code topic} has an open transaction: its high watermark is past its LSO. */
    static boolean openTransaction(Admin admin, String topic) throws Exception {
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            latest.put(new TopicPartition(topic, p), OffsetSpec.latest());
        }
        var hw = admin.listOffsets(latest, new ListOffsetsOptions(IsolationLevel.READ_UNCOMMITTED)).all().get();
        var lso = admin.listOffsets(latest, new ListOffsetsOptions(IsolationLevel.READ_COMMITTED)).all().get();
        return hw.entrySet().stream().anyMatch(e -> e.getValue().offset() > lso.get(e.getKey()).offset());
    }

    /** Waits until the application has committed input offsets at the end of every input partition. */
    static void awaitInputConsumed(String appId, String inTopic) throws Exception {
        try (Admin a = Clients.admin(broker)) {
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            for (int p = 0; p < PARTITIONS; p++) {
                latest.put(new TopicPartition(inTopic, p), OffsetSpec.latest());
            }
            Map<TopicPartition, Long> end = a.listOffsets(latest).all().get().entrySet().stream()
                    .collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
            long deadline = System.nanoTime() + WAIT.toNanos();
            Map<TopicPartition, OffsetAndMetadata> committed = Map.of();
            while (System.nanoTime() < deadline) {
                committed = a.listConsumerGroupOffsets(appId).partitionsToOffsetAndMetadata().get();
                Map<TopicPartition, OffsetAndMetadata> c = committed;
                if (end.entrySet().stream().allMatch(e -> c.containsKey(e.getKey())
                        && c.get(e.getKey()).offset() == e.getValue())) {
                    return;
                }
                Thread.sleep(200);
            }
            throw new AssertionError("the app did not commit the input's end " + end + " within " + WAIT
                    + ": committed " + committed);
        }
    }

    static Map<String, List<Long>> byKey(List<ConsumerRecord<String, String>> records) {
        Map<String, List<Long>> m = new TreeMap<>();
        for (var r : records) {
            m.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(Long.parseLong(r.value()));
        }
        return m;
    }

    /** The exact comparison: every reference window once with its count, nothing else. */
    static void assertExactly(Map<String, Long> reference, List<ConsumerRecord<String, String>> got, String what) {
        Map<String, List<Long>> seen = byKey(got);
        List<String> problems = new ArrayList<>();
        for (var e : reference.entrySet()) {
            List<Long> v = seen.getOrDefault(e.getKey(), List.of());
            if (!v.equals(List.of(e.getValue()))) {
                problems.add(e.getKey() + ": expected [" + e.getValue() + "], got " + v);
            }
        }
        for (var e : seen.entrySet()) {
            if (!reference.containsKey(e.getKey())) {
                problems.add(e.getKey() + ": not in the reference, got " + e.getValue());
            }
        }
        assertTrue(problems.isEmpty(), what + ": " + problems.size() + " of " + reference.size()
                + " reference windows wrong (" + got.size() + " records):\n" + String.join("\n", problems));
        assertEquals(reference.size(), got.size(), what);
    }

    /**
     * The un-suppressed update stream: per window, the last update is the reference count (earlier ones are
     * partial counts, and under exactly-once no committed update is replayed twice, so the updates of a window
     * strictly increase); windows still open at the end (the far-ahead records') may appear too.
     */
    static void assertUpdates(Map<String, Long> reference, List<ConsumerRecord<String, String>> got,
            Set<String> open) {
        Map<String, List<Long>> seen = byKey(got);
        List<String> problems = new ArrayList<>();
        for (var e : reference.entrySet()) {
            List<Long> v = seen.getOrDefault(e.getKey(), List.of());
            if (v.isEmpty() || !v.get(v.size() - 1).equals(e.getValue())) {
                problems.add(e.getKey() + ": last update should be " + e.getValue() + ", updates " + v);
            }
        }
        for (var e : seen.entrySet()) {
            List<Long> v = e.getValue();
            for (int i = 1; i < v.size(); i++) {
                if (v.get(i) <= v.get(i - 1)) {
                    problems.add(e.getKey() + ": updates not increasing " + v);
                    break;
                }
            }
            if (!reference.containsKey(e.getKey()) && !open.contains(e.getKey())) {
                problems.add(e.getKey() + ": updated but neither closed nor open " + v);
            }
        }
        assertTrue(problems.isEmpty(), "updates: " + String.join("\n", problems));
    }

    // ---- the tests ----

    @Test
    void windowedWordCountIsExactWithoutFailures() throws Exception {
        run("wc-plain", false);
    }

    @Test
    void windowedWordCountIsExactAfterSigkillAndRestart() throws Exception {
        run("wc-kill", true);
    }

    void run(String name, boolean kill) throws Exception {
        String inTopic = name + "-lines";
        String outTopic = name + "-final";
        String updatesTopic = name + "-updates";
        String appId = name + "-app";
        Clients.createTopic(broker, inTopic, PARTITIONS);
        Clients.createTopic(broker, outTopic, PARTITIONS);
        Clients.createTopic(broker, updatesTopic, PARTITIONS);
        // Event time near now (changelog retention is measured from record timestamps), on a window boundary.
        long t0 = (System.currentTimeMillis() - 600_000) / W * W;
        List<List<Line>> phases = input(kill ? 7 : 3, t0);
        List<Line> all = new ArrayList<>(phases.get(0));
        all.addAll(phases.get(1));
        Reference ref = reference(all);
        Map<String, Long> reference = ref.closed();
        // The input is what the class comment says: nothing droppable before the kill, drops after it.
        assertEquals(0, reference(phases.get(0)).dropped(), "phase 1 must have no record beyond the grace period");
        assertTrue(ref.dropped() > 10, "phase 2 has records beyond the grace period: " + ref.dropped());
        long late = 0;
        for (int p = 0; p < PARTITIONS; p++) {
            long max = Long.MIN_VALUE;
            for (Line l : all) {
                if (l.partition() == p) {
                    if (l.ts() < max) {
                        late++;
                    }
                    max = Math.max(max, l.ts());
                }
            }
        }
        assertTrue(late > ref.dropped() + 10, "late records within the grace period: " + (late - ref.dropped()));
        assertTrue(reference.size() > 50, "enough windows: " + reference.size());
        System.err.println("StreamsTest " + name + ": " + all.size() + " lines, " + (late - ref.dropped())
                + " late within grace, " + ref.dropped() + " beyond grace, " + reference.size() + " final windows");

        Path state = Files.createTempDirectory("fjord-streams-state-");
        Path log = Files.createTempFile("fjord-streams-" + name + "-", ".log");
        App app = startApp(appId, state, inTopic, outTopic, updatesTopic, log);
        try (KafkaConsumer<String, String> out = committedReader(outTopic)) {
            List<ConsumerRecord<String, String>> finals = new ArrayList<>();
            if (kill) {
                // Phase 1 paced, so that the app is mid-stream when it is killed: once some final results are
                // committed, and while a transaction of the app is open (the repartition topic's high watermark is
                // past its last stable offset), so that the restarted app must fence it and have it aborted.
                List<Line> first = phases.get(0);
                int sent = 0;
                String repartition = appId + "-words-repartition";
                boolean open = false;
                try (KafkaProducer<String, String> p = Clients.producer(broker, ProducerConfig.ACKS_CONFIG, "all");
                        Admin admin = Clients.admin(broker)) {
                    long deadline = System.nanoTime() + WAIT.toNanos();
                    while (!(finals.size() >= 3 && open) && sent < first.size() && System.nanoTime() < deadline) {
                        for (int i = 0; i < 6 && sent < first.size(); i++, sent++) {
                            Line l = first.get(sent);
                            p.send(new ProducerRecord<>(inTopic, l.partition(), l.ts(), null, l.text()));
                        }
                        p.flush();
                        out.poll(Duration.ofMillis(50)).forEach(finals::add);
                        open = finals.size() >= 3 && openTransaction(admin, repartition);
                    }
                    assertTrue(finals.size() >= 3 && open, "no moment with final results committed and a"
                            + " transaction open in phase 1 (" + finals.size() + " final results):\n" + app.log());
                    app.kill();
                    System.err.println("StreamsTest: SIGKILL after " + sent + " of " + first.size()
                            + " phase-1 lines, " + finals.size() + " final results seen");
                    for (; sent < first.size(); sent++) {
                        Line l = first.get(sent);
                        p.send(new ProducerRecord<>(inTopic, l.partition(), l.ts(), null, l.text()));
                    }
                    p.flush();
                }
                produce(inTopic, phases.get(1));
                app = startApp(appId, state, inTopic, outTopic, updatesTopic, log);
            } else {
                produce(inTopic, phases.get(0));
                produce(inTopic, phases.get(1));
            }
            pollInto(out, finals, () -> finals.size() >= reference.size());
            awaitInputConsumed(appId, inTopic);
            readToEnd(out, finals);
            assertExactly(reference, finals, "final results\n" + app.log());
        } finally {
            app.close();
        }

        try (KafkaConsumer<String, String> c = committedReader(updatesTopic)) {
            List<ConsumerRecord<String, String>> updates = new ArrayList<>();
            readToEnd(c, updates);
            assertUpdates(reference, updates, ref.open());
        }
        String repartition = appId + "-words-repartition";
        try (KafkaConsumer<String, String> c = committedReader(repartition)) {
            List<ConsumerRecord<String, String>> words = new ArrayList<>();
            readToEnd(c, words);
            // What the first sub-topology committed is every word of the input once, with its line's timestamp,
            // in the partition the word groups assume (the records of a transaction the kill left open were
            // aborted, their replay committed once).
            Map<String, Long> expected = new TreeMap<>();
            for (Line l : all) {
                for (String w : l.text().split(" ")) {
                    expected.merge(l.partition() + "/" + w + "/" + w + "@" + l.ts(), 1L, Long::sum);
                }
            }
            Map<String, Long> got = new TreeMap<>();
            for (var r : words) {
                got.merge(r.partition() + "/" + r.key() + "/" + r.value() + "@" + r.timestamp(), 1L, Long::sum);
            }
            assertEquals(expected, got, "the committed repartition topic (partition/key/value@timestamp -> count)");
        }
        checkInternalTopics(appId);
        // Passed: the app's state and log go (a failure keeps them for a look).
        try (var paths = Files.walk(state)) {
            for (Path f : paths.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(f);
            }
        }
        Files.delete(log);
    }

    /**
     * The internal topics exist, one partition per input partition, with the broker's default replication; the
     * changelogs are compacted (the window store's also deleted by time, as Kafka Streams asks), the repartition
     * topic is not.
     */
    static void checkInternalTopics(String appId) throws Exception {
        try (Admin a = Clients.admin(broker)) {
            Set<String> names = a.listTopics().names().get();
            String counts = appId + "-counts-changelog";
            String buffer = appId + "-final-store-changelog";
            String repartition = appId + "-words-repartition";
            assertTrue(names.containsAll(List.of(counts, buffer, repartition)), names.toString());
            Map<ConfigResource, Config> cfg = a.describeConfigs(List.of(
                    new ConfigResource(ConfigResource.Type.TOPIC, counts),
                    new ConfigResource(ConfigResource.Type.TOPIC, buffer),
                    new ConfigResource(ConfigResource.Type.TOPIC, repartition))).all().get();
            assertEquals("compact,delete", cfg.get(new ConfigResource(ConfigResource.Type.TOPIC, counts))
                    .get("cleanup.policy").value());
            assertEquals("compact", cfg.get(new ConfigResource(ConfigResource.Type.TOPIC, buffer))
                    .get("cleanup.policy").value());
            assertEquals("delete", cfg.get(new ConfigResource(ConfigResource.Type.TOPIC, repartition))
                    .get("cleanup.policy").value());
            // replication.factor=-1 (Streams' default): the broker's default.replication.factor, 3 on a cluster.
            int brokers = Integer.parseInt(System.getProperty("fjord.brokers", "1"));
            for (var d : a.describeTopics(List.of(counts, buffer, repartition)).allTopicNames().get().values()) {
                assertEquals(PARTITIONS, d.partitions().size(), d.toString());
                for (var part : d.partitions()) {
                    assertEquals(brokers, part.replicas().size(), d.toString());
                }
            }
        }
    }
}
