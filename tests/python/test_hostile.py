"""Hostile and careless input: no statement may crash the server or destroy data.

Every case asserts what a user would check afterwards: the server is alive and
serving other clients, the right gRPC code came back, and no table changed
unless the statement said so.
"""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as dbapi
import pytest

from support import Status, adbc_status, execute_update, query, scalar

# The default --max-nesting (contrail_planner::limits::DEFAULT_MAX_NESTING).
MAX_NESTING = 4096


def chain(term: str, op: str, n: int) -> str:
    return op.join([term] * n)


def cte_chain(n: int) -> str:
    ctes = ", ".join(f"c{i} AS (SELECT x + 1 AS x FROM c{i - 1})" for i in range(1, n))
    return f"WITH c0 AS (SELECT 1 AS x), {ctes} SELECT x FROM c{n - 1}"


# Each shape that overflowed a 2 MiB thread stack, by how many terms did it
# (the measurements), and the SQL for n terms.
SHAPES = {
    "plus": (1_900, lambda n: f"SELECT {chain('1', '+', n)} AS v"),
    "concat": (1_900, lambda n: f"SELECT length({chain(chr(39) + 'a' + chr(39), ' || ', n)}) AS v"),
    "or": (1_970, lambda n: f"SELECT count(*) AS v FROM (SELECT 1 AS a) WHERE {chain('a = 2', ' OR ', n - 1)} OR a = 1"),
    "and": (1_970, lambda n: f"SELECT count(*) AS v FROM (SELECT 1 AS a) WHERE {chain('a > 0', ' AND ', n)}"),
    "union": (2_200, lambda n: f"SELECT count(*) AS v FROM ({chain('SELECT 1 AS a', ' UNION ALL ', n)})"),
    "cte": (500, cte_chain),
}

# What each shape returns for n terms, when it runs.
EXPECTED = {
    "plus": lambda n: n,
    "concat": lambda n: n,
    "or": lambda n: 1,
    "and": lambda n: 1,
    "union": lambda n: n,
    "cte": lambda n: n,
}

# Terms that keep each shape within the default nesting limit (the estimate
# counts `a = 2 OR` as two levels, a CTE as one).
WITHIN = {"plus": 4_000, "concat": 4_000, "or": 2_000, "and": 2_000, "union": 4_000, "cte": 4_000}


def expect_refused(conn, sql: str, code=Status.INVALID_ARGUMENT) -> str:
    with pytest.raises(dbapi.Error) as exc:
        query(conn, sql)
    assert adbc_status(exc.value) == code, exc.value
    return str(exc.value)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_deep_statements_at_ten_times_the_old_crash_are_refused_and_the_server_lives(server, conn, shape):
    crashed_at, sql_of = SHAPES[shape]
    message = expect_refused(conn, sql_of(10 * crashed_at))
    assert "nesting" in message and "--max-nesting" in message, message
    assert len(message) < 2_000, "the error does not echo the statement back"
    assert server.proc.poll() is None
    # Another client is served.
    with server.connect() as other:
        assert scalar(other, "SELECT 41 + 1") == 42


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_deep_statements_within_the_limit_run(server, conn, shape):
    """The thread stacks hold what the limit lets through: each shape just
    under the default limit runs (about twice what crashed a 2 MiB stack)."""
    _, sql_of = SHAPES[shape]
    n = WITHIN[shape]
    assert scalar(conn, sql_of(n)) == EXPECTED[shape](n)
    assert server.proc.poll() is None


def test_statements_over_the_configured_size_are_refused(make_server):
    srv = make_server(extra_args=("--max-statement-bytes", "4096", "--max-nesting", "100"))
    with srv.connect() as conn:
        message = expect_refused(conn, "SELECT '" + "x" * 5_000 + "' AS v")
        assert "--max-statement-bytes" in message and "xxxxxxxxxx" not in message, message
        expect_refused(conn, f"SELECT {chain('1', '+', 101)}")
        assert scalar(conn, f"SELECT {chain('1', '+', 99)}") == 99


@pytest.mark.parametrize("flags", [("--max-nesting", "0"), ("--max-statement-bytes", "0"), ("--token-ttl-secs", "0")])
def test_nonsensical_settings_are_refused_at_start(make_server, flags):
    srv = make_server(start=False, extra_args=flags)
    with pytest.raises(RuntimeError) as exc:
        srv.start(timeout=60)
    assert flags[0] in str(exc.value)


# --------------------------------------------------------------------------
# Names that are not one directory


def test_drop_table_with_an_empty_name_leaves_the_schema_whole(make_server):
    srv = make_server()
    with srv.connect() as conn:
        execute_update(conn, "CREATE TABLE t1 AS SELECT 1 AS x")
        for name in ['""', '"."', '".."', '"a/b"', '"../../../x"', '"x\\y"']:
            with pytest.raises(dbapi.Error) as exc:
                execute_update(conn, f"CREATE TABLE {name} (z INT)")
            assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, (name, exc.value)
            with pytest.raises(dbapi.Error) as exc:
                execute_update(conn, f"CREATE TABLE {name} AS SELECT 1 AS z")
            assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, (name, exc.value)
            with pytest.raises(dbapi.Error) as exc:
                execute_update(conn, f"DROP TABLE {name}")
            assert adbc_status(exc.value) == Status.NOT_FOUND, (name, exc.value)
            for schema in ['""', '"."', '".."', '"../up"']:
                with pytest.raises(dbapi.Error) as exc:
                    execute_update(conn, f"CREATE SCHEMA {schema}")
                assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, (schema, exc.value)
        assert scalar(conn, "SELECT x FROM t1") == 1
    # Nothing was made outside the data directory, nor a Delta log in the schema folder.
    assert not (srv.data_dir / "tables" / "public" / "_delta_log").exists()
    assert not (srv.base / "x").exists() and not (srv.data_dir.parent.parent / "x").exists()
    srv.restart()
    with srv.connect() as conn:
        assert scalar(conn, "SELECT x FROM t1") == 1
        assert query(conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")[
            "table_name"
        ].to_pylist() == ["t1"]


def test_a_name_with_a_nul_is_refused(server, conn):
    with pytest.raises(dbapi.Error) as exc:
        execute_update(conn, 'CREATE TABLE "a\x00b" (z INT)')
    assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, exc.value
    assert scalar(conn, "SELECT 1") == 1


# --------------------------------------------------------------------------
# Sessions and messages


def test_made_up_session_cookies_are_not_sessions(server):
    """Only the server mints session ids: a client's made-up id gets a new
    session (announced with Set-Cookie), and settings set under it do not
    stick to the made-up id."""
    import support

    forged = b"arrow_flight_session_id=made-up-by-the-client"
    raw = server.raw(headers=[(b"cookie", forged)])
    raw.set_session_options({"contrail.statement_timeout": "7s"})
    again = server.raw(headers=[(b"cookie", forged)])
    assert again.get_session_options().get("contrail.statement_timeout") != "7000ms"
    # A client that sends back what the server set keeps its session.
    jar = support.CookieMiddlewareFactory()
    real = server.raw(middleware=[jar])
    real.set_session_options({"contrail.statement_timeout": "7s"})
    assert jar.cookies["arrow_flight_session_id"] != "made-up-by-the-client"
    assert real.get_session_options()["contrail.statement_timeout"] == "7000ms"


def test_an_error_never_echoes_a_huge_input_back(server, conn):
    name = "n" * 1_000_000
    with pytest.raises(dbapi.Error) as exc:
        query(conn, f'SELECT * FROM "{name}"')
    assert adbc_status(exc.value) == Status.NOT_FOUND, str(exc.value)[:300]
    assert len(str(exc.value)) < 10_000
    with pytest.raises(dbapi.Error) as exc:
        execute_update(conn, f'CREATE TABLE "{name}" (a INT)')
    assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, str(exc.value)[:300]
    assert "255 bytes" in str(exc.value) and len(str(exc.value)) < 10_000
    assert scalar(conn, "SELECT 1") == 1


# --------------------------------------------------------------------------
# The server key outside the data directory


@pytest.mark.parametrize("source", ["file", "env"])
def test_the_server_key_can_live_outside_the_data_directory(make_server, tmp_path, source):
    """`--key-file` (or CONTRAIL_SERVER_KEY) keeps the key that signs handles out
    of the data directory; a handle made before a restart still runs after it."""
    key_file = tmp_path / "secrets" / "contrail.key"
    if source == "file":
        srv = make_server(extra_args=("--key-file", str(key_file)))
    else:
        srv = make_server(env={"CONTRAIL_SERVER_KEY": "ab" * 32})
    raw = srv.raw()
    handle, _, _ = raw.prepare("SELECT 41 + 1 AS v")
    assert raw.execute_prepared(handle).column("v").to_pylist() == [42]
    assert not (srv.data_dir / "server.key").exists()
    if source == "file":
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.stat().st_size >= 32
    else:
        assert not key_file.exists()
    srv.restart()
    assert srv.raw().execute_prepared(handle).column("v").to_pylist() == [42], "the same key after a restart"


def test_select_lists_wider_than_the_setting_are_refused_before_planning(make_server):
    """Planning time grows with the square of a SELECT list's width and cannot be
    stopped once started: the width is bounded before planning (--max-select-items)."""
    srv = make_server(extra_args=("--max-select-items", "100"))
    with srv.connect() as conn:
        assert query(conn, "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(100))).num_columns == 100
        for sql in (
            "SELECT " + ", ".join(str(i) for i in range(101)),
            "SELECT 1 FROM (SELECT " + ", ".join(f"{i} AS c{i}" for i in range(101)) + ")",
        ):
            message = expect_refused(conn, sql)
            assert "--max-select-items" in message, message
        assert scalar(conn, "SELECT 1") == 1


def test_the_default_select_list_limit_refuses_a_sixty_thousand_column_query_at_once(server, conn):
    wide = "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(60_000))
    message = expect_refused(conn, wide)
    assert "--max-select-items" in message and "60000" in message, message
    assert scalar(conn, "SELECT 2") == 2
