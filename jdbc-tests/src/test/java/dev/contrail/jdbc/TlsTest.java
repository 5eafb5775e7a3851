package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.sql.Connection;
import java.sql.SQLException;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** A TLS server with a self-signed test certificate, reached the ways the driver documents. */
class TlsTest {
    private static final String STORE_PASSWORD = "changeit";
    private static final Duration FAIL_FAST = Duration.ofSeconds(30);
    private static Path dir;
    private static ContrailServer server;

    @BeforeAll
    static void start() throws Exception {
        dir = Files.createTempDirectory("contrail-tls-");
        Path cert = dir.resolve("cert.pem");
        Path key = dir.resolve("key.pem");
        Process p = new ProcessBuilder("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                "-keyout", key.toString(), "-out", cert.toString(), "-days", "1", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost")
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) {
            throw new IllegalStateException("openssl failed: " + out);
        }
        // The trust store a user would build with keytool -importcert.
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        try (var in = Files.newInputStream(cert)) {
            Certificate c = CertificateFactory.getInstance("X.509").generateCertificate(in);
            trust.setCertificateEntry("contrail", c);
        }
        try (OutputStream os = Files.newOutputStream(dir.resolve("trust.p12"))) {
            trust.store(os, STORE_PASSWORD.toCharArray());
        }
        server = ContrailServer.start("--tls-cert", cert.toString(), "--tls-key", key.toString());
    }

    @AfterAll
    static void stop() throws Exception {
        if (server != null) {
            server.close();
        }
    }

    private static void selectOver(List<String> params) throws SQLException {
        try (Connection conn = server.connect(params.toArray(String[]::new))) {
            assertEquals(1L, Jdbc.count(conn, "SELECT 1"));
            assertEquals("over tls", Jdbc.scalar(conn, "SELECT 'over tls'"));
        }
    }

    @Test
    void trustStore() throws SQLException {
        selectOver(List.of("useEncryption=true", "useSystemTrustStore=false",
                "trustStore=" + dir.resolve("trust.p12"), "trustStorePassword=" + STORE_PASSWORD));
    }

    @Test
    void pemRootCertificate() throws SQLException {
        selectOver(List.of("useEncryption=true", "tlsRootCerts=" + dir.resolve("cert.pem")));
    }

    @Test
    void verificationDisabled() throws SQLException {
        selectOver(List.of("useEncryption=true", "disableCertificateVerification=true"));
    }

    @Test
    void anUntrustedCertificateFailsFast() {
        assertTimeoutPreemptively(FAIL_FAST, () -> assertThrows(SQLException.class, () -> {
            try (Connection conn = server.connect("useEncryption=true", "useSystemTrustStore=true")) {
                Jdbc.count(conn, "SELECT 1");
            }
        }));
    }

    @Test
    void plaintextAgainstTlsFailsFast() {
        assertTimeoutPreemptively(FAIL_FAST, () -> assertThrows(SQLException.class, () -> {
            try (Connection conn = server.connect("useEncryption=false")) {
                Jdbc.count(conn, "SELECT 1");
            }
        }));
    }

}
