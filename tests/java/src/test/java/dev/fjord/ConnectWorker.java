package dev.fjord;

import java.io.File;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Apache Kafka Connect's distributed worker ({@code org.apache.kafka.connect.cli.ConnectDistributed}, from
 * connect-runtime) in its own JVM on this test's classpath, with its REST API on a free 127.0.0.1 port. Its
 * worker.properties and log live in a temporary directory; {@link #stop()} sends SIGTERM (a graceful shutdown),
 * {@link #kill()} SIGKILL, and {@link #close()} makes sure the JVM is gone.
 */
final class ConnectWorker implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();

    private final Process process;
    private final Path log;
    private final String rest;

    private ConnectWorker(Process process, Path log, String rest) {
        this.process = process;
        this.log = log;
        this.rest = rest;
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
            return s.getLocalPort();
        }
    }

    /** Starts a worker with {@code props} (plus its listener) and waits, up to 120 s, until its REST API answers. */
    static ConnectWorker start(Path dir, Map<String, String> props) throws Exception {
        int port = freePort();
        Map<String, String> all = new TreeMap<>(props);
        all.put("listeners", "http://127.0.0.1:" + port);
        all.put("rest.advertised.host.name", "127.0.0.1");
        all.put("rest.advertised.port", String.valueOf(port));
        StringBuilder text = new StringBuilder();
        all.forEach((k, v) -> text.append(k).append('=').append(v).append('\n'));
        Path properties = Files.createTempFile(dir, "worker-", ".properties");
        Files.writeString(properties, text);
        Path log = Files.createTempFile(dir, "worker-", ".log");
        List<String> cmd = new ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx384m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp", System.getProperty("java.class.path"),
                "org.apache.kafka.connect.cli.ConnectDistributed", properties.toString()));
        Process p = new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        ConnectWorker w = new ConnectWorker(p, log, "http://127.0.0.1:" + port);
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
            while (true) {
                if (!p.isAlive()) {
                    throw new AssertionError("the Connect worker exited with " + p.exitValue() + ":\n" + w.log());
                }
                try {
                    if (w.get("/").statusCode() == 200) {
                        return w;
                    }
                } catch (IOException notYet) {
                    // the REST server is not listening yet
                }
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("the Connect worker's REST API did not answer in 120 s:\n" + w.log());
                }
                Thread.sleep(250);
            }
        } catch (Throwable t) {
            w.close();
            throw t;
        }
    }

    /** The worker id Connect reports in connector and task status: its advertised REST host and port. */
    String id() {
        return rest.substring("http://".length());
    }

    String log() {
        try {
            String s = Files.readString(log);
            // The end of the log is what explains a failure; the start is the worker's config dump.
            return s.length() > 60_000 ? "...\n" + s.substring(s.length() - 60_000) : s;
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    HttpResponse<String> get(String path) throws IOException, InterruptedException {
        return HTTP.send(HttpRequest.newBuilder(URI.create(rest + path)).timeout(Duration.ofSeconds(30)).GET().build(),
                HttpResponse.BodyHandlers.ofString());
    }

    /** Any REST call, {@code body} as JSON (or none). */
    HttpResponse<String> send(String method, String path, String body) throws IOException, InterruptedException {
        return HTTP.send(HttpRequest.newBuilder(URI.create(rest + path)).timeout(Duration.ofSeconds(90))
                .header("Content-Type", "application/json")
                .method(method, body == null ? HttpRequest.BodyPublishers.noBody()
                        : HttpRequest.BodyPublishers.ofString(body))
                .build(), HttpResponse.BodyHandlers.ofString());
    }

    JsonNode getJson(String path) throws IOException, InterruptedException {
        HttpResponse<String> r = get(path);
        if (r.statusCode() != 200) {
            throw new AssertionError("GET " + path + ": " + r.statusCode() + " " + r.body());
        }
        return JSON.readTree(r.body());
    }

    /**
     * PUT /connectors/{name}/config, retried for up to 120 s while the worker answers that it is still joining
     * its group or reading its config topic (409 or 5xx, as Connect does until it has an assignment).
     */
    void putConnector(String name, Map<String, String> config) throws Exception {
        String body = JSON.writeValueAsString(config);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (true) {
            HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(URI.create(rest + "/connectors/" + name + "/config"))
                    .timeout(Duration.ofSeconds(90))
                    .header("Content-Type", "application/json")
                    .PUT(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() == 200 || r.statusCode() == 201) {
                return;
            }
            if ((r.statusCode() != 409 && r.statusCode() < 500) || System.nanoTime() > deadline) {
                throw new AssertionError("PUT connector " + name + ": " + r.statusCode() + " " + r.body()
                        + "\nworker log:\n" + log());
            }
            Thread.sleep(500);
        }
    }

    /** Waits, up to 120 s, until the connector and each of its {@code tasks} tasks report RUNNING. */
    void awaitRunning(String name, int tasks) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        String last = "";
        while (System.nanoTime() < deadline) {
            HttpResponse<String> r = get("/connectors/" + name + "/status");
            last = r.statusCode() + " " + r.body();
            if (r.statusCode() == 200) {
                JsonNode s = JSON.readTree(r.body());
                int running = 0;
                for (JsonNode t : s.path("tasks")) {
                    if ("FAILED".equals(t.path("state").asText())) {
                        throw new AssertionError(name + " task failed: " + t + "\nworker log:\n" + log());
                    }
                    running += "RUNNING".equals(t.path("state").asText()) ? 1 : 0;
                }
                if ("FAILED".equals(s.path("connector").path("state").asText())) {
                    throw new AssertionError(name + " failed: " + s + "\nworker log:\n" + log());
                }
                if ("RUNNING".equals(s.path("connector").path("state").asText()) && running == tasks
                        && s.path("tasks").size() == tasks) {
                    return;
                }
            }
            Thread.sleep(500);
        }
        throw new AssertionError(name + " not RUNNING in 120 s, last status " + last + "\nworker log:\n" + log());
    }

    /** SIGTERM: Connect's shutdown hook stops the tasks, commits their offsets and leaves the group. */
    void stop() throws InterruptedException {
        process.destroy();
        if (!process.waitFor(60, TimeUnit.SECONDS)) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
            throw new AssertionError("the Connect worker did not stop within 60 s of SIGTERM:\n" + log());
        }
    }

    /** SIGKILL: the worker gets no chance to commit, flush or leave its group. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            throw new AssertionError("the Connect worker survived SIGKILL for 30 s");
        }
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            process.destroyForcibly();
            process.waitFor(30, TimeUnit.SECONDS);
        }
    }
}
