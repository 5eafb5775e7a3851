package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.Date;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Types;
import java.util.Arrays;
import java.util.List;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** PreparedStatement: parameters for queries and updates, update counts, batches. */
@ExtendWith(SharedServer.class)
class PreparedStatementTest {

    @Test
    void queryParametersCanBeRebound(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect();
                PreparedStatement ps = conn.prepareStatement(
                        "SELECT n_name, n_regionkey FROM tpch.nation WHERE n_nationkey = ?")) {
            assertEquals(1, ps.getParameterMetaData().getParameterCount());
            assertEquals(2, ps.getMetaData().getColumnCount());
            ps.setInt(1, 7);
            try (ResultSet rs = ps.executeQuery()) {
                assertTrue(rs.next());
                assertEquals("GERMANY", rs.getString(1));
                assertEquals(3, rs.getInt(2));
                assertFalse(rs.next());
            }
            ps.setLong(1, 3);
            assertEquals(List.of("CANADA"), Jdbc.strings(ps.executeQuery(), "n_name"));
            ps.setInt(1, 999);
            assertEquals(List.of(), Jdbc.strings(ps.executeQuery(), "n_name"));
        }
    }

    @Test
    void stringAndSeveralParameters(ContrailServer server) throws SQLException {
        String sql = "SELECT n_nationkey FROM tpch.nation WHERE n_name LIKE ? AND n_regionkey = ? ORDER BY 1";
        try (Connection conn = server.connect(); PreparedStatement ps = conn.prepareStatement(sql)) {
            for (Object[] args : new Object[][] {{"I%", 2}, {"%A%", 0}, {"%", 4}}) {
                ps.setString(1, (String) args[0]);
                ps.setInt(2, (Integer) args[1]);
                List<String> got = Jdbc.strings(ps.executeQuery(), "n_nationkey");
                String literal = sql.replaceFirst("\\?", "'" + args[0] + "'").replaceFirst("\\?", args[1].toString());
                List<String> expected = Jdbc.strings(conn.createStatement().executeQuery(literal), "n_nationkey");
                assertFalse(expected.isEmpty(), literal);
                assertEquals(expected, got, literal);
            }
        }
    }

    /**
     * The server keeps the plan made when a statement is prepared for its first
     * execution; rows written and tables replaced in between must still show.
     */
    @Test
    void aPreparedQuerySeesWhatChangedAfterItWasPrepared(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("replanned");
        String sql = "SELECT sum(x) AS s FROM " + table;
        try (Connection conn = server.connect()) {
            Jdbc.update(conn, "CREATE TABLE " + table + " (x BIGINT)");
            Jdbc.update(conn, "INSERT INTO " + table + " VALUES (1)");
            try (PreparedStatement ps = conn.prepareStatement(sql)) {
                Jdbc.update(conn, "INSERT INTO " + table + " VALUES (2)");
                assertEquals(List.of("3"), Jdbc.strings(ps.executeQuery(), "s"));
            }
            try (PreparedStatement ps = conn.prepareStatement(sql)) {
                Jdbc.update(conn, "DROP TABLE " + table);
                Jdbc.update(conn, "CREATE TABLE " + table + " (x BIGINT)");
                Jdbc.update(conn, "INSERT INTO " + table + " VALUES (10), (20)");
                assertEquals(List.of("30"), Jdbc.strings(ps.executeQuery(), "s"));
                assertEquals(List.of("30"), Jdbc.strings(ps.executeQuery(), "s"), "executed again");
            }
            Jdbc.update(conn, "DROP TABLE " + table);
        }
    }

    @Test
    void updatesReportCounts(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("prep");
        try (Connection conn = server.connect()) {
            Jdbc.update(conn, "CREATE TABLE " + table + " (id BIGINT, name VARCHAR, amount DECIMAL(10, 2), day DATE)");
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " VALUES (?, ?, ?, ?)")) {
                assertEquals(4, ins.getParameterMetaData().getParameterCount());
                for (int i = 1; i <= 3; i++) {
                    ins.setLong(1, i);
                    ins.setString(2, "name " + i);
                    ins.setBigDecimal(3, new BigDecimal(i + ".50"));
                    ins.setDate(4, Date.valueOf("2024-01-0" + i));
                    assertEquals(1, ins.executeUpdate());
                }
                ins.setLong(1, 4);
                ins.setNull(2, Types.VARCHAR);
                ins.setNull(3, Types.DECIMAL);
                ins.setNull(4, Types.DATE);
                assertEquals(1, ins.executeUpdate());
            }
            try (PreparedStatement upd = conn.prepareStatement("UPDATE " + table + " SET name = ? WHERE id >= ?")) {
                upd.setString(1, "renamed");
                upd.setInt(2, 2);
                assertEquals(3, upd.executeUpdate());
            }
            try (PreparedStatement del = conn.prepareStatement("DELETE FROM " + table + " WHERE id = ?")) {
                del.setInt(1, 4);
                assertEquals(1, del.executeUpdate());
                assertEquals(0, del.executeUpdate(), "nothing left to delete");
            }
            assertEquals(List.of("name 1", "renamed", "renamed"),
                    Jdbc.strings(conn.createStatement().executeQuery("SELECT name FROM " + table + " ORDER BY id"), "name"));
            assertEquals(new BigDecimal("7.50"), Jdbc.scalar(conn, "SELECT sum(amount) FROM " + table), "1.50 + 2.50 + 3.50");
            Jdbc.update(conn, "DROP TABLE " + table);
        }
    }

    /** The driver sends every batched row in one DoPut; Contrail inserts them in one atomic commit. */
    @Test
    void executeBatchInsertsEveryRowOnce(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("batch");
        int rows = 500;
        try (Connection conn = server.connect()) {
            Jdbc.update(conn, "CREATE TABLE " + table + " (id INT, label VARCHAR)");
            try (PreparedStatement ps = conn.prepareStatement("INSERT INTO " + table + " VALUES (?, ?)")) {
                for (int i = 0; i < rows; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row-" + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                assertEquals(rows, Arrays.stream(counts).sum(), Arrays.toString(counts));
            }
            assertEquals((long) rows, Jdbc.count(conn, "SELECT count(*) FROM " + table));
            assertEquals((long) rows, Jdbc.count(conn, "SELECT count(DISTINCT id) FROM " + table));
            assertEquals("row-499", Jdbc.scalar(conn, "SELECT label FROM " + table + " WHERE id = 499"));
            Jdbc.update(conn, "DROP TABLE " + table);
        }
    }

    @Test
    void plainStatementUpdateCounts(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("counts");
        try (Connection conn = server.connect(); var st = conn.createStatement()) {
            assertEquals(0, st.executeUpdate("CREATE TABLE " + table + " (id INT)"));
            assertEquals(3, st.executeUpdate("INSERT INTO " + table + " VALUES (1), (2), (3)"));
            assertEquals(25, st.executeUpdate("INSERT INTO " + table + " SELECT n_nationkey + 100 FROM tpch.nation"));
            assertEquals(2, st.executeUpdate("UPDATE " + table + " SET id = id + 1000 WHERE id IN (1, 2)"));
            assertEquals(5, st.executeUpdate("DELETE FROM " + table + " WHERE id >= 100 AND id < 105"));
            assertEquals(23L, Jdbc.count(conn, "SELECT count(*) FROM " + table));
            assertEquals(2L, Jdbc.count(conn, "SELECT count(*) FROM " + table + " WHERE id > 1000"));
            assertFalse(st.execute("DROP TABLE " + table), "DDL has no result set");
        }
    }
}
