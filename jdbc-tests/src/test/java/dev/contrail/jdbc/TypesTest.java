package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigDecimal;
import java.sql.Array;
import java.sql.Connection;
import java.sql.Date;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Time;
import java.sql.Timestamp;
import java.sql.Types;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.LocalTime;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Every SQL type Contrail returns, read through getObject and the typed getters. The JVM runs with
 * {@code -Duser.timezone=UTC} (pom.xml) so wall-clock values compare without a zone shift.
 */
@ExtendWith(SharedServer.class)
class TypesTest {

    private static ResultSet one(Statement st, String sql) throws SQLException {
        ResultSet rs = st.executeQuery(sql);
        assertTrue(rs.next(), "one row from " + sql);
        return rs;
    }

    @Test
    void integersFloatsAndDecimals(ContrailServer server) throws SQLException {
        String sql = "SELECT CAST(-7 AS TINYINT) AS i8, CAST(-300 AS SMALLINT) AS i16, CAST(70000 AS INT) AS i32, "
                + "CAST(9000000000 AS BIGINT) AS i64, CAST(1.5 AS REAL) AS f32, CAST(2.25 AS DOUBLE) AS f64, "
                + "CAST(12345.67 AS DECIMAL(10, 2)) AS dec, CAST(-0.000001 AS DECIMAL(38, 6)) AS dec38";
        try (Connection conn = server.connect(); Statement st = conn.createStatement(); ResultSet rs = one(st, sql)) {
            ResultSetMetaData md = rs.getMetaData();
            assertEquals(List.of(Types.TINYINT, Types.SMALLINT, Types.INTEGER, Types.BIGINT, Types.FLOAT, Types.DOUBLE,
                    Types.DECIMAL, Types.DECIMAL), columnTypes(md));
            assertEquals((byte) -7, rs.getByte("i8"));
            assertEquals(-7, rs.getInt("i8"));
            assertEquals((short) -300, rs.getShort("i16"));
            assertEquals(70000, rs.getInt("i32"));
            assertEquals(9_000_000_000L, rs.getLong("i64"));
            assertEquals(1.5f, rs.getFloat("f32"));
            assertEquals(2.25, rs.getDouble("f64"));
            assertEquals(new BigDecimal("12345.67"), rs.getBigDecimal("dec"));
            assertEquals(new BigDecimal("-0.000001"), rs.getBigDecimal("dec38"));
            assertEquals(10, md.getPrecision(7));
            assertEquals(2, md.getScale(7));
            assertEquals(Byte.valueOf((byte) -7), rs.getObject("i8"));
            assertEquals(Short.valueOf((short) -300), rs.getObject("i16"));
            assertEquals(Integer.valueOf(70000), rs.getObject("i32"));
            assertEquals(Long.valueOf(9_000_000_000L), rs.getObject("i64"));
            assertEquals(Float.valueOf(1.5f), rs.getObject("f32"));
            assertEquals(Double.valueOf(2.25), rs.getObject("f64"));
            assertEquals(new BigDecimal("12345.67"), rs.getObject("dec"));
            assertEquals("12345.67", rs.getString("dec"));
            assertFalse(rs.next());
        }
    }

    @Test
    void stringsBooleansAndBinary(ContrailServer server) throws SQLException {
        String sql = "SELECT 'héllo, wörld ✓' AS s, CAST('' AS VARCHAR) AS empty, TRUE AS t, FALSE AS f, "
                + "X'DEADBEEF' AS bin, arrow_typeof('x') AS string_type";
        try (Connection conn = server.connect(); Statement st = conn.createStatement(); ResultSet rs = one(st, sql)) {
            ResultSetMetaData md = rs.getMetaData();
            assertEquals(List.of(Types.VARCHAR, Types.VARCHAR, Types.BOOLEAN, Types.BOOLEAN, Types.VARBINARY,
                    Types.VARCHAR), columnTypes(md));
            assertEquals("héllo, wörld ✓", rs.getString("s"));
            assertEquals("héllo, wörld ✓", rs.getObject("s"));
            assertEquals("", rs.getString("empty"));
            assertTrue(rs.getBoolean("t"));
            assertEquals(Boolean.FALSE, rs.getObject("f"));
            assertArrayEquals(new byte[] {(byte) 0xDE, (byte) 0xAD, (byte) 0xBE, (byte) 0xEF}, rs.getBytes("bin"));
            assertArrayEquals(new byte[] {(byte) 0xDE, (byte) 0xAD, (byte) 0xBE, (byte) 0xEF}, (byte[]) rs.getObject("bin"));
        }
    }

    @Test
    void datesTimesTimestampsAndIntervals(ContrailServer server) throws SQLException {
        String sql = "SELECT DATE '2024-02-29' AS d, "
                + "CAST('13:14:15.123' AS TIME) AS tm, "
                + "TIMESTAMP '2024-02-29 13:14:15.123456' AS ts, "
                + "arrow_cast('2024-02-29T13:14:15.5Z', 'Timestamp(Millisecond, Some(\"+02:00\"))') AS tstz, "
                + "INTERVAL '1 month 2 days 3 hours' AS iv";
        try (Connection conn = server.connect(); Statement st = conn.createStatement(); ResultSet rs = one(st, sql)) {
            ResultSetMetaData md = rs.getMetaData();
            // Drivers before 18.0 report zoned timestamps as plain TIMESTAMP.
            int zoned = Jdbc.driverMajorVersion() >= 18 ? Types.TIMESTAMP_WITH_TIMEZONE : Types.TIMESTAMP;
            assertEquals(List.of(Types.DATE, Types.TIME, Types.TIMESTAMP, zoned), columnTypes(md).subList(0, 4));
            assertEquals(Date.valueOf("2024-02-29"), rs.getDate("d"));
            assertEquals(LocalDate.of(2024, 2, 29), rs.getDate("d").toLocalDate());
            assertEquals(Date.valueOf("2024-02-29"), rs.getObject("d"));

            Time time = rs.getTime("tm");
            assertEquals(LocalTime.of(13, 14, 15), time.toLocalTime());
            assertEquals(123, Math.floorMod(time.getTime(), 1000), "milliseconds of the time");

            Timestamp ts = rs.getTimestamp("ts");
            assertEquals(LocalDateTime.of(2024, 2, 29, 13, 14, 15, 123_456_000), ts.toLocalDateTime());
            assertEquals(ts, rs.getObject("ts"));

            // A zoned timestamp is an instant: 13:14:15.5 UTC, whatever zone it is shown in.
            Timestamp tstz = rs.getTimestamp("tstz");
            assertEquals(Instant.parse("2024-02-29T13:14:15.500Z"), tstz.toInstant());

            String interval = rs.getString("iv");
            assertTrue(interval != null && !interval.isBlank(), "interval as text: " + interval);
            assertTrue(rs.getObject("iv") != null, "interval object");
        }
    }


    @Test
    void nullsOfEveryType(ContrailServer server) throws SQLException {
        String sql = "SELECT CAST(NULL AS INT) AS i, CAST(NULL AS BIGINT) AS l, CAST(NULL AS DOUBLE) AS dbl, "
                + "CAST(NULL AS DECIMAL(10, 2)) AS dec, CAST(NULL AS VARCHAR) AS s, CAST(NULL AS BOOLEAN) AS b, "
                + "CAST(NULL AS DATE) AS d, CAST(NULL AS TIMESTAMP) AS ts, CAST(NULL AS BYTEA) AS bin";
        try (Connection conn = server.connect(); Statement st = conn.createStatement(); ResultSet rs = one(st, sql)) {
            for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
                assertNull(rs.getObject(i), rs.getMetaData().getColumnName(i));
                assertTrue(rs.wasNull());
            }
            assertEquals(0, rs.getInt("i"));
            assertTrue(rs.wasNull());
            assertEquals(0L, rs.getLong("l"));
            assertFalse(rs.getBoolean("b"));
            assertNull(rs.getString("s"));
            assertNull(rs.getBigDecimal("dec"));
            assertNull(rs.getDate("d"));
            assertNull(rs.getTimestamp("ts"));
            assertNull(rs.getBytes("bin"));
        }
    }

    @Test
    void listsAndStructs(ContrailServer server) throws SQLException {
        String sql = "SELECT make_array(1, 2, 3) AS arr, make_array('a', NULL, 'c') AS strs, "
                + "named_struct('id', 7, 'name', 'seven') AS st";
        try (Connection conn = server.connect(); Statement st = conn.createStatement(); ResultSet rs = one(st, sql)) {
            // The driver reports structs as JAVA_OBJECT and hands them back as a Map.
            assertEquals(List.of(Types.ARRAY, Types.ARRAY, Types.JAVA_OBJECT), columnTypes(rs.getMetaData()));
            Array arr = rs.getArray("arr");
            assertArrayEquals(new Object[] {1L, 2L, 3L}, (Object[]) arr.getArray());
            assertEquals(List.of(1L, 2L, 3L), rs.getObject("arr"));
            assertEquals(java.util.Arrays.asList("a", null, "c"), texts((List<?>) rs.getObject("strs")));
            Object struct = rs.getObject("st");
            assertInstanceOf(Map.class, struct);
            assertEquals(Map.of("id", 7L, "name", "seven"), normalise((Map<?, ?>) struct));
        }
    }

    /** The driver hands strings inside lists and structs back as Arrow {@code Text}; compare by value. */
    private static Map<String, Object> normalise(Map<?, ?> m) {
        java.util.Map<String, Object> out = new java.util.TreeMap<>();
        m.forEach((k, v) -> out.put(k.toString(), v == null || v instanceof Number ? v : v.toString()));
        return out;
    }

    private static List<String> texts(List<?> list) {
        return list.stream().map(v -> v == null ? null : v.toString()).collect(java.util.stream.Collectors.toList());
    }

    /** The same values stored in a Delta table and read back (what BI tools mostly do). */
    @Test
    void valuesRoundTripThroughATable(ContrailServer server) throws SQLException {
        String table = Jdbc.uniqueName("types");
        try (Connection conn = server.connect(); Statement st = conn.createStatement()) {
            st.executeUpdate("CREATE TABLE " + table + " (i8 TINYINT, i16 SMALLINT, i32 INT, i64 BIGINT, f32 REAL, "
                    + "f64 DOUBLE, dec DECIMAL(12, 3), s VARCHAR, b BOOLEAN, d DATE, ts TIMESTAMP, bin BYTEA)");
            assertEquals(2, st.executeUpdate("INSERT INTO " + table + " VALUES "
                    + "(1, 2, 3, 4, 5.5, 6.25, 7.125, 'eight', true, DATE '2001-02-03', "
                    + "TIMESTAMP '2001-02-03 04:05:06.789', X'0102'), "
                    + "(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"));
            try (ResultSet rs = st.executeQuery("SELECT * FROM " + table + " ORDER BY i8 NULLS LAST")) {
                assertTrue(rs.next());
                assertEquals(1, rs.getByte("i8"));
                assertEquals(2, rs.getShort("i16"));
                assertEquals(3, rs.getInt("i32"));
                assertEquals(4L, rs.getLong("i64"));
                assertEquals(5.5f, rs.getFloat("f32"));
                assertEquals(6.25, rs.getDouble("f64"));
                assertEquals(new BigDecimal("7.125"), rs.getBigDecimal("dec"));
                assertEquals("eight", rs.getString("s"));
                assertTrue(rs.getBoolean("b"));
                assertEquals(Date.valueOf("2001-02-03"), rs.getDate("d"));
                assertEquals(Timestamp.valueOf("2001-02-03 04:05:06.789"), rs.getTimestamp("ts"));
                assertArrayEquals(new byte[] {1, 2}, rs.getBytes("bin"));
                assertTrue(rs.next());
                for (int i = 1; i <= 12; i++) {
                    assertNull(rs.getObject(i));
                }
                assertFalse(rs.next());
            }
            st.executeUpdate("DROP TABLE " + table);
        }
    }

    private static List<Integer> columnTypes(ResultSetMetaData md) throws SQLException {
        Integer[] out = new Integer[md.getColumnCount()];
        for (int i = 1; i <= out.length; i++) {
            out[i - 1] = md.getColumnType(i);
        }
        return List.of(out);
    }
}
