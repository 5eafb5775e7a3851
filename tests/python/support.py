"""Helpers shared by the end-to-end tests.

* a tiny protobuf encoder/decoder, enough for the Flight SQL and Flight session
  messages (no protoc, no generated code);
* :class:`RawFlightSql`, a Flight SQL client on top of ``pyarrow.flight`` that
  builds every command by hand, so the tests see exactly what goes on the wire;
* :class:`CookieMiddlewareFactory`, the session cookie jar for ``pyarrow.flight``;
* small utilities: ``wait_until``, :class:`Hold` (the worker's test hold), process
  CPU / memory probes, ADBC helpers.
"""

from __future__ import annotations

import os
import pathlib
import struct
import time
from typing import Any, Callable, Iterable

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight

# --------------------------------------------------------------------------
# Waiting on conditions (never a bare sleep)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    message: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


class Hold:
    """The worker's test hold (``CONTRAIL_TEST_HOLD_DIR``, workflows/src/hold.rs).

    A server started with ``env=hold.env()`` holds every write workflow its
    worker runs twice: at ``fragments`` (its final fragments wrote their files,
    the commit is not decided: a cancel now stops the write) and at ``commit``
    (the commit activity started: a cancel no longer stops it), each until the
    test releases it. Give such a server a task queue of its own, so that no
    other worker takes its activities.
    """

    VAR = "CONTRAIL_TEST_HOLD_DIR"

    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {self.VAR: str(self.dir)}

    def waiting(self, point: str, prefix: str = "") -> list[str]:
        """Query ids held (or once held) at ``point`` whose id starts with ``prefix``."""
        suffix = f".{point}.waiting"
        return sorted(p.name[: -len(suffix)] for p in self.dir.glob(f"{prefix}*{suffix}"))

    def wait(self, point: str, prefix: str = "", timeout: float = 90) -> str:
        """The query id of the one workflow starting with ``prefix`` that reached ``point``."""
        (query_id,) = wait_until(lambda: self.waiting(point, prefix), timeout,
                                 f"a workflow {prefix}* to reach the {point} hold")
        return query_id

    def release(self, query_id: str, point: str) -> None:
        (self.dir / f"{query_id}.{point}.go").touch()


# --------------------------------------------------------------------------
# Process probes (Linux /proc)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by every thread of ``pid``."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode()
    # The command name (field 2) may contain spaces; fields after it are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def cpu_usage(pid: int, window: float) -> float:
    """Average number of busy cores of ``pid`` over ``window`` seconds."""
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(window)  # a measurement window, not a wait for a condition
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def wait_busy(pid: int, timeout: float = 60.0, cores: float = 0.5) -> None:
    """Wait until ``pid`` burns at least ``cores`` cores (a query is running)."""
    wait_until(lambda: cpu_usage(pid, 0.3) >= cores, timeout, f"server CPU >= {cores} cores")


def wait_idle(pid: int, timeout: float = 30.0, cores: float = 0.15) -> None:
    """Wait until ``pid`` is (nearly) idle: the running query has stopped."""
    wait_until(lambda: cpu_usage(pid, 0.5) <= cores, timeout, f"server CPU <= {cores} cores")


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` value from /proc/PID/status (e.g. ``VmHWM`` = peak RSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


# --------------------------------------------------------------------------
# ADBC helpers

Status = adbc_driver_manager.AdbcStatusCode


def execute_update(conn, sql: str) -> int:
    """Run ``sql`` through ADBC's ``StatementExecuteUpdate`` (Flight SQL
    ``CommandStatementUpdate``, not a prepared statement) and return the
    affected-row count the server reported."""
    stmt = adbc_driver_manager.AdbcStatement(conn.adbc_connection)
    try:
        stmt.set_sql_query(sql)
        return stmt.execute_update()
    finally:
        stmt.close()


def query(conn, sql: str, parameters=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        return cur.fetch_arrow_table()


def received(read):
    """(bytes this process read while `read` ran, its result). ADBC's Go driver
    reads its socket with read(2), which /proc/self/io counts in `rchar`."""
    def rchar() -> int:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    before = rchar()
    result = read()
    return rchar() - before, result


def scalar(conn, sql: str, parameters=None):
    with conn.cursor() as cur:
        cur.execute(sql, parameters)
        rows = cur.fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


def adbc_status(exc: BaseException):
    return getattr(exc, "status_code", None)


# --------------------------------------------------------------------------
# Protobuf wire format


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def pb_bytes(field: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    return _key(field, 2) + _varint(len(value)) + value


pb_string = pb_bytes
pb_message = pb_bytes


def pb_varint(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def pb_bool(field: int, value: bool) -> bytes:
    return pb_varint(field, 1 if value else 0)


def pb_sfixed64(field: int, value: int) -> bytes:
    return _key(field, 1) + struct.pack("<q", value)


def pb_double(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", value)


def pb_decode(buf: bytes) -> dict[int, list]:
    """Decode one message into ``{field: [values]}``. Varints are ints,
    length-delimited fields are bytes, fixed64/fixed32 are raw bytes."""
    buf = bytes(buf)
    out: dict[int, list] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            b = buf[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while i < len(buf):
        key = varint()
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value: Any = varint()
        elif wire_type == 1:
            value = buf[i : i + 8]
            i += 8
        elif wire_type == 2:
            n = varint()
            value = buf[i : i + n]
            i += n
        elif wire_type == 5:
            value = buf[i : i + 4]
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        out.setdefault(field, []).append(value)
    return out


def signed64(n: int) -> int:
    return n - (1 << 64) if n >= 1 << 63 else n


SQL_PREFIX = "type.googleapis.com/arrow.flight.protocol.sql."


def pack_any(message_name: str, payload: bytes = b"") -> bytes:
    """``google.protobuf.Any`` wrapping a Flight SQL message."""
    return pb_string(1, SQL_PREFIX + message_name) + pb_bytes(2, payload)


def unpack_any(buf: bytes) -> tuple[str, bytes]:
    fields = pb_decode(buf)
    type_url = fields.get(1, [b""])[0].decode()
    return type_url, fields.get(2, [b""])[0]


def _opt_str(field: int, value: str | None) -> bytes:
    return b"" if value is None else pb_string(field, value)


# Flight SQL commands ------------------------------------------------------


def cmd_statement_query(sql: str) -> bytes:
    return pack_any("CommandStatementQuery", pb_string(1, sql))


def cmd_statement_update(sql: str) -> bytes:
    return pack_any("CommandStatementUpdate", pb_string(1, sql))


def cmd_prepared_query(handle: bytes) -> bytes:
    return pack_any("CommandPreparedStatementQuery", pb_bytes(1, handle))


def cmd_prepared_update(handle: bytes) -> bytes:
    return pack_any("CommandPreparedStatementUpdate", pb_bytes(1, handle))


def cmd_get_catalogs() -> bytes:
    return pack_any("CommandGetCatalogs")


def cmd_get_db_schemas(catalog: str | None = None, pattern: str | None = None) -> bytes:
    return pack_any("CommandGetDbSchemas", _opt_str(1, catalog) + _opt_str(2, pattern))


def cmd_get_tables(
    catalog: str | None = None,
    schema_pattern: str | None = None,
    table_pattern: str | None = None,
    table_types: Iterable[str] = (),
    include_schema: bool = False,
) -> bytes:
    body = _opt_str(1, catalog) + _opt_str(2, schema_pattern) + _opt_str(3, table_pattern)
    body += b"".join(pb_string(4, t) for t in table_types)
    if include_schema:
        body += pb_bool(5, True)
    return pack_any("CommandGetTables", body)


def cmd_get_table_types() -> bytes:
    return pack_any("CommandGetTableTypes")


def cmd_get_sql_info(ids: Iterable[int] = ()) -> bytes:
    return pack_any("CommandGetSqlInfo", b"".join(pb_varint(1, i) for i in ids))


def cmd_get_xdbc_type_info(data_type: int | None = None) -> bytes:
    body = b"" if data_type is None else pb_varint(1, data_type)
    return pack_any("CommandGetXdbcTypeInfo", body)


def cmd_get_keys(kind: str, catalog: str | None, db_schema: str | None, table: str) -> bytes:
    """kind: PrimaryKeys, ImportedKeys or ExportedKeys."""
    body = _opt_str(1, catalog) + _opt_str(2, db_schema) + pb_string(3, table)
    return pack_any(f"CommandGet{kind}", body)


def cmd_get_cross_reference(pk: tuple, fk: tuple) -> bytes:
    (pc, ps, pt), (fc, fs, ft) = pk, fk
    body = _opt_str(1, pc) + _opt_str(2, ps) + pb_string(3, pt)
    body += _opt_str(4, fc) + _opt_str(5, fs) + pb_string(6, ft)
    return pack_any("CommandGetCrossReference", body)


INGEST_IF_NOT_EXIST = {"create": 1, "fail": 2}
INGEST_IF_EXISTS = {"fail": 1, "append": 2, "replace": 3}


def cmd_statement_ingest(
    table: str,
    if_not_exist: str = "create",
    if_exists: str = "fail",
    schema: str | None = None,
    catalog: str | None = None,
) -> bytes:
    options = pb_varint(1, INGEST_IF_NOT_EXIST[if_not_exist]) + pb_varint(
        2, INGEST_IF_EXISTS[if_exists]
    )
    body = pb_message(1, options) + pb_string(2, table) + _opt_str(3, schema) + _opt_str(4, catalog)
    return pack_any("CommandStatementIngest", body)


# Flight session messages (plain messages, not wrapped in Any) ------------


def session_value(value) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bool):
        return pb_bool(2, value)
    if isinstance(value, int):
        return pb_sfixed64(3, value)
    if isinstance(value, float):
        return pb_double(4, value)
    if isinstance(value, str):
        return pb_string(1, value)
    if isinstance(value, (list, tuple)):
        return pb_message(5, b"".join(pb_string(1, v) for v in value))
    raise TypeError(type(value))


def decode_session_value(buf: bytes):
    f = pb_decode(buf)
    if 1 in f:
        return f[1][0].decode()
    if 2 in f:
        return bool(f[2][0])
    if 3 in f:
        return struct.unpack("<q", f[3][0])[0]
    if 4 in f:
        return struct.unpack("<d", f[4][0])[0]
    if 5 in f:
        return [v.decode() for v in pb_decode(f[5][0]).get(1, [])]
    return None


SET_SESSION_ERRORS = {0: "UNSPECIFIED", 1: "INVALID_NAME", 2: "INVALID_VALUE", 3: "ERROR"}
CLOSE_SESSION_STATUS = {0: "UNSPECIFIED", 1: "CLOSED", 2: "CLOSING", 3: "NOT_CLOSEABLE"}
CANCEL_STATUS = {0: "UNSPECIFIED", 1: "CANCELLED", 2: "CANCELLING", 3: "NOT_CANCELLABLE"}


def _map_entries(buf: bytes, field: int = 1) -> list[tuple[str, bytes]]:
    out = []
    for entry in pb_decode(buf).get(field, []):
        e = pb_decode(entry)
        out.append((e.get(1, [b""])[0].decode(), e.get(2, [b""])[0]))
    return out


# --------------------------------------------------------------------------
# pyarrow.flight cookie jar


class CookieMiddlewareFactory(flight.ClientMiddlewareFactory):
    """Keeps the cookies the server sets (``arrow_flight_session_id``) and sends
    them back on every call, like ADBC's cookie middleware."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def start_call(self, info):
        return _CookieMiddleware(self)


class _CookieMiddleware(flight.ClientMiddleware):
    def __init__(self, factory: CookieMiddlewareFactory) -> None:
        self.factory = factory

    def sending_headers(self):
        if not self.factory.cookies:
            return {}
        return {"cookie": "; ".join(f"{k}={v}" for k, v in self.factory.cookies.items())}

    def received_headers(self, headers):
        for header in headers.get("set-cookie", []):
            if isinstance(header, bytes):
                header = header.decode()
            parts = [p.strip() for p in header.split(";")]
            name, _, value = parts[0].partition("=")
            attrs = {p.split("=", 1)[0].lower(): p.partition("=")[2] for p in parts[1:]}
            if attrs.get("max-age") in ("0", "-1"):
                self.factory.cookies.pop(name, None)
            else:
                self.factory.cookies[name] = value


# --------------------------------------------------------------------------
# Raw Flight SQL client


def read_stream(reader) -> pa.Table:
    """Read a DoGet stream chunk by chunk.

    Not ``reader.read_all()``: pyarrow turns a CANCELLED status read that way
    into a simulated SIGINT (KeyboardInterrupt in the main thread), which
    would take down the test run when a server cancels a stream.
    """
    batches = [chunk.data for chunk in reader if chunk.data is not None]
    return pa.Table.from_batches(batches, schema=reader.schema)


class RawFlightSql:
    """Flight SQL over plain ``pyarrow.flight`` calls, commands built by hand."""

    def __init__(self, client: flight.FlightClient, headers: list | None = None, timeout=120):
        self.client = client
        self.options = flight.FlightCallOptions(headers=headers or [], timeout=timeout)

    # -- queries ----------------------------------------------------------
    def flight_info(self, command: bytes) -> flight.FlightInfo:
        return self.client.get_flight_info(flight.FlightDescriptor.for_command(command), self.options)

    def schema(self, command: bytes) -> pa.Schema:
        return self.client.get_schema(flight.FlightDescriptor.for_command(command), self.options).schema

    def read_info(self, info: flight.FlightInfo) -> pa.Table:
        tables = []
        for endpoint in info.endpoints:
            client = self.client
            locations = [str(loc.uri, "utf-8") if isinstance(loc.uri, bytes) else str(loc.uri) for loc in endpoint.locations]
            remote = [u for u in locations if not u.startswith("arrow-flight-reuse-connection")]
            if remote:
                client = flight.connect(remote[0])
            tables.append(read_stream(client.do_get(endpoint.ticket, self.options)))
        if not tables:
            return info.schema.empty_table()
        return pa.concat_tables(tables)

    def fetch(self, command: bytes) -> pa.Table:
        return self.read_info(self.flight_info(command))

    def execute(self, sql: str) -> pa.Table:
        return self.fetch(cmd_statement_query(sql))

    def _do_put(self, command: bytes, data: pa.Table | pa.RecordBatch | None) -> bytes | None:
        if data is None:
            schema = pa.schema([])
        else:
            schema = data.schema
        writer, reader = self.client.do_put(
            flight.FlightDescriptor.for_command(command), schema, self.options
        )
        try:
            if data is not None:
                if isinstance(data, pa.RecordBatch):
                    writer.write_batch(data)
                else:
                    writer.write_table(data)
            writer.done_writing()
            buf = reader.read()
        finally:
            writer.close()
        return None if buf is None else buf.to_pybytes()

    def execute_update(self, sql: str) -> int:
        meta = self._do_put(cmd_statement_update(sql), None)
        assert meta is not None, "server sent no DoPutUpdateResult"
        return signed64(pb_decode(meta).get(1, [0])[0])

    def ingest(self, table: str, data, **kwargs) -> int:
        meta = self._do_put(cmd_statement_ingest(table, **kwargs), data)
        assert meta is not None, "server sent no DoPutUpdateResult"
        return signed64(pb_decode(meta).get(1, [0])[0])

    # -- prepared statements --------------------------------------------
    def action(self, action_type: str, body: bytes) -> list[bytes]:
        results = self.client.do_action(flight.Action(action_type, body), self.options)
        return [r.body.to_pybytes() for r in results]

    def prepare(self, sql: str) -> tuple[bytes, pa.Schema | None, pa.Schema | None]:
        body = pack_any("ActionCreatePreparedStatementRequest", pb_string(1, sql))
        (result,) = self.action("CreatePreparedStatement", body)
        type_url, payload = unpack_any(result)
        assert type_url.endswith("ActionCreatePreparedStatementResult"), type_url
        f = pb_decode(payload)

        def schema(field):
            raw = f.get(field, [b""])[0]
            return pa.ipc.read_schema(pa.py_buffer(raw)) if raw else None

        return f[1][0], schema(2), schema(3)

    def bind(self, handle: bytes, params: pa.RecordBatch | pa.Table) -> bytes:
        """Bind parameters (DoPut); returns the handle to use from now on."""
        meta = self._do_put(cmd_prepared_query(handle), params)
        if meta:
            new = pb_decode(meta).get(1)
            if new:
                return new[0]
        return handle

    def execute_prepared(self, handle: bytes) -> pa.Table:
        return self.fetch(cmd_prepared_query(handle))

    def execute_prepared_update(self, handle: bytes, params=None) -> int:
        meta = self._do_put(cmd_prepared_update(handle), params)
        assert meta is not None, "server sent no DoPutUpdateResult"
        return signed64(pb_decode(meta).get(1, [0])[0])

    def close_prepared(self, handle: bytes) -> None:
        body = pack_any("ActionClosePreparedStatementRequest", pb_bytes(1, handle))
        self.action("ClosePreparedStatement", body)

    # -- cancellation -----------------------------------------------------
    def cancel_flight_info(self, info: flight.FlightInfo) -> str:
        results = self.action("CancelFlightInfo", pb_message(1, info.serialize()))
        assert len(results) == 1, results
        return CANCEL_STATUS[pb_decode(results[0]).get(1, [0])[0]]

    # -- sessions -----------------------------------------------------------
    def set_session_options(self, options: dict) -> dict[str, str]:
        body = b"".join(
            pb_message(1, pb_string(1, k) + pb_message(2, session_value(v))) for k, v in options.items()
        )
        results = self.action("SetSessionOptions", body)
        errors: dict[str, str] = {}
        for r in results:
            for name, err in _map_entries(r):
                errors[name] = SET_SESSION_ERRORS[pb_decode(err).get(1, [0])[0]]
        return errors

    def get_session_options(self) -> dict:
        results = self.action("GetSessionOptions", b"")
        out = {}
        for r in results:
            for name, value in _map_entries(r):
                out[name] = decode_session_value(value)
        return out

    def close_session(self) -> str:
        results = self.action("CloseSession", b"")
        assert len(results) == 1, results
        return CLOSE_SESSION_STATUS[pb_decode(results[0]).get(1, [0])[0]]


# --------------------------------------------------------------------------
# gRPC status of a pyarrow.flight error

_GRPC_PHRASES = {
    "INVALID_ARGUMENT": "invalid argument",
    "NOT_FOUND": "not found",
    "UNAUTHENTICATED": "unauthenticated",
    "PERMISSION_DENIED": "permission denied",
    "CANCELLED": "cancelled",
    "ALREADY_EXISTS": "already exists",
    "UNIMPLEMENTED": "not implemented",
    "INTERNAL": "internal",
}


def assert_flight_code(exc: BaseException, code: str) -> None:
    """Check the gRPC status code behind a ``pyarrow.flight`` exception."""
    by_type = {
        "INVALID_ARGUMENT": pa.ArrowInvalid,
        "NOT_FOUND": pa.ArrowKeyError,
        "UNAUTHENTICATED": flight.FlightUnauthenticatedError,
        "PERMISSION_DENIED": flight.FlightUnauthorizedError,
        "CANCELLED": flight.FlightCancelledError,
        "UNIMPLEMENTED": pa.ArrowNotImplementedError,
        "INTERNAL": flight.FlightInternalError,
    }
    expected_type = by_type.get(code)
    text = str(exc)
    if expected_type is not None and isinstance(exc, expected_type):
        return
    if f"gRPC returned {_GRPC_PHRASES[code]} error" in text or f"{code}:" in text:
        return
    raise AssertionError(f"expected gRPC {code}, got {type(exc).__name__}: {text[:500]}")
