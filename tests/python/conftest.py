"""Run the real ``contrail`` binary for the end-to-end tests.

``Server`` starts ``contrail serve`` on port 0 with a fresh data directory, waits
for the port file (polling with a deadline), and stops it with SIGTERM (or
SIGKILL for crash tests). Fixtures:

* ``server``       one server per test module (plain, no sample data)
* ``tpch_server``  one server per session with ``--sample tpch``
* ``make_server``  a factory for tests that need their own server(s), e.g. to
                   restart or kill it; everything it started is stopped at teardown
* ``conn`` / ``tpch_conn``   an ADBC DB-API connection (cookie middleware on)
* ``name``         a table name unique to the test
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import time
import uuid

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow.flight as flight
import pytest

import support

HERE = pathlib.Path(__file__).resolve().parent
TPCH_SCALE = 0.01
_LIVE: list["Server"] = []


def contrail_bin() -> pathlib.Path:
    if os.environ.get("CONTRAIL_BIN"):
        return pathlib.Path(os.environ["CONTRAIL_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return pathlib.Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "contrail"
    return pathlib.Path.home() / ".cache" / "contrail-target" / "release" / "contrail"


class Server:
    """One ``contrail serve`` process bound to a data directory."""

    START_TIMEOUT = 120.0
    STOP_TIMEOUT = 30.0

    def __init__(
        self,
        base: pathlib.Path,
        *,
        config: pathlib.Path | None = None,
        sample: str | None = None,
        sample_scale: float | None = None,
        extra_args: tuple[str, ...] = (),
        temporal: str = "off",
        listen: str = "127.0.0.1:0",
        env: dict[str, str] | None = None,
    ) -> None:
        self.base = pathlib.Path(base)
        self.data_dir = self.base / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port_file = self.base / "contrail.port"
        self.config = config
        self.sample = sample
        self.sample_scale = sample_scale
        self.extra_args = tuple(extra_args)
        self.temporal = temporal
        self.listen = listen
        self.env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self.starts = 0
        self.log_path: pathlib.Path | None = None

    # -- lifecycle ---------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [
            str(contrail_bin()),
            "serve",
            "--listen",
            self.listen,
            "--data-dir",
            str(self.data_dir),
            "--port-file",
            str(self.port_file),
            "--temporal",
            self.temporal,
        ]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.sample:
            cmd += ["--sample", self.sample]
        if self.sample_scale is not None:
            cmd += ["--sample-scale", str(self.sample_scale)]
        return cmd + list(self.extra_args)

    def start(self, timeout: float | None = None) -> "Server":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.port_file.unlink(missing_ok=True)
        self.starts += 1
        self.log_path = self.base / f"contrail-{self.starts}.log"
        log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.update(self.env)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        if self not in _LIVE:
            _LIVE.append(self)
        deadline = time.monotonic() + (timeout or self.START_TIMEOUT)
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError(
                    f"contrail exited with {rc} before writing its port file:\n{self.log_tail()}"
                )
            text = self.port_file.read_text() if self.port_file.exists() else ""
            m = re.fullmatch(r"\s*(127\.0\.0\.1:(\d+))\s*", text)
            if m:
                self.address = m.group(1)
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"contrail did not write {self.port_file} in time:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self, timeout: float | None = None) -> int:
        """SIGTERM and wait; returns the exit code. Kills it if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout or self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"contrail did not exit within {timeout or self.STOP_TIMEOUT}s of SIGTERM:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def restart(self) -> "Server":
        rc = self.stop()
        assert rc == 0, f"contrail exited with {rc} on SIGTERM:\n{self.log_tail()}"
        return self.start()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def port(self) -> int:
        assert self.address is not None
        return int(self.address.rsplit(":", 1)[1])

    @property
    def uri(self) -> str:
        return f"grpc://{self.address}"

    def log_tail(self, n: int = 60, width: int = 400) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(l if len(l) <= width else l[:width] + " ..." for l in lines[-n:])

    # -- clients -------------------------------------------------------------
    def connect(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        cookies: bool = True,
        db_kwargs: dict | None = None,
        conn_kwargs: dict | None = None,
        autocommit: bool = True,
    ) -> dbapi.Connection:
        kwargs: dict[str, str] = {}
        if cookies:
            kwargs["adbc.flight.sql.rpc.with_cookie_middleware"] = "true"
        if username is not None:
            kwargs["username"] = username
        if password is not None:
            kwargs["password"] = password
        kwargs.update(db_kwargs or {})
        return dbapi.connect(self.uri, db_kwargs=kwargs, conn_kwargs=conn_kwargs, autocommit=autocommit)

    def flight_client(self, middleware=None) -> flight.FlightClient:
        return flight.connect(f"grpc+tcp://{self.address}", middleware=middleware or [])

    def raw(self, headers=None, middleware=None) -> support.RawFlightSql:
        return support.RawFlightSql(self.flight_client(middleware), headers=headers)


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def contrail_binary() -> pathlib.Path:
    path = contrail_bin()
    if not path.is_file():
        pytest.fail(
            f"contrail binary not found at {path}; build it with `cargo build --release` "
            "or point CONTRAIL_BIN at it",
            pytrace=False,
        )
    return path


@pytest.fixture
def make_server(contrail_binary, tmp_path_factory):
    """Per-test factory: servers it makes are stopped when the test ends."""
    started: list[Server] = []

    def make(start: bool = True, **kwargs) -> Server:
        srv = Server(tmp_path_factory.mktemp("contrail"), **kwargs)
        started.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in started:
        _shutdown(srv)


def _shutdown(srv: Server) -> None:
    try:
        srv.stop()
    except AssertionError:
        pass
    finally:
        srv.kill()
        if srv in _LIVE:
            _LIVE.remove(srv)


@pytest.fixture(scope="module")
def server(contrail_binary, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("contrail")).start()
    yield srv
    _shutdown(srv)


@pytest.fixture(scope="session")
def tpch_server(contrail_binary, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("contrail-tpch"), sample="tpch", sample_scale=TPCH_SCALE)
    srv.start(timeout=300)
    yield srv
    _shutdown(srv)


@pytest.fixture
def conn(server):
    c = server.connect()
    yield c
    c.close()


@pytest.fixture
def tpch_conn(tpch_server):
    c = tpch_server.connect()
    yield c
    c.close()


@pytest.fixture
def name(request) -> str:
    """A table name unique to this test (lower case, SQL-safe)."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    return f"{base}_{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------
# show the server's log when a test fails


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LIVE:
        for srv in _LIVE:
            report.sections.append((f"contrail log {srv.log_path}", srv.log_tail(15)))
