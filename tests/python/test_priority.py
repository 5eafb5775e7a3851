"""`SET contrail.priority = 'interactive'`: the session's statements run on CPU
threads of their own. What a client sees must not change: the same rows for
queries, prepared statements and streamed results, and writes that land.

Bad values are tested with the other settings (`test_auth_sessions.py`); that
interactive statements do not wait for busy normal threads, on the executor
itself (`server/src/exec.rs`)."""

from __future__ import annotations

import os
import pathlib
import sys

import pyarrow as pa
import pytest

from support import execute_update, query

LINEITEM = "SELECT * FROM tpch.lineitem ORDER BY l_orderkey, l_linenumber"


def set_priority(conn, priority: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SET contrail.priority = '{priority}'")


def show_priority(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW contrail.priority")
        return cur.fetchall()[0][1]


def test_interactive_sessions_get_the_same_answers(tpch_server):
    normal, interactive = tpch_server.connect(), tpch_server.connect()
    try:
        set_priority(interactive, "Interactive")
        assert show_priority(interactive) == "interactive"
        assert show_priority(normal) == "normal", "another session keeps the default"
        # A streamed result of many batches, an aggregate and a prepared statement.
        want = query(normal, LINEITEM)
        got = query(interactive, LINEITEM)
        assert got.num_rows == want.num_rows > 50_000
        assert got.equals(want)
        q = "SELECT n_name, count(*) AS n FROM tpch.nation JOIN tpch.customer ON c_nationkey = n_nationkey " \
            "WHERE n_regionkey = ? GROUP BY n_name ORDER BY n_name"
        with normal.cursor() as a, interactive.cursor() as b:
            a.execute(q, parameters=(2,))
            b.execute(q, parameters=(2,))
            assert b.fetch_arrow_table().equals(a.fetch_arrow_table())
            b.execute("SELECT 1 + 1")
            assert b.fetchall() == [(2,)]
    finally:
        normal.close()
        interactive.close()


def test_interactive_writes_land(server, name):
    """Updates, prepared updates and bulk ingest of an interactive session."""
    conn = server.connect()
    try:
        set_priority(conn, "interactive")
        execute_update(conn, f"CREATE TABLE {name} (id BIGINT, label VARCHAR)")
        assert execute_update(conn, f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two')") == 2
        with conn.cursor() as cur:
            # A prepared update (as JDBC sends every statement), then a bulk ingest.
            cur.executemany(f"INSERT INTO {name} VALUES (?, ?)", [(3, "three")])
            four = pa.table({"id": pa.array([4], pa.int64()), "label": ["four"]})
            assert cur.adbc_ingest(name, four, mode="append") == 1
        set_priority(conn, "normal")
        assert query(conn, f"SELECT id, label FROM {name} ORDER BY id").to_pylist() == [
            {"id": 1, "label": "one"}, {"id": 2, "label": "two"}, {"id": 3, "label": "three"},
            {"id": 4, "label": "four"}]
    finally:
        conn.close()


def thread_nice(pid: int) -> dict[str, set[int]]:
    """The nice values of a process's threads, by thread name (Linux /proc)."""
    out: dict[str, set[int]] = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        nice = int(stat[stat.rindex(")") + 2:].split()[16])  # field 19
        out.setdefault(name, set()).add(nice)
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only")
def test_normal_threads_yield_the_cores_to_interactive_ones(make_server, tmp_path):
    """The threads running normal statements run at a lower priority (nice 10 unless
    `--normal-nice` says otherwise); interactive and gRPC threads keep the server's own."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert own < 3, f"the tests run at nice {own}"

    def nice(**kwargs) -> dict[str, set[int]]:
        srv = make_server(**kwargs)
        try:
            by_name = thread_nice(srv.pid)
        finally:
            assert srv.stop() == 0
        assert {"contrail-cpu", "contrail-intera", "contrail-io"} <= by_name.keys(), by_name
        return by_name

    default = nice()
    assert default["contrail-cpu"] == {10}
    assert default["contrail-intera"] == default["contrail-io"] == {own}

    config = tmp_path / "contrail.toml"
    config.write_text("normal_nice = 3\n")
    assert nice(config=config)["contrail-cpu"] == {3}
    assert nice(extra_args=("--normal-nice", "0"))["contrail-cpu"] == {own}, "0 turns it off"

    bad = make_server(start=False, extra_args=("--normal-nice", "25"))
    with pytest.raises(RuntimeError, match=r"--normal-nice 25: expected 0 \(off\) to 19"):
        bad.start()
