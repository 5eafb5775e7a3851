package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.SQLException;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** A server with users configured: credentials in the URL or in Properties; wrong ones fail fast and clearly. */
class AuthTest {
    private static final String USER = "alice";
    private static final String PASSWORD = "s3cret Alice&=?";
    private static final Duration FAIL_FAST = Duration.ofSeconds(30);
    private static ContrailServer server;

    @BeforeAll
    static void start() throws Exception {
        Path config = Files.createTempFile("contrail-auth-", ".toml");
        Files.writeString(config, "[[auth.users]]\nname = \"" + USER + "\"\npassword_hash = '" + hash(PASSWORD) + "'\n");
        server = ContrailServer.start("--config", config.toString());
    }

    @AfterAll
    static void stop() throws Exception {
        if (server != null) {
            server.close();
        }
    }

    /** {@code contrail hash-password}, as an operator would run it. */
    private static String hash(String password) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(ContrailServer.binary().toString(), "hash-password").start();
        p.getOutputStream().write((password + "\n").getBytes(StandardCharsets.UTF_8));
        p.getOutputStream().close();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IllegalStateException("hash-password failed: " + out);
        }
        List<String> lines = out.lines().map(String::strip).filter(l -> !l.isEmpty()).toList();
        return lines.get(lines.size() - 1);
    }

    private static Properties credentials(String user, String password) {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        return props;
    }

    @Test
    void credentialsAsProperties() throws SQLException {
        try (Connection conn = server.connect(credentials(USER, PASSWORD))) {
            assertEquals(42L, Jdbc.count(conn, "SELECT 42"));
            assertEquals(USER, conn.getMetaData().getUserName());
        }
    }

    @Test
    void credentialsInTheUrl() throws SQLException {
        String encoded = java.net.URLEncoder.encode(PASSWORD, StandardCharsets.UTF_8);
        try (Connection conn = server.connect("user=" + USER, "password=" + encoded)) {
            assertEquals(7L, Jdbc.count(conn, "SELECT 7"));
        }
    }

    @Test
    void theTokenKeepsWorkingForManyStatements() throws SQLException {
        try (Connection conn = server.connect(credentials(USER, PASSWORD))) {
            for (int i = 0; i < 50; i++) {
                assertEquals((long) i, Jdbc.count(conn, "SELECT " + i));
            }
            try (var rs = conn.getMetaData().getTables(null, null, "%", null)) {
                assertTrue(rs.next());
            }
        }
    }

    @Test
    void aWrongPasswordIsAClearErrorNotAHang() {
        SQLException e = assertTimeoutPreemptively(FAIL_FAST,
                () -> assertThrows(SQLException.class, () -> server.connect(credentials(USER, "wrong")).close()));
        assertTrue(chain(e).contains("invalid user name or password"), chain(e));
    }

    @Test
    void anUnknownUserIsRejected() {
        SQLException e = assertTimeoutPreemptively(FAIL_FAST,
                () -> assertThrows(SQLException.class, () -> server.connect(credentials("mallory", PASSWORD)).close()));
        assertTrue(chain(e).contains("invalid user name or password"), chain(e));
    }

    @Test
    void noCredentialsAtAllIsRejected() {
        SQLException e = assertTimeoutPreemptively(FAIL_FAST, () -> assertThrows(SQLException.class, () -> {
            try (Connection conn = server.connect()) {
                Jdbc.count(conn, "SELECT 1");
            }
        }));
        assertTrue(chain(e).contains("authentication required"), chain(e));
    }

    /** The messages of an exception and its causes: drivers wrap the gRPC status. */
    static String chain(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage()).append(" | ");
        }
        return sb.toString();
    }
}
