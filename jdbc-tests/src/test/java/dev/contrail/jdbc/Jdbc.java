package dev.contrail.jdbc;

import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;

/** Small helpers shared by the tests; nothing here hides what the driver does. */
final class Jdbc {
    private Jdbc() {}

    /** The driver version this surefire execution put on the class path. */
    static String expectedDriverVersion() {
        String v = System.getProperty("contrail.jdbc.driver.version", "");
        if (v.isBlank()) {
            throw new IllegalStateException("run through Maven (mvn verify): -Dcontrail.jdbc.driver.version is not set");
        }
        return v;
    }

    static int driverMajorVersion() {
        return Integer.parseInt(expectedDriverVersion().split("\\.")[0]);
    }

    /** A table name no other test uses. */
    static String uniqueName(String prefix) {
        return prefix + "_" + UUID.randomUUID().toString().replace("-", "").substring(0, 12);
    }

    static Object scalar(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            if (!rs.next()) {
                throw new AssertionError("no row from: " + sql);
            }
            Object value = rs.getObject(1);
            if (rs.next()) {
                throw new AssertionError("more than one row from: " + sql);
            }
            return value;
        }
    }

    static long count(Connection conn, String sql) throws SQLException {
        return ((Number) scalar(conn, sql)).longValue();
    }

    static int update(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement()) {
            return st.executeUpdate(sql);
        }
    }

    /** Every row as a column-label -> getObject map, in order. */
    static List<Map<String, Object>> rows(ResultSet rs) throws SQLException {
        ResultSetMetaData md = rs.getMetaData();
        List<Map<String, Object>> out = new ArrayList<>();
        while (rs.next()) {
            Map<String, Object> row = new LinkedHashMap<>();
            for (int i = 1; i <= md.getColumnCount(); i++) {
                row.put(md.getColumnLabel(i), rs.getObject(i));
            }
            out.add(row);
        }
        return out;
    }

    /** One column of every row, read with {@link ResultSet#getString(String)}. */
    static List<String> strings(ResultSet rs, String column) throws SQLException {
        List<String> out = new ArrayList<>();
        try (rs) {
            while (rs.next()) {
                out.add(rs.getString(column));
            }
        }
        return out;
    }
}
