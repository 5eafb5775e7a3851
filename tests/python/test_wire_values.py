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


# Arrow types Delta lacks: (name, arrow_cast type, SQL value, pyarrow type, Python value)
STORED_TYPES = [
    ("u8", "UInt8", "255", pa.uint8(), 255),
    ("u16", "UInt16", "65535", pa.uint16(), 65535),
    ("u32", "UInt32", "4000000000", pa.uint32(), 4_000_000_000),
    ("u64", "UInt64", "arrow_cast('18446744073709551615', 'UInt64')", pa.uint64(), 18_446_744_073_709_551_615),
    ("f16", "Float16", "1.5", pa.float16(), 1.5),
    ("d64", "Date64", "DATE '2024-02-29'", pa.date64(), __import__("datetime").date(2024, 2, 29)),
    ("t64", "Time64(Nanosecond)", "TIME '01:02:03.123456789'", pa.time64("ns"), None),
    ("t32", "Time32(Millisecond)", "TIME '23:59:59.999'", pa.time32("ms"), None),
    ("dur", "Duration(Millisecond)", "1234", pa.duration("ms"), None),
    ("tz", 'Timestamp(Microsecond, Some("+02:00"))', "TIMESTAMP '2024-01-01 10:00:00'", pa.timestamp("us", "+02:00"), None),
    # Results carry a dictionary column's values (the table keeps the dictionary type).
    ("dict", "Dictionary(Int32, Utf8)", "'red'", pa.string(), "red"),
    ("fsl", "FixedSizeList(2, Int64)", "[7, 8]", pa.list_(pa.int64(), 2), [7, 8]),
]


def _stored_select() -> str:
    return ", ".join(f"arrow_cast({value}, '{cast}') AS {name}" for name, cast, value, _, _ in STORED_TYPES)


def test_types_delta_lacks_come_back_as_they_went_in(server):
    """A managed table keeps every column's Arrow type and value (issue 29): what
    a plain SELECT returns, CTAS, CREATE TABLE + INSERT and ingest store and
    return unchanged, also after a restart of the table's provider (a fresh
    connection reads the Delta log)."""
    with server.connect() as conn:
        expected = query(conn, f"SELECT {_stored_select()}")
        for name, _, _, arrow_type, value in STORED_TYPES:
            assert expected.schema.field(name).type == arrow_type, name
            if value is not None:
                assert expected.column(name).to_pylist() == [value], name
        execute_update(conn, f"CREATE TABLE wv_types AS SELECT {_stored_select()}")
        got = query(conn, "SELECT * FROM wv_types")
        assert [(f.name, f.type) for f in got.schema] == [(f.name, f.type) for f in expected.schema]
        assert not any(f.metadata for f in got.schema), "no storage detail reaches the client"
        assert got.to_pylist() == expected.to_pylist()
        types = query(conn, "SELECT " + ", ".join(f"arrow_typeof({n}) AS {n}" for n, *_ in STORED_TYPES) + " FROM wv_types")
        for name, cast, *_ in STORED_TYPES:
            assert types.column(name).to_pylist() == [query(conn, f"SELECT arrow_typeof(arrow_cast(NULL, '{cast}')) AS t").column("t")[0].as_py()], name
        # INSERT through SQL into the same columns, and a filter on a converted column.
        execute_update(conn, f"INSERT INTO wv_types SELECT {_stored_select()}")
        assert query(conn, "SELECT count(*) AS n FROM wv_types WHERE u8 = 255 AND u64 > 1")["n"].to_pylist() == [2]
        # Bulk ingest of the same data creates an equal table, and appends to it.
        with conn.cursor() as cur:
            assert cur.adbc_ingest("wv_types_ingest", expected, mode="create") == 1
            assert cur.adbc_ingest("wv_types_ingest", expected, mode="append") == 1
        ingested = query(conn, "SELECT * FROM wv_types_ingest")
        assert [(f.name, f.type) for f in ingested.schema] == [(f.name, f.type) for f in expected.schema]
        assert ingested.to_pylist() == expected.to_pylist() * 2
        # What GetTables reports is the schema a SELECT * sends.
        assert conn.adbc_get_table_schema("wv_types") == got.schema


def test_a_value_outside_a_columns_own_type_is_refused(server):
    """An unsigned column is stored wider, but holds only its own type's values."""
    with server.connect() as conn:
        execute_update(conn, "CREATE TABLE wv_u8(x TINYINT UNSIGNED) AS VALUES (255)")
        for bad in ("INSERT INTO wv_u8 VALUES (256)", "INSERT INTO wv_u8 VALUES (-1)", "UPDATE wv_u8 SET x = 300"):
            with pytest.raises(dbapi.Error) as exc:
                execute_update(conn, bad)
            assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, (bad, exc.value)
        with conn.cursor() as cur:
            with pytest.raises(dbapi.Error) as exc:
                cur.adbc_ingest("wv_u8", pa.table({"x": pa.array([300], pa.int16())}), mode="append")
            assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, exc.value
        execute_update(conn, "UPDATE wv_u8 SET x = x - 55")
        got = query(conn, "SELECT x FROM wv_u8")
        assert got.schema.field("x").type == pa.uint8()
        assert got.column("x").to_pylist() == [200]


@pytest.mark.parametrize(
    "ddl,says",
    [
        ("CREATE TABLE wv_iv(i INTERVAL) AS VALUES (INTERVAL '1 day')", ["column 'i'", "INTERVAL", "Duration"]),
        ("CREATE TABLE wv_dec(d DECIMAL(40,2))", ["column 'd'", "38 digits"]),
    ],
)
def test_types_with_no_exact_home_are_refused_at_create_naming_the_column(server, ddl, says):
    with server.connect() as conn:
        with pytest.raises(dbapi.Error) as exc:
            execute_update(conn, ddl)
        assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, exc.value
        for words in says:
            assert words in str(exc.value), exc.value


def test_lists_of_a_managed_table_combine_with_computed_lists(server):
    """Delta names list items `element`; the table reads them as `item`, as
    DataFusion makes them, so list functions mixing both work (was: a panic)."""
    with server.connect() as conn:
        execute_update(conn, "CREATE TABLE wv_l(a INT[]) AS VALUES ([1,2])")
        got = query(conn, "SELECT array_concat(make_array(a), make_array(make_array(3,4))) AS c FROM wv_l")
        assert got.column("c").to_pylist() == [[[1, 2], [3, 4]]]
        assert query(conn, "SELECT array_repeat(a, 2) AS r FROM wv_l").column("r").to_pylist() == [[[1, 2], [1, 2]]]


def test_sessions_start_in_utc_so_zoned_timestamps_come_back_zoned(server):
    with server.connect() as conn:
        got = query(conn, "SELECT TIMESTAMP WITH TIME ZONE '2023-05-15 13:45:30+02' AS t")
        assert got.schema.field("t").type.tz in ("UTC", "+00:00"), got.schema
        assert got.column("t")[0].as_py().isoformat() == "2023-05-15T11:45:30+00:00"
        execute_update(conn, "CREATE TABLE wv_tz(t TIMESTAMPTZ) AS VALUES (TIMESTAMP WITH TIME ZONE '2023-05-15 13:45:30+02')")
        got = query(conn, "SELECT t FROM wv_tz")
        assert got.schema.field("t").type == pa.timestamp("us", "UTC"), got.schema
        assert got.column("t")[0].as_py().isoformat() == "2023-05-15T11:45:30+00:00"
