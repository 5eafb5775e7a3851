"""Queries, types, DDL/DML and dataframes through ADBC's DB-API, as a user would."""

from __future__ import annotations

import datetime as dt
import decimal
import time
import warnings

import adbc_driver_flightsql.dbapi as dbapi
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.feather
import pyarrow.parquet as pq
import pytest

from conftest import TPCH_SCALE
from support import Status, adbc_status, execute_update, query, scalar, status_kib

# --------------------------------------------------------------------------
# basics


def test_select_one(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone() == (1,)
        assert cur.fetchone() is None
        assert [d[0] for d in cur.description] == ["one"]


def test_default_dbapi_connect_works(server):
    """Plain ``dbapi.connect(uri)`` (autocommit off, no options), as in the docs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with dbapi.connect(server.uri) as c:
            with c.cursor() as cur:
                cur.execute("SELECT 40 + 2 AS answer")
                assert cur.fetchall() == [(42,)]


def test_scalar_types(conn):
    sql = """
    SELECT
      CAST(-8 AS TINYINT)            AS i8,
      CAST(-16 AS SMALLINT)          AS i16,
      CAST(-32 AS INT)               AS i32,
      CAST(-64 AS BIGINT)            AS i64,
      arrow_cast(200, 'UInt8')       AS u8,
      CAST(1.5 AS REAL)              AS f32,
      CAST(2.25 AS DOUBLE)           AS f64,
      CAST('12345.67' AS DECIMAL(10, 2)) AS dec,
      'héllo ✓'                      AS s_lit,
      CAST(42 AS VARCHAR)            AS s_cast,
      ''                             AS s_empty,
      TRUE                           AS b_true,
      FALSE                          AS b_false,
      DATE '2024-02-29'              AS d,
      TIMESTAMP '2024-02-29 12:34:56.789012' AS ts,
      CAST('abc' AS BYTEA)           AS bin,
      CAST(NULL AS INT)              AS null_int,
      CAST(NULL AS VARCHAR)          AS null_str
    """
    tbl = query(conn, sql)
    types = {f.name: f.type for f in tbl.schema}
    assert types["i8"] == pa.int8()
    assert types["i16"] == pa.int16()
    assert types["i32"] == pa.int32()
    assert types["i64"] == pa.int64()
    assert types["u8"] == pa.uint8()
    assert types["f32"] == pa.float32()
    assert types["f64"] == pa.float64()
    assert types["dec"] == pa.decimal128(10, 2)
    # Strings go out as Utf8 (not Utf8View) by default, also after a CAST.
    for col in ("s_lit", "s_cast", "s_empty", "null_str"):
        assert types[col] == pa.string(), (col, types[col])
    assert types["b_true"] == pa.bool_()
    assert types["d"] == pa.date32()
    assert pa.types.is_timestamp(types["ts"]) and types["ts"].tz is None
    assert types["bin"] == pa.binary()
    assert types["null_int"] == pa.int32()

    row = tbl.to_pylist()[0]
    assert row["i8"] == -8 and row["i16"] == -16 and row["i32"] == -32 and row["i64"] == -64
    assert row["u8"] == 200
    assert row["f32"] == 1.5 and row["f64"] == 2.25
    assert row["dec"] == decimal.Decimal("12345.67")
    assert row["s_lit"] == "héllo ✓"
    assert row["s_cast"] == "42"
    assert row["s_empty"] == ""
    assert row["b_true"] is True and row["b_false"] is False
    assert row["d"] == dt.date(2024, 2, 29)
    assert row["ts"] == dt.datetime(2024, 2, 29, 12, 34, 56, 789012)
    assert row["bin"] == b"abc"
    assert row["null_int"] is None and row["null_str"] is None


def test_timestamp_with_time_zone(conn):
    tbl = query(
        conn,
        "SELECT arrow_cast(TIMESTAMP '2024-03-01 10:00:00', 'Timestamp(Microsecond, Some(\"UTC\"))') AS tz_ts",
    )
    t = tbl.schema.field("tz_ts").type
    assert pa.types.is_timestamp(t) and t.tz is not None
    value = tbl.column(0)[0].as_py()
    assert value == dt.datetime(2024, 3, 1, 10, 0, tzinfo=dt.timezone.utc)


def test_now_is_each_statements_own_start_and_set_reaches_functions(conn):
    """Statements of sessions with the same settings plan in one shared state:
    now() is still each statement's own start, and a SET reaches the functions
    evaluated per row."""
    for _ in range(3):
        before = time.time_ns()
        now = query(conn, "SELECT now() AS t").column("t").cast(pa.int64())[0].as_py()
        assert before <= now <= time.time_ns()
    sql = "SELECT to_unixtime(s) FROM (VALUES ('2024-01-01T00:00:00')) AS v(s)"
    utc = scalar(conn, sql)
    assert utc == 1704067200
    execute_update(conn, "SET datafusion.execution.time_zone = '+05:00'")
    assert scalar(conn, sql) == utc - 5 * 3600


def test_nested_types(conn):
    tbl = query(
        conn,
        """
        SELECT make_array(1, 2, 3)             AS l,
               make_array('a', NULL, 'c')      AS ls,
               named_struct('x', 1, 'y', 'why') AS st,
               make_array(named_struct('k', 'v')) AS ls_st
        """,
    )
    types = {f.name: f.type for f in tbl.schema}
    assert pa.types.is_list(types["l"]) and types["l"].value_type == pa.int64()
    # nested strings are Utf8 too, not Utf8View
    assert pa.types.is_list(types["ls"]) and types["ls"].value_type == pa.string()
    assert pa.types.is_struct(types["st"])
    assert types["st"].field("x").type == pa.int64()
    assert types["st"].field("y").type == pa.string()
    assert types["ls_st"].value_type.field("k").type == pa.string()
    row = tbl.to_pylist()[0]
    assert row == {
        "l": [1, 2, 3],
        "ls": ["a", None, "c"],
        "st": {"x": 1, "y": "why"},
        "ls_st": [{"k": "v"}],
    }


def test_execute_schema_without_running(conn):
    """cursor.adbc_execute_schema: the result schema without executing."""
    sql = "SELECT CAST(1 AS INT) AS i, 'x' AS s, make_array(1.5) AS l"
    with conn.cursor() as cur:
        schema = cur.adbc_execute_schema(sql)
    assert schema.equals(query(conn, sql).schema, check_metadata=False)


def test_many_rows_fetch_apis_agree(conn):
    n = 100_000
    sql = f"SELECT value AS v, CAST(value AS VARCHAR) AS s FROM generate_series(1, {n}) ORDER BY v"
    with conn.cursor() as cur:
        cur.execute(sql)
        first = cur.fetchone()
        some = cur.fetchmany(10)
        rest = cur.fetchall()
    assert first == (1, "1")
    assert some == [(i, str(i)) for i in range(2, 12)]
    assert len(rest) == n - 11 and rest[-1] == (n, str(n))

    tbl = query(conn, sql)
    assert tbl.num_rows == n
    assert tbl.schema.field("s").type == pa.string()
    assert pc.sum(tbl.column("v")).as_py() == n * (n + 1) // 2


# --------------------------------------------------------------------------
# DDL and DML on managed tables


def test_create_insert_select_update_delete(conn, server, name):
    execute_update(
        conn,
        f"""CREATE TABLE {name} (
              id BIGINT NOT NULL, name VARCHAR, score DOUBLE, active BOOLEAN,
              born DATE, seen TIMESTAMP, amount DECIMAL(12, 3))""",
    )
    rows = [
        (1, "ann", 1.5, True, dt.date(1990, 1, 2), dt.datetime(2024, 1, 1, 8, 0, 0), decimal.Decimal("10.125")),
        (2, "bob", None, False, None, None, decimal.Decimal("-3.000")),
        (3, None, 3.25, True, dt.date(2000, 2, 29), dt.datetime(2024, 6, 30, 23, 59, 59, 500000), None),
        (4, "dée", 0.0, None, dt.date(1970, 1, 1), dt.datetime(1970, 1, 1), decimal.Decimal("0.001")),
    ]

    def lit(v):
        if v is None:
            return "NULL"
        if isinstance(v, bool):
            return "TRUE" if v else "FALSE"
        if isinstance(v, dt.datetime):
            return f"TIMESTAMP '{v.isoformat(sep=' ')}'"
        if isinstance(v, dt.date):
            return f"DATE '{v.isoformat()}'"
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return str(v)

    values = ", ".join("(" + ", ".join(lit(v) for v in r) + ")" for r in rows)
    assert execute_update(conn, f"INSERT INTO {name} VALUES {values}") == len(rows)

    # the table is a Delta Lake table under the data dir
    assert (server.data_dir / "tables" / "public" / name / "_delta_log").is_dir()

    tbl = query(conn, f"SELECT * FROM {name} ORDER BY id")
    assert tbl.schema.names == ["id", "name", "score", "active", "born", "seen", "amount"]
    assert tbl.schema.field("id").nullable is False
    assert tbl.schema.field("name").type == pa.string()
    assert tbl.schema.field("amount").type == pa.decimal128(12, 3)
    got = [tuple(r.values()) for r in tbl.to_pylist()]
    assert got == rows

    active = sum(1 for r in rows if r[3] is True)
    assert execute_update(conn, f"UPDATE {name} SET score = score * 2 WHERE active") == active
    expected_scores = {r[0]: (r[2] * 2 if r[3] is True and r[2] is not None else r[2]) for r in rows}
    got_scores = {r["id"]: r["score"] for r in query(conn, f"SELECT id, score FROM {name}").to_pylist()}
    assert got_scores == expected_scores

    assert execute_update(conn, f"DELETE FROM {name} WHERE name IS NULL OR id = 1") == 2
    assert scalar(conn, f"SELECT count(*) FROM {name}") == len(rows) - 2
    assert execute_update(conn, f"DELETE FROM {name} WHERE id > 1000") == 0
    assert execute_update(conn, f"UPDATE {name} SET name = 'x' WHERE id > 1000") == 0


def test_ddl_and_dml_through_cursor_execute(conn, name):
    """Users run DDL/DML with cursor.execute (a prepared statement in ADBC)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT, s VARCHAR)")
        cur.execute(f"INSERT INTO {name} VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        cur.execute(f"DELETE FROM {name} WHERE id = 2")
        cur.execute(f"UPDATE {name} SET s = upper(s)")
        cur.execute(f"SELECT id, s FROM {name} ORDER BY id")
        assert cur.fetchall() == [(1, "A"), (3, "C")]


def test_not_null_constraint_is_enforced(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT NOT NULL, s VARCHAR)")
    execute_update(conn, f"INSERT INTO {name} VALUES (1, 'a')")
    with pytest.raises(dbapi.Error):
        execute_update(conn, f"INSERT INTO {name} VALUES (NULL, 'b')")
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 1


def test_ctas_insert_select_and_drop(conn, name):
    src, dst = f"{name}_src", f"{name}_dst"
    execute_update(conn, f"CREATE TABLE {src} AS SELECT value AS id, value * value AS sq FROM generate_series(1, 100)")
    assert scalar(conn, f"SELECT count(*) FROM {src}") == 100
    execute_update(conn, f"CREATE TABLE {dst} AS SELECT * FROM {src} WHERE id <= 10")
    inserted = execute_update(conn, f"INSERT INTO {dst} SELECT * FROM {src} WHERE id > 90")
    assert inserted == 10
    assert scalar(conn, f"SELECT sum(sq) FROM {dst}") == sum(i * i for i in [*range(1, 11), *range(91, 101)])
    execute_update(conn, f"DROP TABLE {dst}")
    with pytest.raises(dbapi.ProgrammingError) as exc:
        query(conn, f"SELECT * FROM {dst}")
    assert adbc_status(exc.value) == Status.NOT_FOUND
    assert scalar(conn, f"SELECT count(*) FROM {src}") == 100


def test_schema_and_view(conn, name):
    schema = f"s_{name}"
    execute_update(conn, f"CREATE SCHEMA {schema}")
    execute_update(conn, f"CREATE TABLE {schema}.items (id INT, price DOUBLE)")
    execute_update(conn, f"INSERT INTO {schema}.items VALUES (1, 2.5), (2, 4.0), (3, 10.0)")
    execute_update(conn, f"CREATE VIEW {schema}.cheap AS SELECT id FROM {schema}.items WHERE price < 5")
    assert query(conn, f"SELECT id FROM {schema}.cheap ORDER BY id").column("id").to_pylist() == [1, 2]
    # a view sees later writes to its table
    execute_update(conn, f"INSERT INTO {schema}.items VALUES (4, 1.0)")
    assert scalar(conn, f"SELECT count(*) FROM {schema}.cheap") == 3
    # fully qualified with the catalog name
    assert scalar(conn, f"SELECT count(*) FROM contrail.{schema}.items") == 4


def test_external_tables(conn, tmp_path, name):
    data = pa.table(
        {"id": pa.array([1, 2, 3], pa.int64()), "city": ["Oslo", "Lima", None], "t": [0.5, 1.5, 2.5]}
    )
    pq.write_table(data, tmp_path / "one.parquet")
    folder = tmp_path / "many"
    folder.mkdir()
    pq.write_table(data.slice(0, 2), folder / "a.parquet")
    pq.write_table(data.slice(2), folder / "b.parquet")
    pyarrow.csv.write_csv(data, tmp_path / "d.csv")
    (tmp_path / "d.json").write_text(
        "".join(
            '{"id": %d, "city": %s, "t": %s}\n' % (r["id"], "null" if r["city"] is None else f'"{r["city"]}"', r["t"])
            for r in data.to_pylist()
        )
    )
    pyarrow.feather.write_feather(data, tmp_path / "d.arrow", compression="uncompressed")

    ddl = {
        "pq": f"STORED AS PARQUET LOCATION '{tmp_path / 'one.parquet'}'",
        "pqdir": f"STORED AS PARQUET LOCATION '{folder}/'",
        "csv": f"STORED AS CSV LOCATION '{tmp_path / 'd.csv'}' OPTIONS ('format.has_header' 'true')",
        "json": f"STORED AS JSON LOCATION '{tmp_path / 'd.json'}'",
        "arrow": f"STORED AS ARROW LOCATION '{tmp_path / 'd.arrow'}'",
    }
    for suffix, clause in ddl.items():
        table = f"{name}_{suffix}"
        execute_update(conn, f"CREATE EXTERNAL TABLE {table} {clause}")
        tbl = query(conn, f"SELECT id, city, t FROM {table} ORDER BY id")
        assert tbl.column("id").cast(pa.int64()).to_pylist() == [1, 2, 3], suffix
        assert tbl.column("city").to_pylist() == ["Oslo", "Lima", None], suffix
        assert tbl.schema.field("city").type == pa.string(), suffix
        assert tbl.column("t").to_pylist() == [0.5, 1.5, 2.5], suffix


def test_show_tables_and_information_schema(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (a INT, b VARCHAR NOT NULL)")
    tables = query(conn, "SHOW TABLES").to_pylist()
    assert any(r["table_schema"] == "public" and r["table_name"] == name for r in tables)
    cols = query(
        conn,
        f"""SELECT column_name, data_type, is_nullable FROM information_schema.columns
            WHERE table_name = '{name}' ORDER BY ordinal_position""",
    ).to_pylist()
    assert [c["column_name"] for c in cols] == ["a", "b"]
    assert [c["is_nullable"] for c in cols] == ["YES", "NO"]
    show = query(conn, f"SHOW COLUMNS FROM {name}").to_pylist()
    assert [c["column_name"] for c in show] == ["a", "b"]


def test_strings_from_tables_are_utf8(conn, name):
    """Delta/Parquet scans produce Utf8View inside DataFusion; clients get Utf8."""
    execute_update(conn, f"CREATE TABLE {name} (s VARCHAR, b BYTEA)")
    execute_update(conn, f"INSERT INTO {name} VALUES ('x', CAST('y' AS BYTEA))")
    tbl = query(conn, f"SELECT s, b, concat(s, s) AS ss FROM {name}")
    assert tbl.schema.field("s").type == pa.string()
    assert tbl.schema.field("ss").type == pa.string()
    assert tbl.schema.field("b").type == pa.binary()
    assert tbl.to_pylist() == [{"s": "x", "b": b"y", "ss": "xx"}]


# --------------------------------------------------------------------------
# large results stream, they are not collected


def test_large_stream_incremental(conn, server):
    n = 50_000_000
    peak_before = status_kib(server.pid, "VmHWM")
    rows = total = batches = 0
    with conn.cursor() as cur:
        cur.execute(f"SELECT value AS v FROM generate_series(1, {n})")
        reader = cur.fetch_record_batch()
        assert reader.schema.field("v").type == pa.int64()
        for batch in reader:
            batches += 1
            rows += batch.num_rows
            total += pc.sum(batch.column(0)).as_py() or 0
    assert rows == n
    assert total == n * (n + 1) // 2
    assert batches > 1
    grown_mib = (status_kib(server.pid, "VmHWM") - peak_before) / 1024
    # 50M int64 = 400 MB; a server that collected the result would show it here.
    assert grown_mib < 256, f"server peak RSS grew by {grown_mib:.0f} MiB while streaming"


# --------------------------------------------------------------------------
# TPC-H sample, pandas and polars


TPCH_ROWS = {
    "region": 5,
    "nation": 25,
    "supplier": int(10_000 * TPCH_SCALE),
    "customer": int(150_000 * TPCH_SCALE),
    "part": int(200_000 * TPCH_SCALE),
    "partsupp": int(800_000 * TPCH_SCALE),
    "orders": int(1_500_000 * TPCH_SCALE),
}


def test_tpch_sample_row_counts(tpch_conn):
    for table, expected in TPCH_ROWS.items():
        assert scalar(tpch_conn, f"SELECT count(*) FROM tpch.{table}") == expected, table
    orders = TPCH_ROWS["orders"]
    lineitems = scalar(tpch_conn, "SELECT count(*) FROM tpch.lineitem")
    assert orders <= lineitems <= 7 * orders
    # every line item belongs to an order
    assert scalar(
        tpch_conn,
        "SELECT count(*) FROM tpch.lineitem l LEFT JOIN tpch.orders o ON l.l_orderkey = o.o_orderkey "
        "WHERE o.o_orderkey IS NULL",
    ) == 0


def test_tpch_q6_matches_pandas(tpch_conn):
    revenue = scalar(
        tpch_conn,
        """SELECT sum(l_extendedprice * l_discount) FROM tpch.lineitem
           WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01'
             AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24""",
    )
    li = pd.read_sql(
        "SELECT l_extendedprice, l_discount, l_quantity, l_shipdate FROM tpch.lineitem", tpch_conn
    )
    ship = pd.to_datetime(li["l_shipdate"])
    disc = li["l_discount"].astype(float)
    mask = (
        (ship >= "1994-01-01") & (ship < "1995-01-01") & (disc >= 0.05) & (disc <= 0.07)
        & (li["l_quantity"].astype(float) < 24)
    )
    expected = (li["l_extendedprice"].astype(float) * disc)[mask].sum()
    assert float(revenue) == pytest.approx(expected, rel=1e-9)


def test_pandas_read_sql(tpch_conn):
    df = pd.read_sql(
        "SELECT n_nationkey, n_name, n_regionkey FROM tpch.nation ORDER BY n_nationkey", tpch_conn
    )
    expected = query(
        tpch_conn, "SELECT n_nationkey, n_name, n_regionkey FROM tpch.nation ORDER BY n_nationkey"
    ).to_pandas()
    assert len(df) == TPCH_ROWS["nation"]
    pd.testing.assert_frame_equal(df, expected)
    per_region = df.groupby("n_regionkey").size()
    assert per_region.sum() == TPCH_ROWS["nation"]
    assert set(per_region.index) == set(
        query(tpch_conn, "SELECT r_regionkey FROM tpch.region").column(0).to_pylist()
    )


def test_pandas_to_sql_round_trip(conn, name):
    df = pd.DataFrame({"id": [1, 2, 3], "label": ["a", "b", None], "x": [0.5, None, 2.0]})
    df.to_sql(name, conn, index=False)
    back = pd.read_sql(f"SELECT * FROM {name} ORDER BY id", conn)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    df.to_sql(name, conn, index=False, if_exists="append")
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 2 * len(df)
    df.head(1).to_sql(name, conn, index=False, if_exists="replace")
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 1


def test_polars_read_database(tpch_conn):
    df = pl.read_database(
        "SELECT r_regionkey, r_name FROM tpch.region ORDER BY r_regionkey", connection=tpch_conn
    )
    assert df.shape == (TPCH_ROWS["region"], 2)
    assert df.schema["r_name"] == pl.String
    expected = pl.from_arrow(
        query(tpch_conn, "SELECT r_regionkey, r_name FROM tpch.region ORDER BY r_regionkey")
    )
    assert df.equals(expected)
    agg = pl.read_database(
        "SELECT o_orderstatus, count(*) AS n FROM tpch.orders GROUP BY o_orderstatus",
        connection=tpch_conn,
    )
    assert agg["n"].sum() == TPCH_ROWS["orders"]
