"""CACHE TABLE / UNCACHE TABLE: a table's rows served from memory, never older
than the table, kept cached across restarts, within --cache-max-bytes."""

from __future__ import annotations

from decimal import Decimal

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import Status, adbc_status, execute_update, query, scalar, wait_until

ROWS = 20_000


def plan_text(conn, sql: str) -> str:
    plan = query(conn, f"EXPLAIN {sql}")
    return "\n".join(plan.column("plan").to_pylist())


def from_memory(conn, table: str) -> bool:
    """Whether a scan of `table` reads the cached rows."""
    plan = plan_text(conn, f"SELECT * FROM {table}")
    return "CachedScanExec" in plan


def cached(conn) -> dict[str, dict]:
    rows = query(conn, "SELECT * FROM system.cached_tables").to_pylist()
    return {f"{r['table_schema']}.{r['table_name']}": r for r in rows}


def expect_error(conn, sql: str) -> dbapi.Error:
    with pytest.raises(dbapi.Error) as exc:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
    return exc.value


def fill(conn, table: str, first: int = 1, last: int = ROWS) -> None:
    execute_update(
        conn,
        f"INSERT INTO {table} SELECT value, concat('name-', CAST(value % 97 AS VARCHAR)), value / 8.0, "
        f"CASE WHEN value % 5 = 0 THEN NULL ELSE arrow_cast(value % 3, 'Int32') END, "
        f"CAST(value AS DECIMAL(10, 2)) / 4 "
        f"FROM generate_series({first}, {last})",
    )


CHECKS = [
    "SELECT * FROM {t} ORDER BY id",
    "SELECT name, count(*) AS n, sum(x) AS sx, count(flag) AS f, sum(price) AS p FROM {t} GROUP BY name ORDER BY name",
    "SELECT id, name FROM {t} WHERE id % 1000 = 7 AND name LIKE 'name-1%' ORDER BY id",
    "SELECT count(*) AS n FROM (SELECT * FROM {t} LIMIT 123)",
]


def answers(conn, table: str) -> list[pa.Table]:
    return [query(conn, sql.format(t=table)) for sql in CHECKS]


def test_cached_table_answers_from_memory_with_the_same_rows(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT NOT NULL, name VARCHAR, x DOUBLE, flag INT, price DECIMAL(10, 2))")
    fill(conn, name)
    before = answers(conn, name)
    assert not from_memory(conn, name)

    assert execute_update(conn, f"CACHE TABLE {name}") == ROWS
    entry = cached(conn)[f"public.{name}"]
    assert entry["state"] == "ready" and entry["rows"] == ROWS and entry["error"] is None
    assert 0 < entry["bytes"] <= entry["cache_limit_bytes"]
    assert from_memory(conn, name)
    after = answers(conn, name)
    for sql, b, a in zip(CHECKS, before, after):
        assert a.schema == b.schema, sql
        assert a.equals(b), sql
    assert after[0].schema.field("name").type == pa.string()

    # Caching again is a no-op; UNCACHE lets the rows go.
    assert execute_update(conn, f"CACHE TABLE {name};") == ROWS
    execute_update(conn, f"UNCACHE TABLE {name}")
    assert f"public.{name}" not in cached(conn)
    assert not from_memory(conn, name)
    assert answers(conn, name)[1].equals(before[1])


def test_writes_are_seen_at_once_and_the_cache_catches_up(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT NOT NULL, name VARCHAR, x DOUBLE, flag INT, price DECIMAL(10, 2))")
    fill(conn, name)
    execute_update(conn, f"CACHE TABLE {name}")

    fill(conn, name, ROWS + 1, ROWS + 500)
    assert scalar(conn, f"SELECT count(*) FROM {name}") == ROWS + 500
    assert scalar(conn, f"SELECT sum(price) FROM {name}") == Decimal(sum(range(1, ROWS + 501))) / 4
    execute_update(conn, f"UPDATE {name} SET name = 'renamed' WHERE id <= 10")
    assert scalar(conn, f"SELECT count(*) FROM {name} WHERE name = 'renamed'") == 10
    execute_update(conn, f"DELETE FROM {name} WHERE id > {ROWS}")
    assert scalar(conn, f"SELECT count(*) FROM {name}") == ROWS

    # The cache reloads behind the writes, then answers from memory again.
    wait_until(lambda: from_memory(conn, name), timeout=30, message="the cache to reload")
    assert cached(conn)[f"public.{name}"]["rows"] == ROWS
    assert scalar(conn, f"SELECT count(*) FROM {name} WHERE name = 'renamed'") == 10


def test_external_table_files_added_or_replaced_are_seen(conn, name, tmp_path):
    folder = tmp_path / "ext"
    folder.mkdir()
    # string_view columns, as tpchgen and newer writers store them.
    part = lambda lo, hi: pa.table({  # noqa: E731
        "id": pa.array(range(lo, hi), pa.int64()),
        "s": pa.array([f"v{i % 13}" for i in range(lo, hi)], pa.string_view()),
    })
    pq.write_table(part(0, 1000), folder / "a.parquet")
    execute_update(conn, f"CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{folder}/'")
    before = query(conn, f"SELECT * FROM {name} ORDER BY id")

    assert execute_update(conn, f"CACHE TABLE {name}") == 1000
    assert from_memory(conn, name)
    after = query(conn, f"SELECT * FROM {name} ORDER BY id")
    assert after.equals(before)
    assert after.schema.field("s").type == pa.string()
    assert query(conn, f"SELECT s, count(*) AS n FROM {name} GROUP BY s ORDER BY s").num_rows == 13

    pq.write_table(part(1000, 1500), folder / "b.parquet")
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 1500
    pq.write_table(part(0, 10), folder / "a.parquet")  # replaced in place
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 510
    wait_until(lambda: from_memory(conn, name), timeout=30, message="the cache to reload")
    assert scalar(conn, f"SELECT sum(id) FROM {name}") == sum(range(0, 10)) + sum(range(1000, 1500))


def test_errors(conn, name, make_server):
    execute_update(conn, f"CREATE TABLE {name} AS SELECT value AS id FROM generate_series(1, 10)")
    execute_update(conn, f"CREATE VIEW {name}_v AS SELECT id FROM {name}")

    assert adbc_status(expect_error(conn, "CACHE TABLE no_such_table")) == Status.NOT_FOUND
    err = expect_error(conn, f"CACHE TABLE {name}_v")
    assert adbc_status(err) == Status.INVALID_ARGUMENT and "view" in str(err)
    assert adbc_status(expect_error(conn, "CACHE TABLE system.pipelines")) == Status.INVALID_ARGUMENT
    err = expect_error(conn, f"CACHE LAZY TABLE {name}")
    assert adbc_status(err) == Status.NOT_IMPLEMENTED and "CACHE TABLE <table>" in str(err)
    assert adbc_status(expect_error(conn, "UNCACHE TABLE no_such_table")) == Status.NOT_FOUND
    assert execute_update(conn, "UNCACHE TABLE IF EXISTS no_such_table") == 0
    assert execute_update(conn, f"UNCACHE TABLE {name}") == 0  # not cached: nothing to do
    assert f"public.{name}" not in cached(conn)
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 10

    # A cache too small for the table: RESOURCE_EXHAUSTED, nothing left cached.
    small = make_server(extra_args=("--cache-max-bytes", "100000"))
    with small.connect() as c:
        execute_update(c, "CREATE TABLE big AS SELECT value AS id, repeat('x', 100) AS pad FROM generate_series(1, 10000)")
        execute_update(c, "CREATE TABLE tiny AS SELECT 1 AS id")
        err = expect_error(c, "CACHE TABLE big")
        assert "ResourceExhausted" in str(err) or "RESOURCE_EXHAUSTED" in str(err), repr(err)
        assert "cache is full" in str(err) and "--cache-max-bytes" in str(err)
        assert cached(c) == {}
        assert execute_update(c, "CACHE TABLE tiny") == 1
        assert list(cached(c)) == ["public.tiny"]
        assert scalar(c, "SELECT count(*) FROM big") == 10000

    off = make_server(extra_args=("--cache-max-bytes", "0"))
    with off.connect() as c:
        execute_update(c, "CREATE TABLE t AS SELECT 1 AS id")
        err = expect_error(c, "CACHE TABLE t")
        assert adbc_status(err) == Status.NOT_IMPLEMENTED and "--cache-max-bytes" in str(err)


def test_cached_tables_stay_cached_across_restarts_until_dropped(make_server):
    srv = make_server()
    with srv.connect() as c:
        execute_update(c, "CREATE SCHEMA s")
        execute_update(c, "CREATE TABLE s.kept (id BIGINT NOT NULL, name VARCHAR, x DOUBLE, flag INT, price DECIMAL(10, 2))")
        fill(c, "s.kept")
        execute_update(c, "CREATE TABLE s.dropped AS SELECT 1 AS id")
        execute_update(c, "CACHE TABLE s.kept")
        execute_update(c, "CACHE TABLE s.dropped")
        execute_update(c, "DROP TABLE s.dropped")
        assert list(cached(c)) == ["s.kept"]
        before = answers(c, "s.kept")

    srv.restart()
    with srv.connect() as c:
        wait_until(lambda: cached(c).get("s.kept", {}).get("state") == "ready", timeout=60,
                   message="the cached table to load after the restart")
        assert list(cached(c)) == ["s.kept"]
        assert from_memory(c, "s.kept")
        for sql, b, a in zip(CHECKS, before, answers(c, "s.kept")):
            assert a.equals(b), sql
        execute_update(c, "CREATE TABLE s.dropped AS SELECT 2 AS id")  # same name, not cached
        assert not from_memory(c, "s.dropped")
