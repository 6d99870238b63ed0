package dev.fjord;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A real `fjord broker` process (the binary named by the {@code fjord.bin} system property) on a free 127.0.0.1
 * port with its data in a temporary directory, or with {@code -Dfjord.brokers=3} a three-broker cluster in one
 * `fjord start --brokers 3` process; stopped with SIGTERM (and killed if it does not stop in 30 s).
 */
public final class FjordBroker implements AutoCloseable {
    private final Process process;
    private final Path dataDir;
    private final String bootstrap;

    private FjordBroker(Process process, Path dataDir, String bootstrap) {
        this.process = process;
        this.dataDir = dataDir;
        this.bootstrap = bootstrap;
    }

    public static FjordBroker start(Map<String, String> overrides) throws IOException, InterruptedException {
        String bin = System.getProperty("fjord.bin");
        if (bin == null || !new File(bin).canExecute()) {
            throw new IllegalStateException("set -Dfjord.bin to the fjord binary (got " + bin + ")");
        }
        Path data = Files.createTempDirectory("fjord-java-");
        // -Dfjord.brokers=3: a three-broker cluster (`fjord start --brokers 3`) with every topic and both
        // coordinators' topics at three replicas, min.insync.replicas=2.
        int brokers = Integer.parseInt(System.getProperty("fjord.brokers", "1"));
        List<String> cmd = brokers == 1
                ? new ArrayList<>(List.of(bin, "broker", "--override", "log.dirs=" + data.resolve("data")))
                : new ArrayList<>(List.of(bin, "start", "--brokers", String.valueOf(brokers),
                        "--data-dir", data.resolve("data").toString(),
                        // No Schema Registry (it would take 127.0.0.1:8081, which parallel runs share).
                        "--registry-listener", "none",
                        "--override", "default.replication.factor=3",
                        "--override", "min.insync.replicas=2",
                        "--override", "offsets.topic.replication.factor=3",
                        "--override", "transaction.state.log.replication.factor=3",
                        "--override", "transaction.state.log.min.isr=2"));
        cmd.addAll(List.of("--override", "listeners=PLAINTEXT://127.0.0.1:0",
                "--override", "metrics.listener=127.0.0.1:0"));
        overrides.forEach((k, v) -> {
            cmd.add("--override");
            cmd.add(k + "=" + v);
        });
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectError(data.resolve("broker.log").toFile())
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
        pb.environment().put("FJORD_LOG", "info");
        Process p = pb.start();
        BlockingQueue<String> ready = new ArrayBlockingQueue<>(1);
        Thread reader = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(
                    new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.startsWith("fjord ready")) {
                        ready.offer(line);
                    }
                }
            } catch (IOException ignored) {
                // the process ended
            }
        });
        reader.setDaemon(true);
        reader.start();
        String line = ready.poll(60, TimeUnit.SECONDS);
        if (line == null) {
            p.destroyForcibly();
            throw new IllegalStateException("fjord broker did not become ready in 60 s; log:\n"
                    + Files.readString(data.resolve("broker.log")));
        }
        String key = brokers == 1 ? "kafka=" : "bootstrap=";
        for (String field : line.split("\\s+")) {
            if (field.startsWith(key)) {
                return new FjordBroker(p, data, field.substring(key.length()));
            }
        }
        p.destroyForcibly();
        throw new IllegalStateException("no kafka= in the ready line: " + line);
    }

    public String bootstrap() {
        return bootstrap;
    }

    public String log() throws IOException {
        return Files.readString(dataDir.resolve("broker.log"));
    }

    @Override
    public void close() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
    }
}
