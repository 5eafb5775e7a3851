package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Types;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * DatabaseMetaData as BI tools use it when they connect and browse the object tree.
 *
 * <p>The probe lists are the calls DBeaver and Tableau make, read from their public code:
 * <ul>
 *   <li>DBeaver connect: {@code JDBCDataSource}/{@code JDBCDataSourceInfo} (server info, terms, transactions),
 *       {@code JDBCSQLDialect.initDriverSettings} (quoting, identifier case, catalog/schema usage, keywords and
 *       function lists), {@code JDBCBasicDataTypeCache} ({@code getTypeInfo}), {@code GenericDataSource}
 *       ({@code getCatalogs}, {@code getSchemas(catalog, "%")}, {@code getCatalog}/{@code getSchema},
 *       liveness via {@code isValid} and {@code getTables(.., "UN_EXIST_DBEAVER_TBL_NAME1978", ..)}).</li>
 *   <li>DBeaver browse: {@code GenericMetaModel} ({@code getTables(cat, schema, "%", null)},
 *       {@code getColumns(.., "%")}, {@code getPrimaryKeys}, {@code getImportedKeys}, {@code getExportedKeys},
 *       {@code getIndexInfo(.., false, true)}, {@code getFunctions}, {@code getProcedures}).</li>
 *   <li>Tableau "Other Databases (JDBC)": {@code getCatalogs}/{@code getSchemas}/{@code getTables}/{@code getColumns}
 *       (connector-plugin-sdk docs/metadata-enumeration.md), primary/foreign keys and index info (the
 *       CAP_JDBC_METADATA_READ_* capabilities), {@code supportsANSI92EntryLevelSQL} via getSQL92Level on connect
 *       (apache/arrow-java#159), and columns of {@code SELECT * ... WHERE 1=0} through ResultSetMetaData
 *       (CAP_JDBC_METADATA_USE_RESULTSET_FOR_TABLE).</li>
 * </ul>
 */
@ExtendWith(SharedServer.class)
class MetadataTest {
    private static final String SCHEMA = Jdbc.uniqueName("md");

    @BeforeAll
    static void createObjects(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            Jdbc.update(conn, "CREATE SCHEMA " + SCHEMA);
            Jdbc.update(conn, "CREATE TABLE " + SCHEMA + ".items (id BIGINT NOT NULL, name VARCHAR, "
                    + "price DECIMAL(10, 2), qty INT, ratio DOUBLE, active BOOLEAN, added DATE, seen TIMESTAMP)");
            Jdbc.update(conn, "CREATE TABLE " + SCHEMA + ".item_2 (x INT)");
            Jdbc.update(conn, "CREATE VIEW " + SCHEMA + ".cheap AS SELECT id, name FROM " + SCHEMA
                    + ".items WHERE price < 10");
        }
    }

    @AfterAll
    static void dropObjects(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            Jdbc.update(conn, "DROP VIEW " + SCHEMA + ".cheap");
            Jdbc.update(conn, "DROP TABLE " + SCHEMA + ".items");
            Jdbc.update(conn, "DROP TABLE " + SCHEMA + ".item_2");
            Jdbc.update(conn, "DROP SCHEMA " + SCHEMA);
        }
    }

    @FunctionalInterface
    interface Probe {
        Object call(DatabaseMetaData md) throws Exception;
    }

    /** Every call must answer without throwing (and without the driver's NullPointerExceptions). */
    private static void probeAll(Connection conn, Map<String, Probe> probes) throws SQLException {
        DatabaseMetaData md = conn.getMetaData();
        List<String> failures = new ArrayList<>();
        for (Map.Entry<String, Probe> p : probes.entrySet()) {
            try {
                Object v = p.getValue().call(md);
                if (v instanceof ResultSet rs) {
                    try (rs) {
                        while (rs.next()) {
                            for (int i = 1; i <= rs.getMetaData().getColumnCount(); i++) {
                                rs.getObject(i);
                            }
                        }
                    }
                }
            } catch (Exception | Error e) {
                failures.add(p.getKey() + " -> " + AuthTest.chain(e));
            }
        }
        if (!failures.isEmpty()) {
            fail(failures.size() + " DatabaseMetaData calls failed:\n  " + String.join("\n  ", failures));
        }
    }

    @Test
    void dbeaverConnectPath(ContrailServer server) throws SQLException {
        Map<String, Probe> p = new LinkedHashMap<>();
        p.put("getDatabaseMajorVersion", DatabaseMetaData::getDatabaseMajorVersion);
        p.put("getDatabaseMinorVersion", DatabaseMetaData::getDatabaseMinorVersion);
        p.put("getDatabaseProductName", DatabaseMetaData::getDatabaseProductName);
        p.put("getDatabaseProductVersion", DatabaseMetaData::getDatabaseProductVersion);
        p.put("getDriverName", DatabaseMetaData::getDriverName);
        p.put("getDriverVersion", DatabaseMetaData::getDriverVersion);
        p.put("getSchemaTerm", DatabaseMetaData::getSchemaTerm);
        p.put("getProcedureTerm", DatabaseMetaData::getProcedureTerm);
        p.put("getCatalogTerm", DatabaseMetaData::getCatalogTerm);
        p.put("supportsBatchUpdates", DatabaseMetaData::supportsBatchUpdates);
        p.put("supportsTransactions", DatabaseMetaData::supportsTransactions);
        p.put("getDefaultTransactionIsolation", DatabaseMetaData::getDefaultTransactionIsolation);
        p.put("isReadOnly", DatabaseMetaData::isReadOnly);
        p.put("getIdentifierQuoteString", DatabaseMetaData::getIdentifierQuoteString);
        p.put("getSQLStateType", DatabaseMetaData::getSQLStateType);
        p.put("getSearchStringEscape", DatabaseMetaData::getSearchStringEscape);
        p.put("getCatalogSeparator", DatabaseMetaData::getCatalogSeparator);
        p.put("getExtraNameCharacters", DatabaseMetaData::getExtraNameCharacters);
        p.put("isCatalogAtStart", DatabaseMetaData::isCatalogAtStart);
        p.put("supportsCorrelatedSubqueries", DatabaseMetaData::supportsCorrelatedSubqueries);
        p.put("supportsSubqueriesInComparisons", DatabaseMetaData::supportsSubqueriesInComparisons);
        p.put("supportsSubqueriesInExists", DatabaseMetaData::supportsSubqueriesInExists);
        p.put("supportsSubqueriesInIns", DatabaseMetaData::supportsSubqueriesInIns);
        p.put("supportsSubqueriesInQuantifieds", DatabaseMetaData::supportsSubqueriesInQuantifieds);
        p.put("supportsMixedCaseIdentifiers", DatabaseMetaData::supportsMixedCaseIdentifiers);
        p.put("supportsMixedCaseQuotedIdentifiers", DatabaseMetaData::supportsMixedCaseQuotedIdentifiers);
        p.put("storesUpperCaseIdentifiers", DatabaseMetaData::storesUpperCaseIdentifiers);
        p.put("storesLowerCaseIdentifiers", DatabaseMetaData::storesLowerCaseIdentifiers);
        p.put("storesMixedCaseIdentifiers", DatabaseMetaData::storesMixedCaseIdentifiers);
        p.put("storesUpperCaseQuotedIdentifiers", DatabaseMetaData::storesUpperCaseQuotedIdentifiers);
        p.put("storesLowerCaseQuotedIdentifiers", DatabaseMetaData::storesLowerCaseQuotedIdentifiers);
        p.put("storesMixedCaseQuotedIdentifiers", DatabaseMetaData::storesMixedCaseQuotedIdentifiers);
        p.put("supportsCatalogsInDataManipulation", DatabaseMetaData::supportsCatalogsInDataManipulation);
        p.put("supportsCatalogsInTableDefinitions", DatabaseMetaData::supportsCatalogsInTableDefinitions);
        p.put("supportsCatalogsInProcedureCalls", DatabaseMetaData::supportsCatalogsInProcedureCalls);
        p.put("supportsCatalogsInIndexDefinitions", DatabaseMetaData::supportsCatalogsInIndexDefinitions);
        p.put("supportsCatalogsInPrivilegeDefinitions", DatabaseMetaData::supportsCatalogsInPrivilegeDefinitions);
        p.put("supportsSchemasInDataManipulation", DatabaseMetaData::supportsSchemasInDataManipulation);
        p.put("supportsSchemasInTableDefinitions", DatabaseMetaData::supportsSchemasInTableDefinitions);
        p.put("supportsSchemasInProcedureCalls", DatabaseMetaData::supportsSchemasInProcedureCalls);
        p.put("supportsSchemasInIndexDefinitions", DatabaseMetaData::supportsSchemasInIndexDefinitions);
        p.put("supportsSchemasInPrivilegeDefinitions", DatabaseMetaData::supportsSchemasInPrivilegeDefinitions);
        p.put("getSQLKeywords", DatabaseMetaData::getSQLKeywords);
        p.put("getNumericFunctions", DatabaseMetaData::getNumericFunctions);
        p.put("getStringFunctions", DatabaseMetaData::getStringFunctions);
        p.put("getSystemFunctions", DatabaseMetaData::getSystemFunctions);
        p.put("getTimeDateFunctions", DatabaseMetaData::getTimeDateFunctions);
        p.put("getTypeInfo", DatabaseMetaData::getTypeInfo);
        p.put("getCatalogs", DatabaseMetaData::getCatalogs);
        p.put("getSchemas(catalog, %)", md -> md.getSchemas("contrail", "%"));
        p.put("getSchemas()", DatabaseMetaData::getSchemas);
        p.put("getTableTypes", DatabaseMetaData::getTableTypes);
        p.put("getTables(liveness probe)", md -> md.getTables(null, null, "UN_EXIST_DBEAVER_TBL_NAME1978", null));
        p.put("getTables(cat, schema, %, null)", md -> md.getTables("contrail", SCHEMA, "%", null));
        p.put("getColumns(cat, schema, table, %)", md -> md.getColumns("contrail", SCHEMA, "items", "%"));
        p.put("getPrimaryKeys", md -> md.getPrimaryKeys("contrail", SCHEMA, "items"));
        p.put("getImportedKeys", md -> md.getImportedKeys("contrail", SCHEMA, "items"));
        p.put("getExportedKeys", md -> md.getExportedKeys("contrail", SCHEMA, "items"));
        p.put("getIndexInfo", md -> md.getIndexInfo("contrail", SCHEMA, "items", false, true));
        p.put("getFunctions", md -> md.getFunctions("contrail", SCHEMA, "%"));
        p.put("getProcedures", md -> md.getProcedures("contrail", SCHEMA, "%"));
        try (Connection conn = server.connect()) {
            assertTrue(conn.isValid(10));
            assertTrue(conn.getAutoCommit());
            conn.getTransactionIsolation();
            conn.getCatalog();
            conn.getSchema();
            probeAll(conn, p);
        }
    }

    @Test
    void tableauConnectPath(ContrailServer server) throws SQLException {
        Map<String, Probe> p = new LinkedHashMap<>();
        p.put("supportsANSI92EntryLevelSQL", DatabaseMetaData::supportsANSI92EntryLevelSQL);
        p.put("supportsANSI92IntermediateSQL", DatabaseMetaData::supportsANSI92IntermediateSQL);
        p.put("supportsANSI92FullSQL", DatabaseMetaData::supportsANSI92FullSQL);
        p.put("supportsMinimumSQLGrammar", DatabaseMetaData::supportsMinimumSQLGrammar);
        p.put("supportsCoreSQLGrammar", DatabaseMetaData::supportsCoreSQLGrammar);
        p.put("supportsExtendedSQLGrammar", DatabaseMetaData::supportsExtendedSQLGrammar);
        p.put("supportsOuterJoins", DatabaseMetaData::supportsOuterJoins);
        p.put("supportsFullOuterJoins", DatabaseMetaData::supportsFullOuterJoins);
        p.put("supportsLimitedOuterJoins", DatabaseMetaData::supportsLimitedOuterJoins);
        p.put("supportsGroupBy", DatabaseMetaData::supportsGroupBy);
        p.put("supportsUnion", DatabaseMetaData::supportsUnion);
        p.put("supportsUnionAll", DatabaseMetaData::supportsUnionAll);
        p.put("supportsColumnAliasing", DatabaseMetaData::supportsColumnAliasing);
        p.put("supportsOrderByUnrelated", DatabaseMetaData::supportsOrderByUnrelated);
        p.put("supportsLikeEscapeClause", DatabaseMetaData::supportsLikeEscapeClause);
        p.put("supportsStoredProcedures", DatabaseMetaData::supportsStoredProcedures);
        p.put("supportsSavepoints", DatabaseMetaData::supportsSavepoints);
        p.put("supportsMultipleResultSets", DatabaseMetaData::supportsMultipleResultSets);
        p.put("supportsGetGeneratedKeys", DatabaseMetaData::supportsGetGeneratedKeys);
        p.put("supportsResultSetType(FORWARD_ONLY)", md -> md.supportsResultSetType(ResultSet.TYPE_FORWARD_ONLY));
        p.put("getMaxColumnNameLength", DatabaseMetaData::getMaxColumnNameLength);
        p.put("getMaxTableNameLength", DatabaseMetaData::getMaxTableNameLength);
        p.put("getMaxSchemaNameLength", DatabaseMetaData::getMaxSchemaNameLength);
        p.put("getMaxCatalogNameLength", DatabaseMetaData::getMaxCatalogNameLength);
        p.put("getMaxStatementLength", DatabaseMetaData::getMaxStatementLength);
        p.put("getMaxConnections", DatabaseMetaData::getMaxConnections);
        p.put("nullsAreSortedHigh", DatabaseMetaData::nullsAreSortedHigh);
        p.put("nullPlusNonNullIsNull", DatabaseMetaData::nullPlusNonNullIsNull);
        p.put("getCatalogs", DatabaseMetaData::getCatalogs);
        p.put("getSchemas", DatabaseMetaData::getSchemas);
        p.put("getTables(null, schema, %, [TABLE, VIEW])",
                md -> md.getTables(null, SCHEMA, "%", new String[] {"TABLE", "VIEW"}));
        p.put("getColumns(null, schema, items, null)", md -> md.getColumns(null, SCHEMA, "items", null));
        try (Connection conn = server.connect()) {
            probeAll(conn, p);
            // CAP_JDBC_METADATA_USE_RESULTSET_FOR_TABLE: columns from an empty prepared query.
            try (var ps = conn.prepareStatement("SELECT * FROM " + SCHEMA + ".items WHERE 1=0")) {
                ResultSetMetaData rsmd = ps.getMetaData();
                assertNotNull(rsmd, "prepared statement metadata");
                assertEquals(8, rsmd.getColumnCount());
                assertEquals("id", rsmd.getColumnName(1));
                assertEquals(Types.BIGINT, rsmd.getColumnType(1));
                try (ResultSet rs = ps.executeQuery()) {
                    assertFalse(rs.next());
                    assertEquals(Types.DECIMAL, rs.getMetaData().getColumnType(3));
                }
            }
        }
    }

    @Test
    void serverInfoValues(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            DatabaseMetaData md = conn.getMetaData();
            assertEquals("Contrail", md.getDatabaseProductName());
            assertTrue(md.getDatabaseProductVersion().matches("\\d+\\.\\d+\\.\\d+.*"), md.getDatabaseProductVersion());
            assertEquals("\"", md.getIdentifierQuoteString());
            assertTrue(md.supportsANSI92EntryLevelSQL());
            assertFalse(md.supportsANSI92FullSQL());
            assertFalse(md.supportsTransactions(), "no multi-statement transactions; every statement commits");
            assertTrue(md.supportsBatchUpdates());
            assertTrue(md.supportsFullOuterJoins());
            Set<String> keywords = csv(md.getSQLKeywords());
            assertTrue(keywords.contains("EXPLAIN"), keywords.toString());
            assertTrue(csv(md.getNumericFunctions()).containsAll(Set.of("ABS", "ROUND", "SQRT")), md.getNumericFunctions());
            assertTrue(csv(md.getStringFunctions()).containsAll(Set.of("LOWER", "UPPER", "SUBSTR")), md.getStringFunctions());
            assertFalse(md.getTimeDateFunctions().isBlank());
            assertEquals("schema", md.getSchemaTerm());
            assertEquals("catalog", md.getCatalogTerm());
        }
    }

    private static Set<String> csv(String list) {
        Set<String> out = new TreeSet<>();
        for (String s : list.split(",")) {
            out.add(s.strip().toUpperCase());
        }
        return out;
    }

    @Test
    void catalogsAndSchemas(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            DatabaseMetaData md = conn.getMetaData();
            assertEquals(List.of("contrail"), Jdbc.strings(md.getCatalogs(), "TABLE_CAT"));
            List<String> all = Jdbc.strings(md.getSchemas(), "TABLE_SCHEM");
            assertTrue(all.containsAll(List.of("information_schema", "public", "tpch", SCHEMA)), all.toString());
            assertEquals(all.stream().sorted().toList(), all, "schemas are ordered");
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) {
                    assertEquals("contrail", rs.getString("TABLE_CATALOG"));
                }
            }
            assertEquals(List.of("tpch"), Jdbc.strings(md.getSchemas("contrail", "tp%"), "TABLE_SCHEM"));
            assertEquals(List.of("tpch"), Jdbc.strings(md.getSchemas(null, "tpc_"), "TABLE_SCHEM"));
            assertEquals(List.of(), Jdbc.strings(md.getSchemas("no_such_catalog", "%"), "TABLE_SCHEM"));
            assertEquals(List.of(), Jdbc.strings(md.getSchemas(null, "zz%"), "TABLE_SCHEM"));
        }
    }

    @Test
    void tablesWithTypeFilters(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            DatabaseMetaData md = conn.getMetaData();
            assertEquals(List.of("SYSTEM TABLE", "TABLE", "VIEW"), Jdbc.strings(md.getTableTypes(), "TABLE_TYPE"));
            assertEquals(List.of("cheap", "item_2", "items"), Jdbc.strings(md.getTables(null, SCHEMA, "%", null), "TABLE_NAME"));
            assertEquals(List.of("item_2", "items"),
                    Jdbc.strings(md.getTables(null, SCHEMA, "%", new String[] {"TABLE"}), "TABLE_NAME"));
            assertEquals(List.of("cheap"), Jdbc.strings(md.getTables(null, SCHEMA, "%", new String[] {"VIEW"}), "TABLE_NAME"));
            assertEquals(List.of("item_2", "items"), Jdbc.strings(md.getTables(null, SCHEMA, "item%", null), "TABLE_NAME"));
            // '_' is a one-character wildcard; escaped it is a literal underscore.
            assertEquals(List.of("item_2"), Jdbc.strings(md.getTables(null, SCHEMA, "item\\_2", null), "TABLE_NAME"));
            List<String> tpch = Jdbc.strings(md.getTables("contrail", "tpch", "%", new String[] {"TABLE"}), "TABLE_NAME");
            assertEquals(List.of("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"), tpch);
            List<String> system = Jdbc.strings(md.getTables(null, "information_schema", "%",
                    new String[] {"SYSTEM TABLE"}), "TABLE_NAME");
            assertTrue(system.containsAll(List.of("columns", "tables")), system.toString());
            try (ResultSet rs = md.getTables(null, SCHEMA, "items", null)) {
                assertTrue(rs.next());
                assertEquals("contrail", rs.getString("TABLE_CAT"));
                assertEquals(SCHEMA, rs.getString("TABLE_SCHEM"));
                assertEquals("TABLE", rs.getString("TABLE_TYPE"));
                assertFalse(rs.next());
            }
        }
    }

    @Test
    void columnsWithTypesNullabilityAndPositions(ContrailServer server) throws SQLException {
        record Col(String name, int type, int nullable, int position) {}
        List<Col> expected = List.of(
                new Col("id", Types.BIGINT, DatabaseMetaData.columnNoNulls, 1),
                new Col("name", Types.VARCHAR, DatabaseMetaData.columnNullable, 2),
                new Col("price", Types.DECIMAL, DatabaseMetaData.columnNullable, 3),
                new Col("qty", Types.INTEGER, DatabaseMetaData.columnNullable, 4),
                new Col("ratio", Types.DOUBLE, DatabaseMetaData.columnNullable, 5),
                new Col("active", Types.BOOLEAN, DatabaseMetaData.columnNullable, 6),
                new Col("added", Types.DATE, DatabaseMetaData.columnNullable, 7),
                new Col("seen", Types.TIMESTAMP, DatabaseMetaData.columnNullable, 8));
        try (Connection conn = server.connect()) {
            List<Col> actual = new ArrayList<>();
            try (ResultSet rs = conn.getMetaData().getColumns(null, SCHEMA, "items", "%")) {
                while (rs.next()) {
                    assertEquals("contrail", rs.getString("TABLE_CAT"));
                    assertEquals("items", rs.getString("TABLE_NAME"));
                    assertEquals(rs.getInt("NULLABLE") == DatabaseMetaData.columnNullable ? "YES" : "NO",
                            rs.getString("IS_NULLABLE"));
                    actual.add(new Col(rs.getString("COLUMN_NAME"), rs.getInt("DATA_TYPE"), rs.getInt("NULLABLE"),
                            rs.getInt("ORDINAL_POSITION")));
                    if (rs.getString("COLUMN_NAME").equals("price")) {
                        assertEquals(10, rs.getInt("COLUMN_SIZE"));
                        assertEquals(2, rs.getInt("DECIMAL_DIGITS"));
                    }
                }
            }
            assertEquals(expected, actual);
            assertEquals(List.of("name"),
                    Jdbc.strings(conn.getMetaData().getColumns(null, SCHEMA, "items", "na%"), "COLUMN_NAME"));
            assertEquals(List.of("id", "name"),
                    Jdbc.strings(conn.getMetaData().getColumns(null, SCHEMA, "cheap", null), "COLUMN_NAME"));
        }
    }

    /**
     * Drivers up to 18.3 answer getTypeInfo from Avatica's empty default instead of asking the server
     * (GetXdbcTypeInfo, which tests/python/test_metadata.py checks); a driver that forwards it must see every
     * column type here.
     */
    @Test
    void typeInfoIsWellFormed(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect(); ResultSet rs = conn.getMetaData().getTypeInfo()) {
            ResultSetMetaData md = rs.getMetaData();
            assertEquals("TYPE_NAME", md.getColumnLabel(1).toUpperCase());
            assertEquals("DATA_TYPE", md.getColumnLabel(2).toUpperCase());
            Set<Integer> types = new TreeSet<>();
            List<String> names = new ArrayList<>();
            while (rs.next()) {
                types.add(rs.getInt("DATA_TYPE"));
                names.add(rs.getString("TYPE_NAME"));
            }
            if (!names.isEmpty()) {
                for (int t : new int[] {Types.BIGINT, Types.INTEGER, Types.VARCHAR, Types.DECIMAL, Types.DOUBLE,
                        Types.BOOLEAN, Types.DATE, Types.TIMESTAMP}) {
                    assertTrue(types.contains(t), "getTypeInfo lacks java.sql.Types " + t + ": " + names);
                }
            }
        }
    }

    @Test
    void keysAreEmpty(ContrailServer server) throws SQLException {
        try (Connection conn = server.connect()) {
            DatabaseMetaData md = conn.getMetaData();
            // Contrail has no declared keys. (The driver builds result-set columns from the first non-empty
            // batch, so an empty key result has no columns; tools only call next() on it.)
            for (ResultSet rs : List.of(md.getPrimaryKeys(null, SCHEMA, "items"),
                    md.getImportedKeys(null, SCHEMA, "items"), md.getExportedKeys(null, SCHEMA, "items"),
                    md.getCrossReference(null, SCHEMA, "items", null, SCHEMA, "item_2"))) {
                try (rs) {
                    assertFalse(rs.next(), "no keys");
                }
            }
        }
    }
}
