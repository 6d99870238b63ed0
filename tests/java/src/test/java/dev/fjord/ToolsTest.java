package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;

/**
 * Apache Kafka's own command-line tools (org.apache.kafka:kafka-tools, run by main class in their own JVM as the
 * kafka-*.sh scripts do) against Fjord, starting with the seed's flow: create `catalog`, pipe lines in with the
 * console producer, read them back from the beginning.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ToolsTest {
    static FjordBroker broker;

    @BeforeAll
    static void start() throws Exception {
        broker = FjordBroker.start(Map.of(
                "offsets.topic.num.partitions", "4",
                "transaction.state.log.num.partitions", "4",
                "group.initial.rebalance.delay.ms", "0"));
    }

    @AfterAll
    static void stop() throws Exception {
        broker.close();
    }

    record Result(int exit, String out, String err) {
        Result ok() {
            assertEquals(0, exit, "exit " + exit + "\nstdout:\n" + out + "\nstderr:\n" + err);
            return this;
        }
    }

    /** Runs a tool's main class in a fresh JVM on this test's classpath, feeding `stdin`, bounded to 120 s. */
    static Result tool(String stdin, String mainClass, String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx256m", "-cp", System.getProperty("java.class.path"), mainClass));
        cmd.addAll(List.of(args));
        Path dir = Files.createTempDirectory("fjord-tool-");
        Path out = dir.resolve("out");
        Path err = dir.resolve("err");
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile());
        Process p = pb.start();
        try (var in = p.getOutputStream()) {
            if (stdin != null) {
                in.write(stdin.getBytes(StandardCharsets.UTF_8));
            }
        }
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            throw new AssertionError(mainClass + " did not finish in 120 s:\n" + Files.readString(err));
        }
        return new Result(p.exitValue(), Files.readString(out), Files.readString(err));
    }

    static String b() {
        return broker.bootstrap();
    }

    @Test
    @Order(1)
    void theSeedFlowCreatesProducesAndConsumesCatalog() throws Exception {
        Result r = tool(null, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", b(), "--create",
                "--topic", "catalog", "--partitions", "1", "--replication-factor", "1").ok();
        assertTrue(r.out().contains("Created topic catalog."), r.out());
        r = tool(null, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", b(), "--list").ok();
        assertTrue(r.out().lines().anyMatch("catalog"::equals), r.out());
        r = tool(null, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", b(), "--describe",
                "--topic", "catalog").ok();
        assertTrue(r.out().contains("PartitionCount: 1") && r.out().contains("ReplicationFactor: 1"), r.out());
        assertTrue(r.out().contains("Partition: 0") && r.out().contains("Leader: 1"), r.out());

        tool("book one\nbook two\nbook three\n", "org.apache.kafka.tools.ConsoleProducer",
                "--bootstrap-server", b(), "--topic", "catalog").ok();
        r = tool(null, "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", b(),
                "--topic", "catalog", "--from-beginning", "--max-messages", "3", "--group", "catalog-readers").ok();
        assertEquals(List.of("book one", "book two", "book three"), r.out().lines().toList());

        r = tool(null, "org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", b(), "--topic", "catalog").ok();
        assertEquals("catalog:0:3", r.out().strip());
    }

    @Test
    @Order(2)
    void consumerGroupsAreListedAndDescribedWithLag() throws Exception {
        Result r = tool(null, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                "--bootstrap-server", b(), "--list").ok();
        assertTrue(r.out().lines().anyMatch("catalog-readers"::equals), r.out());
        r = tool(null, "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                "--bootstrap-server", b(), "--describe", "--group", "catalog-readers").ok();
        String row = r.out().lines().filter(l -> l.startsWith("catalog-readers")).findFirst().orElse("");
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        List<String> cols = List.of(row.trim().split("\\s+"));
        assertTrue(cols.size() >= 6, r.out());
        assertEquals(List.of("catalog-readers", "catalog", "0", "3", "3", "0"), cols.subList(0, 6), r.out());
    }

    @Test
    @Order(3)
    void configsRecordsTransactionsAndTheQuorum() throws Exception {
        tool(null, "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", b(), "--alter",
                "--entity-type", "topics", "--entity-name", "catalog", "--add-config", "retention.ms=86400000").ok();
        Result r = tool(null, "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", b(), "--describe",
                "--entity-type", "topics", "--entity-name", "catalog").ok();
        assertTrue(r.out().contains("retention.ms=86400000"), r.out());

        Path offsets = Files.createTempFile("offsets", ".json");
        Files.writeString(offsets,
                "{\"partitions\":[{\"topic\":\"catalog\",\"partition\":0,\"offset\":1}],\"version\":1}");
        r = tool(null, "org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", b(),
                "--offset-json-file", offsets.toString()).ok();
        assertTrue(r.out().contains("low_watermark: 1"), r.out());

        r = tool(null, "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", b(), "list").ok();
        assertTrue(r.out().contains("TransactionalId"), r.out());

        r = tool(null, "org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server", b(),
                "describe", "--status").ok();
        assertTrue(r.out().contains("LeaderId:") && r.out().contains("CurrentVoters:"), r.out());
    }

    @Test
    @Order(4)
    void producerAndConsumerPerfTestsRun() throws Exception {
        tool(null, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", b(), "--create",
                "--topic", "perf", "--partitions", "2").ok();
        Result r = tool(null, "org.apache.kafka.tools.ProducerPerformance", "--topic", "perf",
                "--num-records", "20000", "--record-size", "100", "--throughput", "-1",
                "--producer-props", "bootstrap.servers=" + b(), "acks=all").ok();
        assertTrue(r.out().contains("20000 records sent"), r.out());
        r = tool(null, "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", b(),
                "--topic", "perf", "--messages", "20000", "--timeout", "60000").ok();
        // The data line ends with the counts: ..., data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
        assertTrue(r.out().lines().count() >= 2, r.out());
        assertTrue(r.out().contains("20000"), r.out());
    }
}
