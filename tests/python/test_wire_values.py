"""Every value comes back as it went in, or is refused: the schema a client is
promised (FlightInfo, GetSchema, the stream's schema message) and the batches
it is sent agree exactly (issue 29)."""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pytest

from support import Status, adbc_status, cmd_statement_query, execute_update, query

# (SQL, the Arrow type DataFusion computes, the values in order)
CASES = [
    (
        "SELECT CASE WHEN a<5 THEN a+b ELSE b-NVL(a,0) END AS r FROM wv_foo ORDER BY k",
        pa.int64(),
        [3, 7, 1, None, None, 7],
    ),
    (
        "SELECT x AS r FROM (SELECT arrow_cast(3000000000,'UInt32') x UNION ALL SELECT arrow_cast(-5,'Int16')) ORDER BY x",
        pa.int64(),
        [-5, 3000000000],
    ),
    (
        "SELECT CASE 1 WHEN 1 THEN [1,2,3] WHEN 2 THEN arrow_cast([1,2,3],'LargeList(Int64)') END AS r",
        None,
        [[1, 2, 3]],
    ),
    (
        "SELECT (SELECT a FROM (SELECT 1 a) WHERE a=wv_s1.v) AS r FROM wv_s1 ORDER BY id",
        pa.int64(),
        [1, None],
    ),
]


@pytest.fixture(scope="module")
def tables(server):
    with server.connect() as conn:
        execute_update(
            conn,
            "CREATE TABLE IF NOT EXISTS wv_foo(k INT, a INT, b INT) AS VALUES "
            "(1,1,2),(2,3,4),(3,5,6),(4,NULL,NULL),(5,6,NULL),(6,NULL,7)",
        )
        execute_update(conn, "CREATE TABLE IF NOT EXISTS wv_s1(id INT, v INT) AS VALUES (1,1),(2,2)")
    return server


@pytest.mark.parametrize("sql,arrow_type,values", CASES)
def test_results_arrive_with_the_values_computed(tables, sql, arrow_type, values):
    with tables.connect() as conn:
        got = query(conn, sql)
    column = got.column("r")
    if arrow_type is not None:
        assert column.type == arrow_type, got.schema
    assert column.to_pylist() == values
    if None in values:
        assert got.schema.field("r").nullable, "a column holding NULL is declared nullable"


@pytest.mark.parametrize("sql,arrow_type,values", CASES)
def test_every_schema_a_client_is_told_is_the_one_it_is_sent(tables, sql, arrow_type, values):
    raw = tables.raw()
    command = cmd_statement_query(sql)
    info = raw.flight_info(command)
    schema = raw.schema(command)
    table = raw.read_info(info)
    assert info.schema == schema, (info.schema, schema)
    assert table.schema == info.schema, (table.schema, info.schema)
    assert table.column("r").to_pylist() == values


def test_setting_a_schema_or_catalog_that_does_not_exist_fails_at_once(server):
    with server.connect() as conn:
        with pytest.raises(dbapi.Error) as exc:
            execute_update(conn, "SET schema = 'no_such_schema'")
        assert adbc_status(exc.value) == Status.NOT_FOUND, exc.value
        assert query(conn, "SELECT 1 AS one")["one"].to_pylist() == [1], "the session is unchanged"
    raw = server.raw()
    for option in ({"schema": "no_such_schema"}, {"catalog": "no_such_catalog"}):
        with pytest.raises(pa.ArrowKeyError):
            raw.set_session_options(option)


def test_nanosecond_timestamps_are_refused_never_rounded(server):
    """Tables keep microseconds: ingested nanoseconds that do not fit are refused
    (INVALID_ARGUMENT) and nothing is written; whole microseconds arrive exactly."""
    exact = pa.table({"ts": pa.array([1_577_836_800_000_001_000, 1_577_836_800_000_002_000], pa.timestamp("ns"))})
    lossy = pa.table({"ts": pa.array([1_577_836_800_000_000_001, 1_577_836_800_000_000_002], pa.timestamp("ns"))})
    with server.connect() as conn:
        with conn.cursor() as cur:
            assert cur.adbc_ingest("wv_ns", exact, mode="create") == 2
            with pytest.raises(dbapi.Error) as exc:
                cur.adbc_ingest("wv_ns", lossy, mode="append")
            assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, exc.value
            assert "2020-01-01T00:00:00.000000001" in str(exc.value)
            with pytest.raises(dbapi.Error) as exc:
                cur.adbc_ingest("wv_ns_new", lossy, mode="create")
            assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, exc.value
        got = query(conn, "SELECT ts FROM wv_ns ORDER BY ts")
        assert got.column("ts").cast(pa.timestamp("ns")).to_pylist() == exact.column("ts").to_pylist()
        assert query(conn, "SELECT count(*) AS n FROM wv_ns a JOIN wv_ns b ON a.ts = b.ts")["n"].to_pylist() == [2]
        tables = query(conn, "SELECT table_name FROM information_schema.tables WHERE table_name = 'wv_ns_new'")
        assert tables.num_rows == 0, "a refused create leaves no table"
