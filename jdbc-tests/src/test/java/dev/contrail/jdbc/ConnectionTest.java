package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Plain connections, the driver under test, and session state across statements. */
@ExtendWith(SharedServer.class)
class ConnectionTest {

    @Test
    void theDriverUnderTestIsTheOneThisRunAskedFor(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            DatabaseMetaData md = conn.getMetaData();
            assertEquals(Jdbc.expectedDriverVersion(), md.getDriverVersion(), "driver on the class path");
            assertTrue(md.getDriverName().contains("Arrow Flight"), md.getDriverName());
        }
    }

    @Test
    void connectsWithTheUrlTheServerPrints(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            assertTrue(conn.isValid(10));
            assertFalse(conn.isClosed());
            assertEquals(2L, Jdbc.count(conn, "SELECT 1 + 1"));
            assertEquals(25L, Jdbc.count(conn, "SELECT count(*) FROM tpch.nation"));
        }
    }

    @Test
    void sessionSettingsStayWithTheConnection(ContrailServer server) throws SQLException {
        try (Connection a = server.connect(); Connection b = server.connect()) {
            String before = (String) Jdbc.scalar(b, "SELECT value FROM information_schema.df_settings "
                    + "WHERE name = 'datafusion.execution.batch_size'");
            String next = String.valueOf(Integer.parseInt(before) / 2 + 7);
            try (Statement st = a.createStatement()) {
                st.execute("SET datafusion.execution.batch_size = " + next);
                st.execute("SET schema = 'tpch'");
            }
            assertEquals(next, Jdbc.scalar(a, "SELECT value FROM information_schema.df_settings "
                    + "WHERE name = 'datafusion.execution.batch_size'"));
            assertEquals(25L, Jdbc.count(a, "SELECT count(*) FROM nation"), "SET schema applies to later statements");
            // ...and only to that connection.
            assertEquals(before, Jdbc.scalar(b, "SELECT value FROM information_schema.df_settings "
                    + "WHERE name = 'datafusion.execution.batch_size'"));
            SQLException e = assertThrows(SQLException.class, () -> Jdbc.count(b, "SELECT count(*) FROM nation"));
            assertTrue(e.getMessage().contains("nation"), e.getMessage());
            assertNotEquals(next, before);
        }
    }

    @Test
    void manyConnectionsOpenAndCloseCleanly(ContrailServer server) throws SQLException {
        for (int i = 0; i < 20; i++) {
            try (Connection conn = server.connect()) {
                assertEquals((long) i, Jdbc.count(conn, "SELECT " + i));
            }
        }
    }

    /**
     * The driver (Arrow Java) ships no IPC codecs, so a session that asks for compressed results gets an error
     * promptly, not a hang, and the same connection reads again once the setting is back to {@code none}.
     */
    @Test
    void compressedResultsFailPromptlyAndTheSessionRecovers(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect(); Statement st = conn.createStatement()) {
            st.execute("SET contrail.result_compression = 'lz4'");
            SQLException e = assertTimeoutPreemptively(Duration.ofSeconds(30),
                    () -> assertThrows(SQLException.class, () -> Jdbc.count(conn, "SELECT 42")));
            assertTrue(e.getMessage().contains("compression"), "the error names what is missing: " + e);
            st.execute("SET contrail.result_compression = 'none'");
            assertEquals(42L, Jdbc.count(conn, "SELECT 42"));
        }
    }

    /**
     * A BI tool's connection marked interactive (its statements get CPU threads of their own) reads, prepares and
     * writes as before; the setting stays with that connection.
     */
    @Test
    void interactivePriorityStaysWithTheConnection(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("interactive");
        try (Connection a = server.connect(); Connection b = server.connect(); Statement st = a.createStatement()) {
            st.execute("SET contrail.priority = 'interactive'");
            assertEquals("interactive", Jdbc.scalar(a, "SELECT value FROM information_schema.df_settings "
                    + "WHERE name = 'contrail.priority'"));
            assertEquals("normal", Jdbc.scalar(b, "SELECT value FROM information_schema.df_settings "
                    + "WHERE name = 'contrail.priority'"));
            assertEquals(Jdbc.count(b, "SELECT count(*) FROM tpch.lineitem"),
                    Jdbc.count(a, "SELECT count(*) FROM tpch.lineitem"));
            Jdbc.update(a, "CREATE TABLE " + table + " (id BIGINT)");
            assertEquals(2, Jdbc.update(a, "INSERT INTO " + table + " VALUES (1), (2)"));
            assertEquals(3L, Jdbc.count(b, "SELECT sum(id) FROM " + table));
            SQLException e = assertThrows(SQLException.class, () -> st.execute("SET contrail.priority = 'urgent'"));
            assertTrue(e.getMessage().contains("'normal' or 'interactive'"), e.getMessage());
        }
    }
}
