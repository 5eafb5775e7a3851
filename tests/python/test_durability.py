"""Everything survives a restart; kill -9 in the middle of an INSERT leaves the
table exactly as before or exactly as after; handles and tickets outlive the
process that issued them."""

from __future__ import annotations

import os
import threading
import time

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from support import cmd_statement_query, execute_update, query, read_stream, scalar, wait_busy, wait_until

SLOW_SQL = "SELECT sum(value % 7) AS s FROM generate_series(1, 200000000000)"


def files_under(path) -> set[str]:
    out = set()
    for root, _dirs, files in os.walk(path):
        for f in files:
            out.add(os.path.relpath(os.path.join(root, f), path))
    return out


def snapshot(conn) -> dict:
    return {
        "t": query(conn, "SELECT * FROM keep.t ORDER BY id").to_pylist(),
        "ctas": query(conn, "SELECT * FROM public.ctas ORDER BY id").to_pylist(),
        "v": query(conn, "SELECT * FROM keep.v ORDER BY id").to_pylist(),
        "ext_pq": query(conn, "SELECT * FROM ext_pq ORDER BY k").to_pylist(),
        "ext_csv": query(conn, "SELECT * FROM ext_csv ORDER BY k").to_pylist(),
        "ingested": query(conn, "SELECT * FROM ingested ORDER BY id").to_pylist(),
    }


def test_restart_keeps_tables_views_and_external_tables(make_server, tmp_path):
    srv = make_server()
    ext = pa.table({"k": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})
    pq.write_table(ext, tmp_path / "ext.parquet")
    pyarrow.csv.write_csv(ext, tmp_path / "ext.csv")

    with srv.connect() as c:
        execute_update(c, "CREATE SCHEMA keep")
        execute_update(c, "CREATE TABLE keep.t (id BIGINT NOT NULL, s VARCHAR, x DOUBLE)")
        execute_update(c, "INSERT INTO keep.t SELECT value, concat('s', CAST(value AS VARCHAR)), value / 4.0 "
                          "FROM generate_series(1, 1000)")
        execute_update(c, "UPDATE keep.t SET s = 'updated' WHERE id % 100 = 0")
        execute_update(c, "DELETE FROM keep.t WHERE id > 990")
        execute_update(c, "CREATE TABLE public.ctas AS SELECT id, s FROM keep.t WHERE id <= 10")
        execute_update(c, "CREATE VIEW keep.v AS SELECT id, s FROM keep.t WHERE s = 'updated'")
        execute_update(c, f"CREATE EXTERNAL TABLE ext_pq STORED AS PARQUET LOCATION '{tmp_path / 'ext.parquet'}'")
        execute_update(
            c,
            f"CREATE EXTERNAL TABLE ext_csv STORED AS CSV LOCATION '{tmp_path / 'ext.csv'}' "
            "OPTIONS ('format.has_header' 'true')",
        )
        execute_update(c, "CREATE TABLE dropped (a INT)")
        execute_update(c, "DROP TABLE dropped")
        with c.cursor() as cur:
            cur.adbc_ingest("ingested", pa.table({"id": [1, 2], "v": ["p", "q"]}), mode="create")
        before = snapshot(c)
        schema_before = c.adbc_get_table_schema("t", db_schema_filter="keep")
    assert len(before["t"]) == 990
    assert len(before["v"]) == 9

    rc = srv.stop()
    assert rc == 0, f"SIGTERM exit code {rc}"
    srv.start()

    with srv.connect() as c:
        assert snapshot(c) == before
        assert c.adbc_get_table_schema("t", db_schema_filter="keep").equals(schema_before)
        with pytest.raises(Exception):
            query(c, "SELECT * FROM dropped")
        # still writable after the restart
        assert execute_update(c, "INSERT INTO keep.t VALUES (5000, 'new', 0.5)") == 1
        assert scalar(c, "SELECT count(*) FROM keep.t") == 991
        execute_update(c, "CREATE TABLE dropped (b VARCHAR)")  # the name is free again
        assert query(c, "SELECT * FROM dropped").schema.names == ["b"]


def test_kill_9_during_insert_is_all_or_nothing(make_server):
    srv = make_server()
    conn = srv.connect()
    execute_update(conn, "CREATE TABLE t (id BIGINT NOT NULL, payload VARCHAR)")
    before = execute_update(
        conn, "INSERT INTO t SELECT value, md5(CAST(value AS VARCHAR)) FROM generate_series(1, 1000)"
    )
    assert before == 1000
    conn.close()
    table_dir = srv.data_dir / "tables" / "public" / "t"
    assert (table_dir / "_delta_log").is_dir()
    existing = files_under(table_dir)

    n = 20_000_000
    box: dict = {}

    def big_insert():
        try:
            with srv.connect() as c:
                box["count"] = execute_update(
                    c,
                    f"INSERT INTO t SELECT value + 1000, md5(CAST(value AS VARCHAR)) "
                    f"FROM generate_series(1, {n})",
                )
        except Exception as e:  # noqa: BLE001 - the server is killed under it
            box["error"] = e

    thread = threading.Thread(target=big_insert, daemon=True)
    thread.start()
    # Wait for the INSERT to start writing: a new data file (or log entry) appears.
    new_files = wait_until(lambda: (files_under(table_dir) - existing) or ("count" in box) or ("error" in box),
                           timeout=300, message="the INSERT to write its first file")
    finished_before_kill = "count" in box or "error" in box
    srv.kill()
    thread.join(60)
    assert not finished_before_kill, f"INSERT ended before any file appeared ({box}); raise n"
    assert isinstance(new_files, set)

    srv.start()
    with srv.connect() as c:
        stats = query(c, "SELECT count(*) AS c, count(DISTINCT id) AS d, max(id) AS m FROM t").to_pylist()[0]
        print(f"after kill -9: {stats}; new files seen before the kill: {sorted(new_files)[:5]}")
        assert stats["c"] in (before, before + n), f"table is half-written: {stats}"
        assert stats["d"] == stats["c"]
        assert stats["m"] == (1000 if stats["c"] == before else 1000 + n)
        # the table still takes writes, and the next commit is clean
        assert execute_update(c, "INSERT INTO t VALUES (-1, 'after')") == 1
        assert scalar(c, "SELECT count(*) FROM t") == stats["c"] + 1


def test_sigterm_with_running_query_exits_promptly(make_server):
    srv = make_server()
    raw = srv.raw()
    info = raw.flight_info(cmd_statement_query(SLOW_SQL))
    box: dict = {}

    def run():
        try:
            box["result"] = raw.read_info(info)
        except Exception as e:  # noqa: BLE001
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_busy(srv.pid)
    start = time.monotonic()
    rc = srv.stop(timeout=30)
    assert rc == 0, f"exit code {rc} on SIGTERM with a running query:\n{srv.log_tail()}"
    thread.join(30)
    assert "error" in box, "the interrupted stream looked complete"
    assert time.monotonic() - start < 30


def test_prepared_statement_handle_survives_restart(make_server):
    srv = make_server()
    raw = srv.raw()
    raw.execute_update("CREATE TABLE p (id BIGINT, name VARCHAR)")
    raw.execute_update("INSERT INTO p VALUES (1, 'one'), (2, 'two'), (3, 'three')")

    plain, _, _ = raw.prepare("SELECT name FROM p ORDER BY id")
    query_handle, _, params_schema = raw.prepare("SELECT name FROM p WHERE id = ?")
    bound = raw.bind(
        query_handle, pa.record_batch([pa.array([2], params_schema.field(0).type)], schema=params_schema)
    )
    update_handle, _, update_params = raw.prepare("INSERT INTO p VALUES (?, ?)")

    srv.restart()
    raw2 = srv.raw()
    assert raw2.execute_prepared(plain).column("name").to_pylist() == ["one", "two", "three"]
    assert raw2.execute_prepared(bound).column("name").to_pylist() == ["two"]
    rebound = raw2.bind(
        query_handle, pa.record_batch([pa.array([3], params_schema.field(0).type)], schema=params_schema)
    )
    assert raw2.execute_prepared(rebound).column("name").to_pylist() == ["three"]
    params = pa.record_batch(
        [pa.array([4, 5], update_params.field(0).type), pa.array(["four", "five"], update_params.field(1).type)],
        schema=update_params,
    )
    assert raw2.execute_prepared_update(update_handle, params) == 2
    assert raw2.execute("SELECT count(*) AS c FROM p").column(0).to_pylist() == [5]
    raw2.close_prepared(plain)


def test_ticket_survives_restart(make_server):
    srv = make_server()
    raw = srv.raw()
    info = raw.flight_info(cmd_statement_query("SELECT value AS v FROM generate_series(1, 10)"))
    srv.restart()
    # redeem the old ticket at the new process
    table = read_stream(srv.flight_client().do_get(info.endpoints[0].ticket))
    assert table.column("v").to_pylist() == list(range(1, 11))
