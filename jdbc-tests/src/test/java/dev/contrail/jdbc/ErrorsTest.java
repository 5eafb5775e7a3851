package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** Server errors reach the user as SQLExceptions with the server's message; the connection keeps working. */
@ExtendWith(SharedServer.class)
class ErrorsTest {

    private static void assertFails(Connection conn, String sql, String expected) throws SQLException {
        assertFails(conn, sql, expected, SQLException.class);
    }

    private static void assertFails(Connection conn, String sql, String expected, Class<? extends Exception> type)
            throws SQLException {
        Exception e = assertThrows(type, () -> {
            try (Statement st = conn.createStatement()) {
                if (st.execute(sql)) {
                    try (ResultSet rs = st.getResultSet()) {
                        while (rs.next()) {
                            rs.getObject(1);
                        }
                    }
                }
            }
        }, sql);
        String messages = AuthTest.chain(e);
        assertTrue(messages.contains(expected), "expected '" + expected + "' in: " + messages);
        assertEquals(1L, Jdbc.count(conn, "SELECT 1"), "connection usable after: " + sql);
    }

    @Test
    void syntaxError(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            assertFails(conn, "SELEC 1", "SELEC");
            assertFails(conn, "SELECT (1", "Expected");
        }
    }

    @Test
    void unknownTableAndColumn(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            assertFails(conn, "SELECT * FROM no_such_table", "no_such_table");
            assertFails(conn, "SELECT no_such_column FROM tpch.nation", "no_such_column");
            assertFails(conn, "INSERT INTO no_such_table VALUES (1)", "no_such_table");
        }
    }

    @Test
    void errorsAtRunTime(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            assertFails(conn, "SELECT 1 / 0", "Divide by zero");
            // Fails after many rows have streamed: the server's message still reaches next(). The driver throws
            // it as its own unchecked FlightRuntimeException there, not as an SQLException (driver behaviour).
            assertFails(conn, "SELECT CAST(CASE WHEN value < 300000 THEN '1' ELSE 'oops' END AS INT) "
                    + "FROM generate_series(1, 400000)", "oops", Exception.class);
        }
    }

    @Test
    void ddlErrors(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("dup");
        try (Connection conn = server.connect()) {
            Jdbc.update(conn, "CREATE TABLE " + table + " (id INT)");
            assertFails(conn, "CREATE TABLE " + table + " (id INT)", "already exists");
            assertFails(conn, "INSERT INTO " + table + " VALUES ('not a number')", "not a number");
            assertFails(conn, "DROP TABLE " + table + "_missing", table + "_missing");
            Jdbc.update(conn, "DROP TABLE " + table);
        }
    }

    @Test
    void preparedStatementErrors(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            SQLException e = assertThrows(SQLException.class, () -> conn.prepareStatement("SELECT * FROM nowhere"));
            assertTrue(AuthTest.chain(e).contains("nowhere"), AuthTest.chain(e));
            assertEquals(1L, Jdbc.count(conn, "SELECT 1"));
        }
    }
}
