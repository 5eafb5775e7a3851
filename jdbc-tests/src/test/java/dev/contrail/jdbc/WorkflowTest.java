package dev.contrail.jdbc;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.ServerSocket;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;

/**
 * Statements run as Temporal workflows, read through the JDBC driver. The server runs no fragments itself
 * ({@code --local-fragments 0}): every result partition lives on the worker process, and its FlightInfo endpoint
 * names the worker's location, so the driver must follow endpoint locations to read anything.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class WorkflowTest {
    private ContrailServer server;
    private ContrailServer worker;

    @BeforeAll
    void start() throws Exception {
        int temporalPort = freePort();
        server = ContrailServer.start(
                "--sample", "tpch", "--sample-scale", "0.01",
                "--temporal", "embedded",
                "--temporal-bin", ContrailServer.temporalBinary().toString(),
                "--temporal-port", Integer.toString(temporalPort),
                "--local-fragments", "0");
        worker = ContrailServer.startWorker("127.0.0.1:" + temporalPort);
    }

    @AfterAll
    void stop() throws Exception {
        try {
            if (worker != null) {
                worker.close();
            }
        } finally {
            if (server != null) {
                server.close();
            }
        }
    }

    @Test
    void workflowResultsAreReadFromTheWorkerAndEqualInline() throws Exception {
        String aggregate = "SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_quantity) AS qty, "
                + "avg(l_discount) AS disc FROM tpch.lineitem GROUP BY l_returnflag, l_linestatus "
                + "ORDER BY l_returnflag, l_linestatus";
        // No ORDER BY: one endpoint per final fragment.
        String scan = "SELECT o_orderkey, o_orderdate, o_comment FROM tpch.orders WHERE o_orderkey % 7 = 0";
        try (Connection conn = server.connect(); Statement st = conn.createStatement()) {
            st.execute("SET contrail.execution_mode = 'inline'");
            List<List<Object>> aggregateInline = rows(st, aggregate);
            List<List<Object>> scanInline = sorted(rows(st, scan));

            st.execute("SET contrail.execution_mode = 'workflow'");
            assertEquals(aggregateInline, rows(st, aggregate));
            List<List<Object>> scanWorkflow = sorted(rows(st, scan));
            assertEquals(scanInline.size(), scanWorkflow.size());
            assertEquals(scanInline, scanWorkflow);
            assertTrue(scanInline.size() > 1000, "orders sample has rows: " + scanInline.size());
        }
    }

    @Test
    void aFailingWorkflowIsAnSqlExceptionAndTheConnectionStaysUsable() throws Exception {
        try (Connection conn = server.connect(); Statement st = conn.createStatement()) {
            st.execute("SET contrail.execution_mode = 'workflow'");
            SQLException e = assertThrows(SQLException.class,
                    () -> rows(st, "SELECT o_orderkey / (o_orderkey - o_orderkey) FROM tpch.orders"));
            assertTrue(String.valueOf(e.getMessage()).toLowerCase().contains("divide by zero"), e.getMessage());
            assertEquals(List.of(List.of("25")), rows(st, "SELECT count(*) FROM tpch.nation"));
        }
    }

    private static List<List<Object>> rows(Statement st, String sql) throws SQLException {
        List<List<Object>> out = new ArrayList<>();
        try (ResultSet rs = st.executeQuery(sql)) {
            ResultSetMetaData md = rs.getMetaData();
            while (rs.next()) {
                List<Object> row = new ArrayList<>(md.getColumnCount());
                for (int i = 1; i <= md.getColumnCount(); i++) {
                    Object v = rs.getObject(i);
                    row.add(v == null ? null : v.toString());
                }
                out.add(row);
            }
        }
        return out;
    }

    private static List<List<Object>> sorted(List<List<Object>> rows) {
        List<List<Object>> copy = new ArrayList<>(rows);
        copy.sort((a, b) -> a.toString().compareTo(b.toString()));
        return copy;
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
