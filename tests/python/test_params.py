"""Prepared statements with bound parameters (ADBC DB-API, qmark style)."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from support import execute_update, query, scalar

ROWS = [(i, f"name-{i}", i * 1.5) for i in range(1, 21)]


@pytest.fixture
def people(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT NOT NULL, name VARCHAR, score DOUBLE)")
    values = ", ".join(f"({i}, '{n}', {s})" for i, n, s in ROWS)
    execute_update(conn, f"INSERT INTO {name} VALUES {values}")
    return name


def test_query_with_parameters(conn, people):
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, name FROM {people} WHERE id = ?", (7,))
        assert cur.fetchall() == [(7, "name-7")]
        cur.execute(f"SELECT count(*) FROM {people} WHERE id BETWEEN ? AND ?", (3, 9))
        assert cur.fetchone() == (sum(1 for r in ROWS if 3 <= r[0] <= 9),)
        cur.execute(f"SELECT id FROM {people} WHERE name = ? OR score > ? ORDER BY id", ("name-2", 27.0))
        assert [r[0] for r in cur.fetchall()] == [r[0] for r in ROWS if r[1] == "name-2" or r[2] > 27.0]


def test_same_statement_rebound(conn, people):
    """One prepared statement executed again with new parameters."""
    sql = f"SELECT name FROM {people} WHERE id = ?"
    with conn.cursor() as cur:
        for i in (1, 5, 20, 999):
            cur.execute(sql, (i,))
            expected = [(n,) for j, n, _ in ROWS if j == i]
            assert cur.fetchall() == expected


def test_parameter_schema_from_prepare(conn, people):
    with conn.cursor() as cur:
        param_schema = cur.adbc_prepare(f"SELECT * FROM {people} WHERE id = ? AND name = ?")
    assert param_schema is not None and len(param_schema) == 2
    assert param_schema.field(0).type == pa.int64()
    assert param_schema.field(1).type in (pa.string(), pa.string_view(), pa.large_string())


def test_parameter_types_in_expressions(conn):
    params = (
        41,
        2.5,
        "héllo",
        True,
        dt.date(2024, 2, 29),
        dt.datetime(2024, 2, 29, 1, 2, 3, 456789),
        decimal.Decimal("123.45"),
    )
    sql = (
        "SELECT CAST(? AS BIGINT) + 1 AS i, CAST(? AS DOUBLE) * 2 AS f, concat(CAST(? AS VARCHAR), '!') AS s, "
        "NOT CAST(? AS BOOLEAN) AS b, CAST(? AS DATE) AS d, CAST(? AS TIMESTAMP) AS ts, "
        "CAST(? AS DECIMAL(10, 2)) AS dec"
    )
    row = query(conn, sql, params).to_pylist()[0]
    assert row["i"] == 42
    assert row["f"] == 5.0
    assert row["s"] == "héllo!"
    assert row["b"] is False
    assert row["d"] == dt.date(2024, 2, 29)
    assert row["ts"] == dt.datetime(2024, 2, 29, 1, 2, 3, 456789)
    assert row["dec"] == decimal.Decimal("123.45")


def test_null_parameter(conn, people):
    execute_update(conn, f"INSERT INTO {people} VALUES (100, NULL, NULL)")
    params = pa.record_batch([pa.array([None], pa.string())], names=["p"])
    with conn.cursor() as cur:
        cur.execute(f"SELECT id FROM {people} WHERE name IS NOT DISTINCT FROM ?", params)
        assert cur.fetchall() == [(100,)]


def test_executemany_insert(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT, label VARCHAR, at DATE)")
    rows = [(i, f"l{i}", dt.date(2024, 1, i)) for i in range(1, 8)]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} VALUES (?, ?, ?)", rows)
        assert cur.rowcount == len(rows)
    got = query(conn, f"SELECT * FROM {name} ORDER BY id")
    assert [tuple(r.values()) for r in got.to_pylist()] == rows


def test_executemany_update_and_delete(conn, people):
    updates = [("first", 1), ("second", 2), ("nobody", 999), ("twentieth", 20)]
    with conn.cursor() as cur:
        cur.executemany(f"UPDATE {people} SET name = ? WHERE id = ?", updates)
        assert cur.rowcount == sum(1 for _, i in updates if any(r[0] == i for r in ROWS))
    got = dict(
        (r["id"], r["name"]) for r in query(conn, f"SELECT id, name FROM {people} WHERE id IN (1, 2, 20)").to_pylist()
    )
    assert got == {1: "first", 2: "second", 20: "twentieth"}

    deletes = [(3,), (4,), (4,), (12345,)]
    with conn.cursor() as cur:
        cur.executemany(f"DELETE FROM {people} WHERE id = ?", deletes)
        assert cur.rowcount == 2
    assert scalar(conn, f"SELECT count(*) FROM {people}") == len(ROWS) - 2


def test_executemany_with_arrow_batch(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT, x DOUBLE)")
    n = 100
    params = pa.record_batch(
        [pa.array(range(n), pa.int64()), pa.array([i / 2 for i in range(n)], pa.float64())], names=["id", "x"]
    )
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} VALUES (?, ?)", params)
        assert cur.rowcount == n
    assert query(conn, f"SELECT count(*) AS c, sum(x) AS s FROM {name}").to_pylist() == [
        {"c": n, "s": sum(i / 2 for i in range(n))}
    ]


def test_parameterized_insert_select(conn, people, name):
    target = f"{name}_copy"
    execute_update(conn, f"CREATE TABLE {target} (id BIGINT, name VARCHAR)")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {target} SELECT id, name FROM {people} WHERE id <= ?", [(5,)])
        assert cur.rowcount == 5
    assert scalar(conn, f"SELECT count(*) FROM {target}") == 5


def test_a_query_with_several_rows_of_parameters_runs_once_per_row(conn, people):
    """Several rows bound to a prepared query: it runs once per row, and the
    results come back concatenated in row order (as the Flight SQL spec and the
    ADBC driver expect), under the schema the prepare promised."""
    ids = [9, 2, 999, 5, 2]
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT id, name FROM {people} WHERE id = ? OR id = ? + 100 ORDER BY id",
            pa.record_batch([pa.array(ids, pa.int64()), pa.array(ids, pa.int64())], names=["a", "b"]),
        )
        got = cur.fetch_arrow_table()
    assert got.column("id").to_pylist() == [i for i in ids if i <= 20]
    assert got.column("name").to_pylist() == [f"name-{i}" for i in ids if i <= 20]
    assert got.schema.field("id").type == pa.int64()
