"""Errors carry the right gRPC status; cancelled or abandoned queries stop; the
server keeps serving throughout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow.flight as flight
import pytest

from conftest import HERE
from support import (
    Status,
    adbc_status,
    assert_flight_code,
    cmd_statement_query,
    execute_update,
    query,
    read_stream,
    scalar,
    wait_busy,
    wait_idle,
)

# A CPU-bound query that would run for many minutes and emits nothing until done.
# (A streaming aggregate: DataFusion yields between batches, so a cancelled
# query can stop within a fraction of a second.)
SLOW_SQL = "SELECT sum(value % 7) AS s FROM generate_series(1, 200000000000)"
# How long a cancelled or abandoned query may keep burning CPU.
CANCEL_DEADLINE = 10.0


def expect_error(conn, sql, status=None):
    with pytest.raises(dbapi.Error) as exc:
        with conn.cursor() as cur:
            cur.execute(sql)
            cur.fetchall()
    if status is not None:
        assert adbc_status(exc.value) == status, f"{sql!r}: {exc.value!r}"
    return exc.value


# --------------------------------------------------------------------------
# error codes


def test_syntax_error_is_invalid_argument(conn):
    err = expect_error(conn, "SELEC 1", Status.INVALID_ARGUMENT)
    assert isinstance(err, dbapi.ProgrammingError)
    assert "SELEC" in str(err)


def test_unknown_table_is_not_found(conn):
    err = expect_error(conn, "SELECT * FROM no_such_table_abc", Status.NOT_FOUND)
    assert isinstance(err, dbapi.ProgrammingError)
    assert "no_such_table_abc" in str(err)


def test_unknown_schema_qualified_table_is_not_found(conn):
    err = expect_error(conn, "SELECT * FROM no_such_schema.t", Status.NOT_FOUND)
    assert "no_such_schema" in str(err)


def test_unknown_column_is_invalid_argument(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (a INT)")
    err = expect_error(conn, f"SELECT no_such_col FROM {name}", Status.INVALID_ARGUMENT)
    assert "no_such_col" in str(err)


def test_type_error_is_invalid_argument(conn):
    err = expect_error(conn, "SELECT 'abc' + 1", Status.INVALID_ARGUMENT)
    assert isinstance(err, dbapi.ProgrammingError)


def test_runtime_error_message(conn):
    err = expect_error(conn, "SELECT 1 / CAST(0 AS INT)")
    assert "divide by zero" in str(err).lower()
    assert adbc_status(err) not in (Status.INTERNAL, Status.UNKNOWN), repr(err)


def test_update_errors(conn, name):
    err = None
    with pytest.raises(dbapi.Error) as exc:
        execute_update(conn, "DROP TABLE no_such_table_to_drop")
    err = exc.value
    assert adbc_status(err) == Status.NOT_FOUND, repr(err)

    execute_update(conn, f"CREATE TABLE {name} (a INT)")
    with pytest.raises(dbapi.Error) as exc:
        execute_update(conn, f"CREATE TABLE {name} (a INT)")
    assert adbc_status(exc.value) in (Status.ALREADY_EXISTS, Status.INVALID_ARGUMENT), repr(exc.value)
    assert "exist" in str(exc.value).lower()

    with pytest.raises(dbapi.Error) as exc:
        execute_update(conn, f"INSERT INTO {name} VALUES ('not a number')")
    assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, repr(exc.value)

    with pytest.raises(dbapi.Error) as exc:
        execute_update(conn, "INSERT INTO no_such_table_ins VALUES (1)")
    assert adbc_status(exc.value) == Status.NOT_FOUND, repr(exc.value)


def test_server_keeps_serving_after_errors(conn, server):
    bad = ["SELEC 1", "SELECT * FROM nope", "SELECT 'a' + 1", "CREATE TABLE", ";;;", "SELECT 1 / CAST(0 AS INT)"]
    for sql in bad * 3:
        with pytest.raises(dbapi.Error):
            with conn.cursor() as cur:
                cur.execute(sql)
                cur.fetchall()
    assert scalar(conn, "SELECT 1 + 1") == 2
    assert server.proc.poll() is None
    with server.connect() as other:
        assert scalar(other, "SELECT 3") == 3


# --------------------------------------------------------------------------
# cancellation


def _run_in_thread(fn):
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - we hand it to the test
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


def test_adbc_cancel_stops_query(make_server):
    server = make_server()  # its own server: a query that does not stop cannot leak into other tests
    conn = server.connect()
    cur = conn.cursor()

    def run():
        cur.execute(SLOW_SQL)
        return cur.fetchall()

    thread, box = _run_in_thread(run)
    wait_busy(server.pid)
    cur.adbc_cancel()
    thread.join(30)
    assert not thread.is_alive(), "cursor did not return after adbc_cancel"
    assert "error" in box, f"cancelled query returned a result: {box.get('result')}"
    assert isinstance(box["error"], dbapi.Error), repr(box["error"])
    wait_idle(server.pid, timeout=CANCEL_DEADLINE)  # the server stopped computing
    cur.close()
    assert scalar(conn, "SELECT 42") == 42
    conn.close()


def test_cancel_flight_info_stops_query(make_server):
    server = make_server()  # its own server: a query that does not stop cannot leak into other tests
    raw = server.raw()
    info = raw.flight_info(cmd_statement_query(SLOW_SQL))
    thread, box = _run_in_thread(lambda: raw.read_info(info))
    wait_busy(server.pid)
    status = server.raw().cancel_flight_info(info)
    assert status in ("CANCELLED", "CANCELLING"), status
    thread.join(30)
    assert not thread.is_alive(), "DoGet did not end after CancelFlightInfo"
    assert "error" in box, f"cancelled stream ended as if complete: {box.get('result')}"
    assert isinstance(box["error"], flight.FlightError) or "cancel" in str(box["error"]).lower(), repr(
        box["error"]
    )
    wait_idle(server.pid, timeout=CANCEL_DEADLINE)
    assert raw.execute("SELECT 7 AS x").column("x").to_pylist() == [7]


def test_client_disconnect_stops_query(make_server):
    server = make_server()  # its own server: a query that does not stop cannot leak into other tests
    script = textwrap.dedent(
        f"""
        import pyarrow.flight as flight, support
        client = flight.connect("grpc+tcp://{server.address}")
        info = client.get_flight_info(flight.FlightDescriptor.for_command(
            support.cmd_statement_query({SLOW_SQL!r})))
        client.do_get(info.endpoints[0].ticket).read_all()
        """
    )
    env = dict(os.environ, PYTHONPATH=str(HERE))
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        wait_busy(server.pid)
    finally:
        child.kill()
        child.wait(30)
    wait_idle(server.pid, timeout=CANCEL_DEADLINE)
    with server.connect() as c:
        assert scalar(c, "SELECT 1") == 1


def test_stream_cancelled_by_client_stops_query(make_server):
    server = make_server()  # its own server: a query that does not stop cannot leak into other tests
    """The client cancels its DoGet call (gRPC RST_STREAM) while the query runs."""
    raw = server.raw()
    info = raw.flight_info(cmd_statement_query(SLOW_SQL))
    reader = raw.client.do_get(info.endpoints[0].ticket, raw.options)
    thread, box = _run_in_thread(reader.read_chunk)
    wait_busy(server.pid)
    reader.cancel()
    thread.join(30)
    assert not thread.is_alive() and "error" in box, box
    wait_idle(server.pid, timeout=CANCEL_DEADLINE)
    assert raw.execute("SELECT 8 AS x").column("x").to_pylist() == [8]


def test_cancel_one_query_leaves_others_running(make_server):
    server = make_server()  # its own server: a query that does not stop cannot leak into other tests
    """Cancelling one statement does not disturb a concurrent one."""
    with server.connect() as other:
        n = 3_000_000
        slow_conn = server.connect()
        slow_cur = slow_conn.cursor()

        def slow():
            slow_cur.execute(SLOW_SQL)
            return slow_cur.fetchall()

        t_slow, box_slow = _run_in_thread(slow)
        wait_busy(server.pid)
        t_ok, box_ok = _run_in_thread(
            lambda: query(other, f"SELECT count(*) AS c, sum(value) AS s FROM generate_series(1, {n})").to_pylist()
        )
        slow_cur.adbc_cancel()
        t_slow.join(30)
        t_ok.join(120)
        assert "error" in box_slow
        assert box_ok.get("result") == [{"c": n, "s": n * (n + 1) // 2}], box_ok
        slow_cur.close()
        slow_conn.close()
    wait_idle(server.pid, timeout=CANCEL_DEADLINE)


def test_bad_ticket_and_command_are_invalid_argument(server):
    client = server.flight_client()
    with pytest.raises(Exception) as exc:
        read_stream(client.do_get(flight.Ticket(b"\x00garbage-ticket\xff")))
    assert_flight_code(exc.value, "INVALID_ARGUMENT")
    with pytest.raises(Exception) as exc:
        client.get_flight_info(flight.FlightDescriptor.for_command(b"\xff\x00not protobuf"))
    assert_flight_code(exc.value, "INVALID_ARGUMENT")
    with pytest.raises(Exception) as exc:
        client.get_flight_info(flight.FlightDescriptor.for_command(b"\x0a\x05hello"))
    # a well-formed Any of a type nobody knows: invalid, or at least unimplemented
    try:
        assert_flight_code(exc.value, "INVALID_ARGUMENT")
    except AssertionError:
        assert_flight_code(exc.value, "UNIMPLEMENTED")
    assert server.raw().execute("SELECT 1 AS one").column(0).to_pylist() == [1]


@pytest.mark.parametrize("priority", ["normal", "interactive"])
def test_statement_timeout_stops_queries_and_writes(make_server, priority):
    """SET contrail.statement_timeout: the server cancels what runs longer (gRPC
    DEADLINE_EXCEEDED, ADBC TIMEOUT), stops computing, and a cut-off write leaves
    nothing behind; on either lane of CPU threads (contrail.priority)."""
    server = make_server()
    with server.connect() as conn:
        execute_update(conn, f"SET contrail.priority = '{priority}'")
        execute_update(conn, "CREATE TABLE timed (v BIGINT)")
        execute_update(conn, "SET contrail.statement_timeout = '1s'")
        err = expect_error(conn, SLOW_SQL, Status.TIMEOUT)
        assert "contrail.statement_timeout" in str(err), repr(err)
        wait_idle(server.pid, timeout=CANCEL_DEADLINE)
        assert scalar(conn, "SELECT 42") == 42  # short statements still run
        with pytest.raises(dbapi.Error) as exc:
            execute_update(conn, "INSERT INTO timed SELECT value FROM generate_series(1, 200000000000)")
        assert adbc_status(exc.value) == Status.TIMEOUT, repr(exc.value)
        wait_idle(server.pid, timeout=CANCEL_DEADLINE)
        execute_update(conn, "SET contrail.statement_timeout = 0")
        assert scalar(conn, "SELECT count(*) FROM timed") == 0
        with pytest.raises(dbapi.Error) as exc:
            execute_update(conn, "SET contrail.statement_timeout = 'soon'")
        assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, repr(exc.value)
