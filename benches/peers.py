"""Peer servers that Contrail's benchmarks compare against.

Every peer listens on 127.0.0.1 on a free port, is a context manager, and is
only handed out once a real readiness condition holds (a query answers, or
the port is listening), polled against a deadline -- never a fixed sleep.

    from peers import RoapiServer, PyArrowFlightServer, PostgresServer, iperf3_loopback_gbps

    with RoapiServer({"lineitem": "/data/lineitem.parquet"}) as r:
        flight_sql_query(r.uri, "SELECT count(*) FROM lineitem")   # r.uri == "grpc://127.0.0.1:PORT"

    with PyArrowFlightServer("/data/lineitem.parquet") as s:
        pyarrow.flight.connect(s.uri).do_get(pyarrow.flight.Ticket(b"lineitem")).read_all()

    with PostgresServer() as pg:
        pg.load_parquet("lineitem", "/data/lineitem.parquet")
        psycopg.connect(pg.dsn)  # or adbc_driver_postgresql.dbapi.connect(pg.dsn)

    gbps = iperf3_loopback_gbps(seconds=5)

Command line:
    python benches/peers.py pyarrow-server --parquet PATH [--name lineitem] --port-file F
    python benches/peers.py selftest --parquet PATH
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional, Union

HOST = "127.0.0.1"
PathLike = Union[str, os.PathLike]

__all__ = [
    "PeerError",
    "free_port",
    "wait_until",
    "port_accepts",
    "port_is_listening",
    "flight_sql_query",
    "RoapiServer",
    "PyArrowFlightServer",
    "PostgresServer",
    "ensure_postgres_installed",
    "load_parquet_into_postgres",
    "iperf3_loopback_gbps",
    "shaped_loopback",
]


class PeerError(RuntimeError):
    """A peer failed to start, died, or did not become ready in time."""


# --------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------

def free_port(host: str = HOST) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _distinct_free_ports(n: int, host: str = HOST) -> list[int]:
    # Hold all sockets open at once so the OS cannot hand out the same port twice.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    proc: Optional[subprocess.Popen] = None,
    log_path: Optional[PathLike] = None,
):
    """Poll `condition()` until it returns a truthy value (which is returned).

    Exceptions raised by `condition` count as "not yet". Raises PeerError when
    `timeout` seconds pass, or at once if `proc` exits meanwhile. The last
    exception and the tail of `log_path` go into the error message.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"{what}: process exited with code {proc.returncode}"
                            f"{_log_tail(log_path)}")
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - anything means "not ready yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            raise PeerError(f"{what}: not ready after {timeout:.0f}s"
                            f" (last error: {last_exc!r}){_log_tail(log_path)}")
        time.sleep(interval)


def _log_tail(log_path: Optional[PathLike], n: int = 2000) -> str:
    if not log_path:
        return ""
    try:
        data = Path(log_path).read_bytes()[-n:].decode(errors="replace")
    except OSError:
        return ""
    return f"\n--- {log_path} (tail) ---\n{data}"


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True if a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_listening(port: int) -> bool:
    """True if some socket is in LISTEN state on `port` (Linux /proc/net/tcp*).

    Unlike port_accepts this does not connect, so it is safe for one-shot
    servers such as `iperf3 -s -1`.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def _stop_process(proc: Optional[subprocess.Popen], sig: int = signal.SIGTERM,
                  timeout: float = 15.0) -> None:
    """Send `sig` to our own child, wait, then SIGKILL it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def _venv_bin(name: str) -> Optional[str]:
    """Find a console script next to the running interpreter, else on PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    return shutil.which(name)


# --------------------------------------------------------------------------
# Flight SQL over plain pyarrow.flight: the test suite's helper
# --------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "python"))


def flight_sql_query(uri: str, sql: str):
    """Run `sql` over Flight SQL with plain pyarrow.flight (GetFlightInfo + DoGet)."""
    import pyarrow.flight as fl
    import support

    with fl.connect(uri) as client:
        return support.RawFlightSql(client).execute(sql)


class _Child:
    """A peer running as a child process with a temporary directory; a context manager."""

    proc: Optional[subprocess.Popen] = None
    _tmpdir: Optional[str] = None
    _stop_signal = signal.SIGTERM
    _stop_timeout = 15.0

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        _stop_process(self.proc, self._stop_signal, timeout=self._stop_timeout)
        self.proc = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------
# roapi
# --------------------------------------------------------------------------

class RoapiServer(_Child):
    """roapi (PyPI `roapi`, DataFusion-based) with its Flight SQL endpoint.

    `tables` maps table name -> parquet file or directory of parquet files
    (a directory gets `,format=parquet` added). Extra `,key=value` options may
    be put in the path string, e.g. "/d/lineitem,format=parquet,use_memory_table=false".
    By default roapi loads parquet tables fully into memory (a MemTable with
    8192-row batches) before it opens its ports.

    Attributes once started: port, uri ("grpc://127.0.0.1:PORT"),
    http_port, pg_port (roapi also serves HTTP and the Postgres wire protocol;
    both are bound to free loopback ports so they never clash).
    """

    def __init__(self, tables: Mapping[str, PathLike], *, port: Optional[int] = None,
                 binary: Optional[str] = None, startup_timeout: float = 300.0,
                 log_path: Optional[PathLike] = None, extra_args: Iterable[str] = ()):
        self.tables = dict(tables)
        self.binary = binary or _venv_bin("roapi")
        if not self.binary:
            raise PeerError("roapi binary not found (pip install roapi)")
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self._requested_port = port
        self._log_path = log_path
        self._tmpdir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.port = self.http_port = self.pg_port = None

    @property
    def uri(self) -> str:
        return f"grpc://{HOST}:{self.port}"

    def command(self) -> list[str]:
        args = [self.binary]
        for name, path in self.tables.items():
            spec = os.fspath(path)
            base = spec.split(",", 1)[0]
            if os.path.isdir(base) and "format=" not in spec:
                spec += ",format=parquet"
            args += ["-t", f"{name}={spec}"]
        args += ["--addr-flight-sql", f"{HOST}:{self.port}",
                 "-a", f"{HOST}:{self.http_port}",
                 "-p", f"{HOST}:{self.pg_port}"]
        return args + self.extra_args

    def start(self) -> "RoapiServer":
        ports = _distinct_free_ports(3)
        self.port = self._requested_port or ports[0]
        self.http_port, self.pg_port = ports[1], ports[2]
        if self._log_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="roapi-")
            self._log_path = os.path.join(self._tmpdir, "roapi.log")
        log = open(self._log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        finally:
            log.close()
        try:
            wait_until(lambda: port_accepts(self.port), timeout=self.startup_timeout,
                       what="roapi port", proc=self.proc, log_path=self._log_path)
            wait_until(lambda: flight_sql_query(self.uri, "SELECT 1").num_rows == 1,
                       timeout=30, what="roapi Flight SQL query", proc=self.proc,
                       log_path=self._log_path, interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        owned_log = self._tmpdir is not None and self._log_path is not None and str(self._log_path).startswith(self._tmpdir)
        super().stop()
        if owned_log:
            self._log_path = None


# --------------------------------------------------------------------------
# pyarrow Flight server (runs in its own process)
# --------------------------------------------------------------------------

def _make_flight_server_class():
    import pyarrow as pa
    import pyarrow.flight as fl

    class TableFlightServer(fl.FlightServerBase):
        """Serves in-memory tables: do_get(ticket) streams the table whose
        name is the ticket, or the first table for any other ticket.
        get_flight_info(descriptor) answers with one endpoint whose ticket is
        the descriptor's path[0] or command bytes."""

        def __init__(self, location: str, tables: "dict[str, pa.Table]", **kw):
            super().__init__(location, **kw)
            self._tables = tables
            self._default = next(iter(tables))

        def _table(self, key: bytes) -> "pa.Table":
            return self._tables.get(key.decode(errors="replace"), self._tables[self._default])

        def do_get(self, context, ticket):
            # "name|lz4" or "name|zstd": the same table with IPC buffer compression.
            name, _, codec = ticket.ticket.partition(b"|")
            options = pa.ipc.IpcWriteOptions(compression=codec.decode() or None)
            # RecordBatchStream is served from C++ without holding the GIL.
            return fl.RecordBatchStream(self._table(name), options=options)

        def get_flight_info(self, context, descriptor):
            key = descriptor.path[0] if descriptor.path else (descriptor.command or b"")
            t = self._table(key)
            ep = fl.FlightEndpoint(key, [])
            return fl.FlightInfo(t.schema, descriptor, [ep], t.num_rows, -1)

        def list_flights(self, context, criteria):
            for name, t in self._tables.items():
                d = fl.FlightDescriptor.for_path(name)
                yield fl.FlightInfo(t.schema, d, [fl.FlightEndpoint(name, [])], t.num_rows, -1)

    return TableFlightServer


def load_table_batched(parquet: PathLike, batch_rows: int = 65536):
    """Read parquet (file or directory) fully into memory, re-chunked into
    record batches of `batch_rows` rows.

    string_view columns (tpchgen-cli writes them) become plain strings, which is
    what Contrail sends by default: a slice of a string_view column refers to all
    of its data buffers, and the IPC writer sends all of them with every batch
    (SF 1's `SELECT *` came to over 16 GB on the client)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(os.fspath(parquet))
    plain = pa.schema([f.with_type(pa.string()) if f.type == pa.string_view() else f for f in t.schema])
    t = t.cast(plain).combine_chunks()
    return pa.Table.from_batches(t.to_batches(max_chunksize=batch_rows), schema=t.schema)


def run_pyarrow_server(tables: Mapping[str, PathLike], *, port: int = 0,
                       port_file: Optional[PathLike] = None, batch_rows: int = 65536) -> None:
    """Blocking: load tables, serve on 127.0.0.1:port (0 = any free port),
    then atomically write the bound port into `port_file`. Stops on SIGTERM/SIGINT."""
    cls = _make_flight_server_class()
    loaded = {name: load_table_batched(p, batch_rows) for name, p in tables.items()}
    server = cls(f"grpc://{HOST}:{port}", loaded)
    if port_file:
        tmp = f"{port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(str(server.port))
        os.replace(tmp, port_file)

    def _shutdown(signum, frame):
        # shutdown() from a signal handler would deadlock in serve(); raising does not.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _shutdown)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


class PyArrowFlightServer(_Child):
    """A pyarrow.flight server in a child process, serving parquet data from memory.

    `parquet` is one path (served as table `name`) or a mapping name -> path.
    Clients: pyarrow.flight.connect(s.uri).do_get(Ticket(name.encode())).
    Any unknown ticket gets the first table. Batches are `batch_rows` rows.
    """

    def __init__(self, parquet: Union[PathLike, Mapping[str, PathLike]], *, name: str = "lineitem",
                 port: int = 0, batch_rows: int = 65536, startup_timeout: float = 300.0,
                 python: Optional[str] = None):
        self.tables = dict(parquet) if isinstance(parquet, Mapping) else {name: parquet}
        self.batch_rows = batch_rows
        self.startup_timeout = startup_timeout
        self.python = python or sys.executable
        self._requested_port = port
        self._tmpdir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    @property
    def uri(self) -> str:
        return f"grpc://{HOST}:{self.port}"

    def start(self) -> "PyArrowFlightServer":
        self._tmpdir = tempfile.mkdtemp(prefix="pyarrow-flight-")
        port_file = os.path.join(self._tmpdir, "port")
        log_path = os.path.join(self._tmpdir, "server.log")
        cmd = [self.python, os.path.abspath(__file__), "pyarrow-server",
               "--port", str(self._requested_port), "--port-file", port_file,
               "--batch-rows", str(self.batch_rows)]
        for n, p in self.tables.items():
            cmd += ["--table", f"{n}={os.fspath(p)}"]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        try:
            self.port = int(wait_until(lambda: Path(port_file).read_text().strip(),
                                       timeout=self.startup_timeout, what="pyarrow flight port file",
                                       proc=self.proc, log_path=log_path))
            wait_until(self._probe, timeout=30, what="pyarrow flight list_flights",
                       proc=self.proc, log_path=log_path, interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _probe(self) -> bool:
        import pyarrow.flight as fl
        with fl.connect(self.uri) as c:
            return len(list(c.list_flights())) == len(self.tables)



# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------

def _pg_bindir(version: str = "15") -> Optional[str]:
    preferred = f"/usr/lib/postgresql/{version}/bin"
    if os.path.exists(os.path.join(preferred, "postgres")):
        return preferred
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return os.path.dirname(found[-1]) if found else None


def ensure_postgres_installed(version: str = "15") -> str:
    """Return the PostgreSQL bin dir, apt-installing Debian's `postgresql` if absent."""
    bindir = _pg_bindir(version)
    if bindir:
        return bindir
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "postgresql"], env=env,
                      stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "postgresql"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    bindir = _pg_bindir(version)
    if not bindir:
        raise PeerError("postgresql installed but no /usr/lib/postgresql/*/bin/postgres")
    return bindir


_PG_SETTINGS = {
    # throwaway benchmark instance: durability off, enough memory for scans
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "1GB",
    "work_mem": "64MB",
    "max_wal_size": "4GB",
    "unix_socket_directories": "",
    "listen_addresses": HOST,
}


class PostgresServer(_Child):
    _stop_signal = signal.SIGINT  # postgres "fast shutdown"
    _stop_timeout = 30.0

    """A throwaway PostgreSQL cluster in a temp dir, TCP on 127.0.0.1:port, trust auth.

    When running as root, initdb and postgres run as the `postgres` user.
    `settings` overrides/extends the postgres -c settings above.
    dsn: "postgresql://postgres@127.0.0.1:PORT/postgres" (works for psycopg
    and adbc_driver_postgresql).
    """

    def __init__(self, *, port: Optional[int] = None, settings: Optional[Mapping[str, str]] = None,
                 startup_timeout: float = 120.0, version: str = "15", user: str = "postgres"):
        self.bindir = ensure_postgres_installed(version)
        self.settings = {**_PG_SETTINGS, **(settings or {})}
        self.startup_timeout = startup_timeout
        self.user = user
        self._requested_port = port
        self._tmpdir: Optional[str] = None
        self.proc: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None
        self.startup_seconds: Optional[float] = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
                "env": {**os.environ, "HOME": pw.pw_dir, "USER": self.user}}

    def start(self) -> "PostgresServer":
        t0 = time.monotonic()
        self._tmpdir = tempfile.mkdtemp(prefix="contrail-pg-")
        os.chmod(self._tmpdir, 0o755)
        datadir = os.path.join(self._tmpdir, "data")
        log_path = os.path.join(self._tmpdir, "postgres.log")
        os.mkdir(datadir, 0o700)
        open(log_path, "w").close()
        run_as = self._run_as()
        if run_as:
            os.chown(datadir, run_as["user"], run_as["group"])
            os.chown(log_path, run_as["user"], run_as["group"])
        try:
            subprocess.run([os.path.join(self.bindir, "initdb"), "-D", datadir, "-U", "postgres",
                            "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           cwd=self._tmpdir, **run_as)
            self.port = self._requested_port or free_port()
            cmd = [os.path.join(self.bindir, "postgres"), "-D", datadir, "-p", str(self.port)]
            for k, v in self.settings.items():
                cmd += ["-c", f"{k}={v}"]
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self._tmpdir, **run_as)
            wait_until(self._probe, timeout=self.startup_timeout, what="postgres SELECT 1",
                       proc=self.proc, log_path=log_path)
        except subprocess.CalledProcessError as e:
            self.stop()
            raise PeerError(f"initdb failed: {e.stderr.decode(errors='replace')}") from e
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _probe(self) -> bool:
        import psycopg
        with psycopg.connect(self.dsn, connect_timeout=2) as c:
            return c.execute("SELECT 1").fetchone()[0] == 1

    def connect(self, **kw):
        """A psycopg (v3) connection with autocommit on."""
        import psycopg
        return psycopg.connect(self.dsn, autocommit=True, **kw)

    def load_parquet(self, table: str, parquet: PathLike, **kw) -> int:
        return load_parquet_into_postgres(self.dsn, table, parquet, **kw)



def _pg_type(t) -> str:
    import pyarrow as pa
    import pyarrow.types as T

    if T.is_int8(t) or T.is_int16(t) or T.is_uint8(t):
        return "smallint"
    if T.is_int32(t) or T.is_uint16(t):
        return "integer"
    if T.is_int64(t) or T.is_uint32(t):
        return "bigint"
    if T.is_uint64(t):
        return "numeric(20,0)"
    if T.is_float16(t) or T.is_float32(t):
        return "real"
    if T.is_float64(t):
        return "double precision"
    if T.is_decimal(t):
        return f"numeric({t.precision},{t.scale})"
    if T.is_boolean(t):
        return "boolean"
    if T.is_string(t) or T.is_large_string(t) or t == pa.string_view():
        return "text"
    if T.is_binary(t) or T.is_large_binary(t) or T.is_fixed_size_binary(t) or t == pa.binary_view():
        return "bytea"
    if T.is_date(t):
        return "date"
    if T.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if T.is_time(t):
        return "time"
    raise PeerError(f"no PostgreSQL type for arrow type {t}")


def _csv_friendly(batch):
    """pyarrow's CSV writer does not take view types: cast them to plain ones."""
    import pyarrow as pa

    cols, changed = [], False
    for col in batch.columns:
        if col.type == pa.string_view():
            col, changed = col.cast(pa.string()), True
        elif col.type == pa.binary_view():
            col, changed = col.cast(pa.binary()), True
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names) if changed else batch


def load_parquet_into_postgres(dsn: str, table: str, parquet: PathLike, *, replace: bool = True,
                               unlogged: bool = False, vacuum: bool = True,
                               batch_rows: int = 65536) -> int:
    """Create `table` from the parquet file's schema and stream its rows in with
    COPY ... FROM STDIN (FORMAT csv). Then VACUUM (FREEZE, ANALYZE) so the first
    benchmark scan does not pay for hint bits. Returns the row count."""
    import io

    import psycopg
    import psycopg.sql  # noqa: F401 - makes psycopg.sql available
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(os.fspath(parquet)) if os.path.isfile(parquet) else None
    schema = pf.schema_arrow if pf else pq.read_schema(next(Path(parquet).glob("**/*.parquet")))
    ident = psycopg.sql.Identifier(table)
    cols = psycopg.sql.SQL(", ").join(
        psycopg.sql.SQL("{} {}").format(psycopg.sql.Identifier(f.name),
                                        psycopg.sql.SQL(_pg_type(f.type)
                                                        + ("" if f.nullable else " NOT NULL")))
        for f in schema)
    if pf:
        batches = pf.iter_batches(batch_size=batch_rows)
    else:
        import pyarrow.dataset as ds
        batches = ds.dataset(os.fspath(parquet), format="parquet").to_batches(batch_size=batch_rows)
    rows = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        if replace:
            conn.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        conn.execute(psycopg.sql.SQL("CREATE {}TABLE {} ({})").format(
            psycopg.sql.SQL("UNLOGGED " if unlogged else ""), ident, cols))
        opts = pcsv.WriteOptions(include_header=False)
        with conn.cursor() as cur:
            with cur.copy(psycopg.sql.SQL("COPY {} FROM STDIN (FORMAT csv)").format(ident)) as cp:
                for batch in batches:
                    buf = io.BytesIO()
                    pcsv.write_csv(_csv_friendly(batch), buf, write_options=opts)
                    cp.write(buf.getbuffer())
                    rows += batch.num_rows
        if vacuum:
            conn.execute(psycopg.sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(ident))
    return rows


# --------------------------------------------------------------------------
# iperf3
# --------------------------------------------------------------------------

def iperf3_loopback_gbps(seconds: int = 5, *, streams: int = 1, startup_timeout: float = 30.0,
                         binary: str = "iperf3") -> float:
    """Loopback TCP throughput in GB/s (1e9 bytes/s, as received) measured by
    `iperf3 -s -1` + `iperf3 -c 127.0.0.1 -t seconds -J`."""
    exe = shutil.which(binary)
    if not exe:
        raise PeerError("iperf3 not found (apt-get install -y iperf3)")
    port = free_port()
    server = subprocess.Popen([exe, "-s", "-1", "-B", HOST, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    try:
        # Do not connect to probe: a one-shot server would treat that as its test.
        wait_until(lambda: port_is_listening(port), timeout=startup_timeout,
                   what="iperf3 server", proc=server)
        out = subprocess.run([exe, "-c", HOST, "-p", str(port), "-t", str(seconds),
                              "-P", str(streams), "-J"],
                             capture_output=True, timeout=seconds + 60)
        res = json.loads(out.stdout or b"{}")
        if out.returncode != 0 or "error" in res:
            raise PeerError(f"iperf3 client failed: {res.get('error') or out.stderr.decode()}")
        return res["end"]["sum_received"]["bits_per_second"] / 8e9
    finally:
        _stop_process(server, signal.SIGTERM, timeout=10)


@contextlib.contextmanager
def shaped_loopback(ports: Iterable[int], rate: str = "1gbit"):
    """Traffic sent from `ports` on loopback limited to `rate`, as a link to a
    remote client would be (tc htb; everything else on loopback unlimited).
    Yields whether shaping is in place: it needs root and the kernel's sch_htb,
    and is not attempted when loopback already has a queueing discipline."""
    tc = shutil.which("tc")
    current = subprocess.run([tc, "qdisc", "show", "dev", "lo"], capture_output=True, text=True) if tc else None
    if current is None or current.returncode != 0 or not current.stdout.startswith("qdisc noqueue"):
        yield False
        return
    commands = [
        "qdisc add dev lo root handle 1: htb default 20 r2q 100000",
        f"class add dev lo parent 1: classid 1:10 htb rate {rate} ceil {rate}",
        "class add dev lo parent 1: classid 1:20 htb rate 100gbit",
    ] + [f"filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport {p} 0xffff flowid 1:10" for p in ports]
    try:
        for c in commands:
            if subprocess.run([tc, *c.split()], capture_output=True).returncode != 0:
                yield False
                return
        yield True
    finally:
        subprocess.run([tc, "qdisc", "del", "dev", "lo", "root"], capture_output=True)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------

def _selftest(parquet: str) -> None:
    import pyarrow.flight as fl
    import pyarrow.parquet as pq

    n = pq.read_metadata(parquet).num_rows
    print(f"parquet rows: {n}")

    t0 = time.monotonic()
    with RoapiServer({"lineitem": parquet}) as r:
        print(f"roapi ready in {time.monotonic() - t0:.2f}s at {r.uri}")
        got = flight_sql_query(r.uri, "SELECT count(*) FROM lineitem").column(0)[0].as_py()
        assert got == n, got
        import adbc_driver_flightsql.dbapi as fsql
        with fsql.connect(r.uri, autocommit=True) as c, c.cursor() as cur:
            cur.execute("SELECT count(*) FROM lineitem")
            assert cur.fetchone()[0] == n
            cur.execute("SELECT * FROM lineitem")
            assert cur.fetch_arrow_table().num_rows == n
        print("roapi: pyarrow.flight + adbc OK")

    t0 = time.monotonic()
    with PyArrowFlightServer(parquet) as s:
        print(f"pyarrow flight ready in {time.monotonic() - t0:.2f}s at {s.uri}")
        with fl.connect(s.uri) as c:
            t = c.do_get(fl.Ticket(b"anything")).read_all()
            assert t.num_rows == n
            info = c.get_flight_info(fl.FlightDescriptor.for_path("lineitem"))
            assert c.do_get(info.endpoints[0].ticket).read_all().num_rows == n
        print(f"pyarrow flight: do_get OK ({t.column(0).num_chunks} batches)")

    with PostgresServer() as pg:
        print(f"postgres ready in {pg.startup_seconds:.2f}s at {pg.dsn}")
        t0 = time.monotonic()
        assert pg.load_parquet("lineitem", parquet) == n
        print(f"postgres: loaded {n} rows in {time.monotonic() - t0:.2f}s")
        with pg.connect() as c, c.cursor() as cur:
            size = 0
            with cur.copy("COPY (SELECT * FROM lineitem) TO STDOUT (FORMAT binary)") as cp:
                for chunk in cp:
                    size += len(chunk)
            print(f"postgres: psycopg COPY binary OK ({size} bytes)")
        import adbc_driver_postgresql.dbapi as pgdb
        with pgdb.connect(pg.dsn) as c, c.cursor() as cur:
            cur.execute("SELECT * FROM lineitem")
            t = cur.fetch_arrow_table()
            assert t.num_rows == n
            print(f"postgres: adbc read OK, types {sorted({str(x) for x in t.schema.types})}")

    print(f"iperf3 loopback: {iperf3_loopback_gbps(2):.2f} GB/s")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("pyarrow-server", help="serve parquet data over Arrow Flight")
    s.add_argument("--parquet", help="parquet file or directory (served as --name)")
    s.add_argument("--name", default="lineitem")
    s.add_argument("--table", action="append", default=[], metavar="NAME=PATH")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--port-file")
    s.add_argument("--batch-rows", type=int, default=65536)
    t = sub.add_parser("selftest", help="start every peer against a parquet file")
    t.add_argument("--parquet", required=True)
    sub.add_parser("iperf3", help="print loopback GB/s")
    args = ap.parse_args(argv)

    if args.cmd == "pyarrow-server":
        tables = dict(x.split("=", 1) for x in args.table)
        if args.parquet:
            tables[args.name] = args.parquet
        if not tables:
            ap.error("give --parquet or --table")
        run_pyarrow_server(tables, port=args.port, port_file=args.port_file,
                           batch_rows=args.batch_rows)
    elif args.cmd == "selftest":
        _selftest(args.parquet)
    elif args.cmd == "iperf3":
        print(f"{iperf3_loopback_gbps():.3f}")


if __name__ == "__main__":
    main()
