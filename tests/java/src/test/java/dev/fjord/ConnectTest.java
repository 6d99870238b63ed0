package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Apache Kafka Connect (connect-runtime's distributed worker, in its own JVM) against Fjord with the file
 * connectors of connect-file: FileStreamSource streams a growing file into a topic, FileStreamSink writes the
 * topic back out to a file. Connect creates its config, offset and status topics itself (CreateTopics, compacted),
 * keeps the source's byte positions in its offsets topic, and a restarted worker resumes from them: after SIGTERM
 * (at-least-once, but a graceful stop commits everything) and, with exactly-once source support (KIP-618:
 * transactional producers, fencing through InitProducerId), after SIGKILL.
 */
class ConnectTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    static FjordBroker broker;
    /** Replicas of Connect's internal topics: 1 on one broker, 3 on the three-broker cluster. */
    static int replicas;
    static Path dir;

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of(
                "offsets.topic.num.partitions", "4",
                "transaction.state.log.num.partitions", "4",
                "group.initial.rebalance.delay.ms", "0"));
        replicas = Integer.parseInt(System.getProperty("fjord.brokers", "1")) == 1 ? 1 : 3;
        dir = Files.createTempDirectory("fjord-connect-");
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
        if (Boolean.getBoolean("fjord.keep")) {
            return;
        }
        try (var files = Files.walk(dir)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
    }

    /** worker.properties for a Connect cluster named {@code group}, its internal topics prefixed with it. */
    static Map<String, String> workerProps(String group) {
        Map<String, String> p = new HashMap<>();
        p.put("bootstrap.servers", broker.bootstrap());
        p.put("group.id", group);
        p.put("config.storage.topic", group + "-configs");
        p.put("offset.storage.topic", group + "-offsets");
        p.put("status.storage.topic", group + "-status");
        p.put("config.storage.replication.factor", String.valueOf(replicas));
        p.put("offset.storage.replication.factor", String.valueOf(replicas));
        p.put("status.storage.replication.factor", String.valueOf(replicas));
        p.put("offset.storage.partitions", "3");
        p.put("status.storage.partitions", "2");
        // The lines go through as plain strings, so the topic holds exactly the file's lines.
        p.put("key.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.put("value.converter", "org.apache.kafka.connect.storage.StringConverter");
        p.put("offset.flush.interval.ms", "500");
        // A killed worker's member is dropped from the group after the session timeout (6 s, Fjord's and Kafka's
        // group.min.session.timeout.ms); its tasks are then reassigned at once rather than after Connect's
        // default 5 minutes of waiting for the worker to come back.
        p.put("session.timeout.ms", "6000");
        p.put("heartbeat.interval.ms", "1000");
        p.put("scheduled.rebalance.max.delay.ms", "0");
        // Plugins (the file connectors, the converters) are found through their ServiceLoader manifests: scanning
        // every class of the test classpath by reflection took 20 s of each worker start.
        p.put("plugin.discovery", "service_load");
        return p;
    }

    static List<String> lines(String prefix, int from, int count) {
        List<String> out = new ArrayList<>();
        for (int i = from; i < from + count; i++) {
            out.add(String.format("%s-%04d title of book %d", prefix, i, i));
        }
        return out;
    }

    /** Appends whole lines in one write, so the source never sees half a line. */
    static void append(Path file, List<String> lines) throws Exception {
        Files.writeString(file, lines.stream().map(l -> l + "\n").collect(Collectors.joining()),
                StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }

    /**
     * Waits, up to 120 s, until the sink file holds at least {@code expected}'s lines (the last one complete), then
     * compares them.
     */
    static void awaitSinkFile(Path file, List<String> expected, ConnectWorker w) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        List<String> got = List.of();
        while (System.nanoTime() < deadline) {
            String text = Files.exists(file) ? Files.readString(file, StandardCharsets.UTF_8) : "";
            got = text.lines().toList();
            if (got.size() >= expected.size() && text.endsWith("\n")) {
                break;
            }
            Thread.sleep(250);
        }
        assertEquals(expected, got, "the sink file (" + got.size() + " lines, expected " + expected.size()
                + ")\nworker log:\n" + w.log());
    }

    /** Every value in partition 0 of {@code topic} up to its end offset (the last stable offset if read_committed). */
    static List<String> topicValues(String topic, boolean readCommitted) {
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, readCommitted ? "read_committed" : "read_uncommitted")) {
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            long end = c.endOffsets(List.of(tp)).get(tp);
            List<String> out = new ArrayList<>();
            long deadline = System.nanoTime() + Clients.TIMEOUT.toNanos();
            while (c.position(tp) < end) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("could not read " + topic + " to its end " + end);
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    out.add(r.value());
                }
            }
            return out;
        }
    }

    /** Waits, up to 120 s, until {@code topic} holds (read_committed) exactly {@code expected}. */
    static void awaitTopic(String topic, List<String> expected, ConnectWorker w) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        List<String> got = List.of();
        while (System.nanoTime() < deadline) {
            got = topicValues(topic, true);
            if (got.size() >= expected.size()) {
                break;
            }
            Thread.sleep(500);
        }
        assertEquals(expected, got, topic + " (" + got.size() + " records, expected " + expected.size()
                + ")\nworker log:\n" + w.log());
    }

    /** The latest value of every key in all partitions of a compacted topic, read to its end. */
    static Map<String, String> latestByKey(String topic) throws Exception {
        try (Admin a = Clients.admin(broker); KafkaConsumer<String, String> c = Clients.consumer(broker,
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed")) {
            TopicDescription d = a.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            List<TopicPartition> tps = d.partitions().stream()
                    .map(p -> new TopicPartition(topic, p.partition())).toList();
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            Map<String, String> out = new HashMap<>();
            long deadline = System.nanoTime() + Clients.TIMEOUT.toNanos();
            while (tps.stream().anyMatch(tp -> c.position(tp) < end.get(tp))) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("could not read " + topic + " to its end " + end);
                }
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                    out.put(r.key(), r.value());
                }
            }
            return out;
        }
    }

    /**
     * Waits, up to 60 s, until Connect's offsets topic holds, for {@code connector}'s file, Connect's offset record:
     * key {@code ["<connector>",{"filename":"<file>"}]}, value {@code {"position":<bytes read>}}, at the file's size.
     */
    static void awaitStoredPosition(String offsetsTopic, String connector, Path file) throws Exception {
        long size = Files.size(file);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        Map<String, String> latest = Map.of();
        while (System.nanoTime() < deadline) {
            latest = latestByKey(offsetsTopic);
            for (Map.Entry<String, String> e : latest.entrySet()) {
                JsonNode key = JSON.readTree(e.getKey());
                if (key.isArray() && key.size() == 2 && connector.equals(key.get(0).asText())
                        && file.toString().equals(key.get(1).path("filename").asText())
                        && e.getValue() != null
                        && JSON.readTree(e.getValue()).path("position").asLong(-1) == size) {
                    return;
                }
            }
            Thread.sleep(500);
        }
        throw new AssertionError("no offset {\"position\":" + size + "} for " + connector + " and " + file + " in "
                + offsetsTopic + ": " + latest);
    }

    /** Waits, up to 60 s, until GET /connectors/{sink}/offsets shows {@code offset} for partition 0 of {@code topic}. */
    static void awaitSinkOffset(ConnectWorker w, String sink, String topic, long offset) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        JsonNode offsets = null;
        while (System.nanoTime() < deadline) {
            offsets = w.getJson("/connectors/" + sink + "/offsets");
            for (JsonNode o : offsets.path("offsets")) {
                if (topic.equals(o.path("partition").path("kafka_topic").asText())
                        && o.path("partition").path("kafka_partition").asInt(-1) == 0
                        && o.path("offset").path("kafka_offset").asLong(-1) == offset) {
                    return;
                }
            }
            Thread.sleep(500);
        }
        throw new AssertionError(sink + ": no offset " + offset + " for " + topic + "-0 in " + offsets);
    }

    /** The position for {@code file} in a GET /connectors/{name}/offsets answer, or -1. */
    static long storedPosition(JsonNode offsets, Path file) {
        for (JsonNode o : offsets.path("offsets")) {
            if (file.toString().equals(o.path("partition").path("filename").asText())) {
                return o.path("offset").path("position").asLong(-1);
            }
        }
        return -1;
    }

    /** Connect's three internal topics exist, compacted, with the replicas asked for; the config topic has one partition. */
    static void checkInternalTopics(String group) throws Exception {
        List<String> topics = List.of(group + "-configs", group + "-offsets", group + "-status");
        try (Admin a = Clients.admin(broker)) {
            Map<String, TopicDescription> d = a.describeTopics(topics).allTopicNames().get();
            assertEquals(1, d.get(group + "-configs").partitions().size());
            assertEquals(3, d.get(group + "-offsets").partitions().size());
            assertEquals(2, d.get(group + "-status").partitions().size());
            for (TopicDescription t : d.values()) {
                t.partitions().forEach(p -> assertEquals(replicas, p.replicas().size(), t.toString()));
            }
            List<ConfigResource> rs = topics.stream()
                    .map(t -> new ConfigResource(ConfigResource.Type.TOPIC, t)).toList();
            Map<ConfigResource, Config> configs = a.describeConfigs(rs).all().get();
            for (ConfigResource r : rs) {
                assertEquals("compact", configs.get(r).get("cleanup.policy").value(), r.name());
            }
        }
    }

    static Map<String, String> source(Path file, String topic) {
        return Map.of("connector.class", "org.apache.kafka.connect.file.FileStreamSourceConnector",
                "tasks.max", "1", "file", file.toString(), "topic", topic);
    }

    @Test
    void fileSourceStreamsAGrowingFileThroughCatalogToTheSinkAndResumesAfterAGracefulRestart() throws Exception {
        String group = "connect-plain";
        Clients.createTopic(broker, "catalog", 1);
        Path in = dir.resolve("catalog-in.txt");
        Path out = dir.resolve("catalog-out.txt");
        Files.createFile(in);
        List<String> expected = new ArrayList<>();
        try (ConnectWorker w = ConnectWorker.start(dir, workerProps(group))) {
            w.putConnector("catalog-source", source(in, "catalog"));
            w.putConnector("catalog-sink", sink(out, "catalog"));
            w.awaitRunning("catalog-source", 1);
            w.awaitRunning("catalog-sink", 1);
            // The file grows while the source reads it.
            for (int batch = 0; batch < 5; batch++) {
                List<String> more = lines("book", batch * 20, 20);
                append(in, more);
                expected.addAll(more);
                Thread.sleep(300);
            }
            awaitSinkFile(out, expected, w);
            awaitTopic("catalog", expected, w);
            checkInternalTopics(group);
            awaitStoredPosition(group + "-offsets", "catalog-source", in);
            w.stop();
        }
        // Lines written while no worker runs are picked up from the stored position, once.
        List<String> whileDown = lines("book", 100, 30);
        append(in, whileDown);
        expected.addAll(whileDown);
        try (ConnectWorker w = ConnectWorker.start(dir, workerProps(group))) {
            // The connectors come back from the config topic.
            w.awaitRunning("catalog-source", 1);
            w.awaitRunning("catalog-sink", 1);
            List<String> after = lines("book", 130, 40);
            append(in, after.subList(0, 20));
            Thread.sleep(300);
            append(in, after.subList(20, 40));
            expected.addAll(after);
            awaitSinkFile(out, expected, w);
            awaitTopic("catalog", expected, w);
            assertEquals(expected, topicValues("catalog", false), "no line twice in catalog");
            awaitStoredPosition(group + "-offsets", "catalog-source", in);

            // The sink's position is its consumer group's committed offset (KIP-875's offsets API reads it with
            // the AdminClient). Resetting it while the sink is stopped deletes the group's offsets, so the resumed
            // sink starts again from the earliest record and writes every line a second time.
            awaitSinkOffset(w, "catalog-sink", "catalog", expected.size());
            HttpResponse<String> r = w.send("PUT", "/connectors/catalog-sink/stop", null);
            assertEquals(204, r.statusCode(), r.body());
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (true) {
                // Refused until the sink has stopped and its consumer has left the group.
                r = w.send("DELETE", "/connectors/catalog-sink/offsets", null);
                if (r.statusCode() == 200) {
                    break;
                }
                assertTrue(System.nanoTime() < deadline,
                        "DELETE sink offsets: " + r.statusCode() + " " + r.body() + "\nworker log:\n" + w.log());
                Thread.sleep(500);
            }
            assertEquals(0, w.getJson("/connectors/catalog-sink/offsets").path("offsets").size());
            r = w.send("PUT", "/connectors/catalog-sink/resume", null);
            assertEquals(202, r.statusCode(), r.body());
            w.awaitRunning("catalog-sink", 1);
            List<String> twice = new ArrayList<>(expected);
            twice.addAll(expected);
            awaitSinkFile(out, twice, w);
            awaitSinkOffset(w, "catalog-sink", "catalog", expected.size());
            w.stop();
        }
    }

    static Map<String, String> sink(Path file, String topic) {
        return Map.of("connector.class", "org.apache.kafka.connect.file.FileStreamSinkConnector",
                "tasks.max", "1", "topics", topic, "file", file.toString());
    }

    /** The workers that run {@code connectors} and their tasks, from their status. */
    static java.util.Set<String> workersRunning(ConnectWorker w, String... connectors) throws Exception {
        java.util.Set<String> ids = new java.util.TreeSet<>();
        for (String c : connectors) {
            JsonNode s = w.getJson("/connectors/" + c + "/status");
            ids.add(s.path("connector").path("worker_id").asText());
            s.path("tasks").forEach(t -> ids.add(t.path("worker_id").asText()));
        }
        return ids;
    }

    @Test
    void twoWorkersShareTheConnectorsAndTheSurvivorTakesOverWhenOneStops() throws Exception {
        String group = "connect-pair";
        String topic = "catalog-pair";
        Clients.createTopic(broker, topic, 1);
        Path in = dir.resolve("pair-in.txt");
        Path out = dir.resolve("pair-out.txt");
        Files.createFile(in);
        List<String> expected = new ArrayList<>();
        try (ConnectWorker w1 = ConnectWorker.start(dir, workerProps(group));
                ConnectWorker w2 = ConnectWorker.start(dir, workerProps(group))) {
            // Whichever is not the group's leader forwards the request to the leader's REST API.
            w1.putConnector("pair-source", source(in, topic));
            w2.putConnector("pair-sink", sink(out, topic));
            w2.awaitRunning("pair-source", 1);
            w2.awaitRunning("pair-sink", 1);
            // Connect's incremental cooperative assignor spreads two connectors and two tasks over both workers.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            java.util.Set<String> both = new java.util.TreeSet<>(List.of(w1.id(), w2.id()));
            while (!workersRunning(w1, "pair-source", "pair-sink").equals(both)) {
                assertTrue(System.nanoTime() < deadline, "not spread over " + both + ": "
                        + workersRunning(w1, "pair-source", "pair-sink") + "\nworker 1 log:\n" + w1.log()
                        + "\nworker 2 log:\n" + w2.log());
                Thread.sleep(500);
            }
            for (int batch = 0; batch < 3; batch++) {
                List<String> more = lines("pair", batch * 20, 20);
                append(in, more);
                expected.addAll(more);
                Thread.sleep(300);
            }
            awaitSinkFile(out, expected, w1);
            // The first worker leaves gracefully; the second is left with everything, and nothing is lost or
            // written twice on the way.
            w1.stop();
            List<String> more = lines("pair", 60, 40);
            append(in, more);
            expected.addAll(more);
            w2.awaitRunning("pair-source", 1);
            w2.awaitRunning("pair-sink", 1);
            deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (!workersRunning(w2, "pair-source", "pair-sink").equals(java.util.Set.of(w2.id()))) {
                assertTrue(System.nanoTime() < deadline, "not all on " + w2.id() + ": "
                        + workersRunning(w2, "pair-source", "pair-sink") + "\nworker 2 log:\n" + w2.log());
                Thread.sleep(500);
            }
            more = lines("pair", 100, 20);
            append(in, more);
            expected.addAll(more);
            awaitSinkFile(out, expected, w2);
            awaitTopic(topic, expected, w2);
            assertEquals(expected, topicValues(topic, false), "no line twice in " + topic);
            w2.stop();
        }
    }

    @Test
    void exactlyOnceSourceLosesAndRepeatsNoLineWhenTheWorkerIsKilled() throws Exception {
        String group = "connect-eos";
        String topic = "catalog-eos";
        Clients.createTopic(broker, topic, 1);
        Path in = dir.resolve("eos-in.txt");
        Files.createFile(in);
        Map<String, String> props = workerProps(group);
        props.put("exactly.once.source.support", "enabled");
        Map<String, String> connector = new HashMap<>(source(in, topic));
        // Refused at creation unless FileStreamSource declares exactly-once support.
        connector.put("exactly.once.support", "required");
        List<String> expected = new ArrayList<>();
        int next = 0;
        try (ConnectWorker w = ConnectWorker.start(dir, props)) {
            w.putConnector("eos-source", connector);
            w.awaitRunning("eos-source", 1);
            // Keep the file growing until part of it is in the topic, then kill the worker mid-stream.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (topicValues(topic, true).size() < 60) {
                assertTrue(System.nanoTime() < deadline, "the source wrote nothing in 60 s:\n" + w.log());
                List<String> more = lines("eos", next, 10);
                append(in, more);
                expected.addAll(more);
                next += 10;
                Thread.sleep(100);
            }
            for (int i = 0; i < 5; i++) {
                List<String> more = lines("eos", next, 10);
                append(in, more);
                expected.addAll(more);
                next += 10;
                Thread.sleep(20);
            }
            w.kill();
        }
        List<String> whileDown = lines("eos", next, 25);
        append(in, whileDown);
        expected.addAll(whileDown);
        next += 25;
        try (ConnectWorker w = ConnectWorker.start(dir, props)) {
            w.awaitRunning("eos-source", 1);
            List<String> after = lines("eos", next, 30);
            append(in, after);
            expected.addAll(after);
            awaitTopic(topic, expected, w);
            checkInternalTopics(group);
            awaitStoredPosition(group + "-offsets", "eos-source", in);

            // KIP-875: the offsets API shows the stored position; rewinding it while the connector is stopped
            // (for an exactly-once connector Connect first fences out the task's transactional producers, then
            // writes the new offset in a transaction) makes the resumed source read the file again from there.
            JsonNode offsets = w.getJson("/connectors/eos-source/offsets");
            assertEquals(Files.size(in), storedPosition(offsets, in), offsets.toString());
            HttpResponse<String> r = w.send("PUT", "/connectors/eos-source/stop", null);
            assertEquals(204, r.statusCode(), r.body());
            int from = expected.size() - 15;
            long position = expected.subList(0, from).stream().mapToLong(l -> l.length() + 1).sum();
            String patch = JSON.writeValueAsString(Map.of("offsets", List.of(Map.of(
                    "partition", Map.of("filename", in.toString()), "offset", Map.of("position", position)))));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (true) {
                // Refused (400) until the connector has stopped on every worker.
                r = w.send("PATCH", "/connectors/eos-source/offsets", patch);
                if (r.statusCode() == 200) {
                    break;
                }
                assertTrue(r.statusCode() == 400 && System.nanoTime() < deadline,
                        "PATCH offsets: " + r.statusCode() + " " + r.body() + "\nworker log:\n" + w.log());
                Thread.sleep(500);
            }
            offsets = w.getJson("/connectors/eos-source/offsets");
            assertEquals(position, storedPosition(offsets, in), offsets.toString());
            r = w.send("PUT", "/connectors/eos-source/resume", null);
            assertEquals(202, r.statusCode(), r.body());
            w.awaitRunning("eos-source", 1);
            expected.addAll(new ArrayList<>(expected.subList(from, expected.size())));
            awaitTopic(topic, expected, w);
            w.stop();
        }
    }

    /**
     * Apache Kafka Connect and Fjord's worker share nothing but Connect's topics: a connector Apache's worker
     * created and ran (its config in the config topic, its file position in the offsets topic) is picked up by
     * {@code fjord connect distributed} pointed at the same topics, which resumes from Apache's stored position:
     * the lines appended afterwards arrive, none of the earlier ones twice.
     */
    @Test
    void fjordsDistributedWorkerResumesAConnectorFromApacheConnectsTopics() throws Exception {
        String group = "connect-shared";
        Clients.createTopic(broker, "shared", 1);
        Path in = dir.resolve("shared-in.txt");
        Files.createFile(in);
        List<String> expected = new ArrayList<>(lines("shared", 0, 20));
        append(in, expected);
        try (ConnectWorker w = ConnectWorker.start(dir, workerProps(group))) {
            w.putConnector("shared-source", source(in, "shared"));
            w.awaitRunning("shared-source", 1);
            awaitTopic("shared", expected, w);
            awaitStoredPosition(group + "-offsets", "shared-source", in);
            w.stop();
        }
        Path props = dir.resolve("fjord-worker.properties");
        Files.writeString(props, String.join("\n",
                "bootstrap.servers=" + broker.bootstrap(),
                "listeners=http://127.0.0.1:0",
                // Another group: Apache's and Fjord's workers do not join one group (different protocols).
                "group.id=fjord-shared",
                "config.storage.topic=" + group + "-configs",
                "offset.storage.topic=" + group + "-offsets",
                "status.storage.topic=" + group + "-status",
                "value.converter=org.apache.kafka.connect.storage.StringConverter",
                "offset.flush.interval.ms=200",
                "session.timeout.ms=6000",
                "heartbeat.interval.ms=1000") + "\n");
        Path log = dir.resolve("fjord-worker.log");
        Process p = new ProcessBuilder(System.getProperty("fjord.bin"), "connect", "distributed", props.toString())
                .redirectError(log.toFile())
                .start();
        try {
            var out = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(),
                    StandardCharsets.UTF_8));
            var ready = java.util.concurrent.CompletableFuture.supplyAsync(() -> {
                try {
                    return out.readLine();
                } catch (java.io.IOException e) {
                    return null;
                }
            });
            String line = ready.get(60, TimeUnit.SECONDS);
            assertTrue(line != null && line.startsWith("fjord connect ready"),
                    "the Fjord worker never became ready: " + line + "\n" + Files.readString(log));
            String rest = line.replaceAll(".*rest=(\\S+).*", "$1");
            var http = java.net.http.HttpClient.newHttpClient();
            var get = java.net.http.HttpRequest.newBuilder(java.net.URI.create("http://" + rest + "/connectors"))
                    .build();
            String listed = http.send(get, HttpResponse.BodyHandlers.ofString()).body();
            assertEquals("[\"shared-source\"]", listed, Files.readString(log));
            List<String> more = lines("shared", 20, 10);
            append(in, more);
            expected.addAll(more);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            List<String> got = List.of();
            while (System.nanoTime() < deadline) {
                got = topicValues("shared", true);
                if (got.size() >= expected.size()) {
                    break;
                }
                Thread.sleep(300);
            }
            assertEquals(expected, got, "shared, resumed by Fjord's worker\n" + Files.readString(log));
        } finally {
            p.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
    }
}
