"""`SET contrail.result_compression`: compressed results read by ADBC and pyarrow
are the rows the same query returns uncompressed."""

from __future__ import annotations

import pyarrow as pa
import pytest

from support import CookieMiddlewareFactory, query, received

LINEITEM = "SELECT * FROM tpch.lineitem ORDER BY l_orderkey, l_linenumber"


def set_compression(conn, codec: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SET contrail.result_compression = '{codec}'")


@pytest.fixture(scope="module")
def plain_lineitem(tpch_server) -> pa.Table:
    conn = tpch_server.connect()
    try:
        return query(conn, LINEITEM)
    finally:
        conn.close()


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_adbc_reads_compressed_results(tpch_server, plain_lineitem, codec):
    conn = tpch_server.connect()
    try:
        plain_bytes, _ = received(lambda: query(conn, LINEITEM))
        set_compression(conn, codec)
        compressed_bytes, table = received(lambda: query(conn, LINEITEM))
        assert compressed_bytes < 0.7 * plain_bytes, f"{codec}: read {compressed_bytes} bytes vs {plain_bytes}"
        assert table.num_rows == plain_lineitem.num_rows > 50_000
        assert table.equals(plain_lineitem), f"{codec}: decimals, dates and strings as sent uncompressed"
        # Prepared statements of the session, parameters included.
        with conn.cursor() as cur:
            cur.execute("SELECT l_orderkey, l_comment FROM tpch.lineitem WHERE l_orderkey = ? ORDER BY l_linenumber",
                        parameters=(1,))
            got = cur.fetch_arrow_table()
        want = plain_lineitem.filter(pa.compute.equal(plain_lineitem["l_orderkey"], 1)).select(
            ["l_orderkey", "l_comment"])
        assert got.equals(want)
    finally:
        conn.close()


def test_pyarrow_reads_compressed_results(tpch_server, plain_lineitem):
    # The raw client keeps its session by sending back the cookie the server set.
    raw = tpch_server.raw(middleware=[CookieMiddlewareFactory()])
    raw.execute("SET contrail.result_compression = 'zstd'")
    assert raw.execute(LINEITEM).equals(plain_lineitem)


def test_show_lists_contrail_settings(server):
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW contrail.result_compression")
            assert cur.fetchall() == [("contrail.result_compression", "none")]
            cur.execute("SET contrail.result_compression = 'ZSTD'")
            cur.execute("SHOW contrail.result_compression")
            assert cur.fetchall() == [("contrail.result_compression", "zstd")]
            cur.execute("SELECT name, value, description FROM information_schema.df_settings "
                        "WHERE name LIKE 'contrail.%' ORDER BY name")
            rows = {name: (value, description) for name, value, description in cur.fetchall()}
        assert set(rows) == {"contrail.execution_mode", "contrail.priority", "contrail.result_compression",
                             "contrail.statement_timeout", "contrail.view_types", "contrail.workflow_threshold_bytes"}
        assert rows["contrail.result_compression"][0] == "zstd"
        assert rows["contrail.execution_mode"][0] == "auto"
        assert all(description for _, description in rows.values())
    finally:
        conn.close()
    # Another session shows its own (default) value.
    other = server.connect()
    try:
        with other.cursor() as cur:
            cur.execute("SHOW contrail.result_compression")
            assert cur.fetchall() == [("contrail.result_compression", "none")]
    finally:
        other.close()
