"""Basic-auth handshake with bearer tokens, and per-session options."""

from __future__ import annotations

import json
import subprocess

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.flight as flight
import pytest

import support as s
from conftest import Server, _shutdown, contrail_bin
from support import Status, adbc_status, execute_update, query, scalar

USERS = {"alice": "s3cret-Alice", "bob": "hunter2 with spaces"}


def hash_password(password: str) -> str:
    out = subprocess.run(
        [str(contrail_bin()), "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = [l.strip() for l in out.stdout.splitlines() if l.strip()]
    assert lines, f"hash-password printed nothing (stderr: {out.stderr})"
    return lines[-1]


@pytest.fixture(scope="module")
def auth_server(contrail_binary, tmp_path_factory):
    base = tmp_path_factory.mktemp("contrail-auth")
    config = base / "contrail.toml"
    entries = [
        f"[[auth.users]]\nname = \"{user}\"\npassword_hash = '{hash_password(pw)}'\n" for user, pw in USERS.items()
    ]
    config.write_text("\n".join(entries))
    srv = Server(base, config=config).start()
    yield srv
    _shutdown(srv)


def bearer(srv: Server, user: str, password: str) -> tuple[bytes, bytes]:
    return srv.flight_client().authenticate_basic_token(user, password)


# --------------------------------------------------------------------------
# auth


def test_hash_password_is_argon2_phc(contrail_binary):
    h1, h2 = hash_password("pw"), hash_password("pw")
    assert h1.startswith("$argon2"), h1
    assert h1 != h2, "hashes must be salted"


@pytest.mark.parametrize("user", sorted(USERS))
def test_adbc_valid_user(auth_server, user):
    # ADBC (Go) sends "Basic <base64 without padding>"; any length of user:password must work
    with auth_server.connect(username=user, password=USERS[user]) as c:
        assert scalar(c, "SELECT 1 + 1") == 2
        execute_update(c, f"CREATE TABLE IF NOT EXISTS auth_t_{user} (a INT)")


@pytest.mark.parametrize(
    "user, password",
    [("alice", "wrong"), ("alice", ""), ("nobody", "s3cret-Alice"), ("bob", USERS["alice"])],
)
def test_adbc_bad_credentials_unauthenticated(auth_server, user, password):
    with pytest.raises(dbapi.Error) as exc:
        with auth_server.connect(username=user, password=password) as c:
            query(c, "SELECT 1")
    assert adbc_status(exc.value) == Status.UNAUTHENTICATED, repr(exc.value)


def test_adbc_without_credentials_unauthenticated(auth_server):
    with pytest.raises(dbapi.Error) as exc:
        with auth_server.connect() as c:
            query(c, "SELECT 1")
    assert adbc_status(exc.value) == Status.UNAUTHENTICATED, repr(exc.value)


def test_handshake_returns_bearer_token(auth_server):
    key, value = bearer(auth_server, "alice", USERS["alice"])
    assert key.lower() == b"authorization"
    assert value.startswith(b"Bearer ") and len(value) > len(b"Bearer ") + 8
    raw = auth_server.raw(headers=[(key, value)])
    assert raw.execute("SELECT 5 AS five").column(0).to_pylist() == [5]
    # the token works from a brand-new client too (ADBC with an authorization header)
    with auth_server.connect(db_kwargs={"adbc.flight.sql.authorization_header": value.decode()}) as c:
        assert scalar(c, "SELECT 6") == 6


def test_raw_calls_need_a_valid_token(auth_server):
    with pytest.raises(flight.FlightUnauthenticatedError):
        auth_server.flight_client().authenticate_basic_token("alice", "wrong")
    unauth = auth_server.raw()
    with pytest.raises(flight.FlightUnauthenticatedError):
        unauth.execute("SELECT 1")
    with pytest.raises(flight.FlightUnauthenticatedError):
        unauth.fetch(s.cmd_get_catalogs())
    with pytest.raises(flight.FlightUnauthenticatedError):
        unauth.prepare("SELECT 1")
    with pytest.raises(flight.FlightUnauthenticatedError):
        unauth.execute_update("CREATE TABLE should_not_exist (a INT)")
    forged = auth_server.raw(headers=[(b"authorization", b"Bearer not-a-real-token")])
    with pytest.raises(flight.FlightUnauthenticatedError):
        forged.execute("SELECT 1")


def test_ticket_is_useless_without_token(auth_server):
    key, value = bearer(auth_server, "alice", USERS["alice"])
    authed = auth_server.raw(headers=[(key, value)])
    info = authed.flight_info(s.cmd_statement_query("SELECT 1 AS x"))
    with pytest.raises(flight.FlightUnauthenticatedError):
        s.read_stream(auth_server.flight_client().do_get(info.endpoints[0].ticket))
    assert authed.read_info(info).column("x").to_pylist() == [1]


def test_session_by_bearer_token(auth_server):
    """With auth on, the bearer token identifies the session (no cookies)."""
    key, value = bearer(auth_server, "alice", USERS["alice"])
    alice = auth_server.raw(headers=[(key, value)])
    alice.execute_update("CREATE SCHEMA IF NOT EXISTS alice_s")
    alice.execute_update("CREATE TABLE IF NOT EXISTS alice_s.mine (a INT)")
    assert alice.set_session_options({"schema": "alice_s"}) == {}
    assert alice.get_session_options().get("schema") == "alice_s"
    assert alice.execute("SELECT count(*) AS c FROM mine").column(0).to_pylist() == [0]
    bob = auth_server.raw(headers=[bearer(auth_server, "bob", USERS["bob"])])
    assert bob.get_session_options().get("schema") != "alice_s"


def test_tls(make_server, tmp_path):
    """--tls-cert/--tls-key: clients connect over grpc+tls with the server's CA."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    srv = make_server(extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    pem = cert.read_text()
    with dbapi.connect(
        f"grpc+tls://{srv.address}",
        db_kwargs={"adbc.flight.sql.client_option.tls_root_certs": pem},
        autocommit=True,
    ) as c:
        assert scalar(c, "SELECT 'over tls' AS s") == "over tls"
    tls_client = flight.connect(f"grpc+tls://{srv.address}", tls_root_certs=pem.encode())
    assert s.RawFlightSql(tls_client).execute("SELECT 1 AS one").column(0).to_pylist() == [1]
    # a plaintext client cannot talk to the TLS port
    with pytest.raises(Exception):
        s.RawFlightSql(srv.flight_client(), timeout=10).execute("SELECT 1")


# --------------------------------------------------------------------------
# sessions (no auth)


@pytest.fixture(scope="module")
def session_schema(server):
    with server.connect() as c:
        execute_update(c, "CREATE SCHEMA sess_s")
        execute_update(c, "CREATE TABLE sess_s.only_here (id INT, s VARCHAR)")
        execute_update(c, "INSERT INTO sess_s.only_here VALUES (1, 'x'), (2, 'y')")
    return "sess_s"


def show(conn, key: str) -> str:
    rows = query(conn, f"SHOW {key}").to_pylist()
    assert len(rows) == 1, rows
    return rows[0]["value"]


def test_sql_set_is_per_session(server):
    with server.connect() as a, server.connect() as b:
        default = show(a, "datafusion.execution.batch_size")
        new = str(int(default) // 2 + 7)
        with a.cursor() as cur:
            cur.execute(f"SET datafusion.execution.batch_size = {new}")
        assert show(a, "datafusion.execution.batch_size") == new
        assert show(b, "datafusion.execution.batch_size") == default


def test_sql_set_schema(server, session_schema):
    with server.connect() as c:
        with pytest.raises(dbapi.Error):
            query(c, "SELECT * FROM only_here")
        with c.cursor() as cur:
            cur.execute(f"SET schema = '{session_schema}'")
        assert scalar(c, "SELECT count(*) FROM only_here") == 2
        # a prepared statement in this session resolves the same way
        with c.cursor() as cur:
            cur.execute("SELECT s FROM only_here WHERE id = ?", (2,))
            assert cur.fetchall() == [("y",)]


def test_sql_set_unknown_key_is_invalid(server):
    with server.connect() as c:
        with pytest.raises(dbapi.Error) as exc:
            execute_update(c, "SET no_such_setting = 1")
        assert adbc_status(exc.value) == Status.INVALID_ARGUMENT
        with pytest.raises(dbapi.Error) as exc:
            execute_update(c, "SET contrail.view_types = maybe")
        assert adbc_status(exc.value) == Status.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "key, good, bad, choices",
    [
        ("contrail.result_compression", "lz4", "snappy", "'none', 'lz4' or 'zstd'"),
        ("contrail.priority", "interactive", "urgent", "'normal' or 'interactive'"),
        ("contrail.execution_mode", "inline", "distributed", "'auto', 'inline' or 'workflow'"),
    ],
)
def test_bad_value_of_a_contrail_setting_is_refused_and_changes_nothing(server, key, good, bad, choices):
    with server.connect() as c:
        execute_update(c, f"SET {key} = '{good}'")
        with pytest.raises(dbapi.Error) as exc:
            execute_update(c, f"SET {key} = '{bad}'")
        assert adbc_status(exc.value) == Status.INVALID_ARGUMENT
        assert choices in str(exc.value), "the error names the choices"
        assert show(c, key) == good
        assert scalar(c, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'tables'") == 1, \
            "the session goes on"
    # The same through Flight SQL session options.
    raw = server.raw(middleware=[s.CookieMiddlewareFactory()])
    raw.set_session_options({key: good})
    errors = raw.set_session_options({key: bad})
    assert key in errors, errors
    assert raw.get_session_options()[key] == good


# Expressions DataFusion evaluates as Utf8View / BinaryView.
VIEW_SQL = "SELECT arrow_cast('abc', 'Utf8View') AS s, arrow_cast(CAST('b' AS BYTEA), 'BinaryView') AS bin"


def test_sql_set_via_execute_update_sticks(server):
    """ADBC users run SET with execute_update (Flight SQL CommandStatementUpdate),
    often as the first statement of a connection."""
    with server.connect() as c:
        default = show(c, "datafusion.execution.batch_size")
    with server.connect() as c:
        new = str(int(default) + 11)
        execute_update(c, f"SET datafusion.execution.batch_size = {new}")
        assert show(c, "datafusion.execution.batch_size") == new


def test_view_types_option(server):
    with server.connect() as a, server.connect() as b:
        with a.cursor() as cur:
            cur.execute("SET contrail.view_types = true")
        ta, tb = query(a, VIEW_SQL), query(b, VIEW_SQL)
        assert ta.schema.field("s").type == pa.string_view()
        assert ta.schema.field("bin").type == pa.binary_view()
        assert tb.schema.field("s").type == pa.string()
        assert tb.schema.field("bin").type == pa.binary()
        assert ta.to_pylist() == tb.to_pylist() == [{"s": "abc", "bin": b"b"}]
        with a.cursor() as cur:
            cur.execute("SET contrail.view_types = false")
        assert query(a, VIEW_SQL).schema.field("s").type == pa.string()


def test_adbc_session_options(server, session_schema):
    with server.connect() as c:
        adbc = c.adbc_connection
        adbc.set_options(**{"adbc.flight.sql.session.option.schema": session_schema})
        assert scalar(c, "SELECT count(*) FROM only_here") == 2
        adbc.set_options(**{"adbc.flight.sql.session.optionbool.contrail.view_types": "true"})
        assert query(c, VIEW_SQL).schema.field("s").type == pa.string_view()
        assert query(c, "SELECT s FROM only_here").schema.field("s").type == pa.string_view()
        options = json.loads(adbc.get_option("adbc.flight.sql.session.options"))
        assert options.get("schema") == session_schema, options
        assert str(options.get("contrail.view_types")).lower() == "true", options
        adbc.set_options(**{"adbc.flight.sql.session.optionerase.contrail.view_types": ""})
        assert query(c, VIEW_SQL).schema.field("s").type == pa.string()


def test_adbc_current_catalog_and_schema(server, session_schema):
    with server.connect() as c:
        assert c.adbc_current_catalog == "contrail"
        assert c.adbc_current_db_schema == "public"
        c.adbc_current_db_schema = session_schema
        assert c.adbc_current_db_schema == session_schema
        assert scalar(c, "SELECT count(*) FROM only_here") == 2


def test_raw_session_round_trip(server, session_schema):
    jar = s.CookieMiddlewareFactory()
    raw = server.raw(middleware=[jar])
    errors = raw.set_session_options(
        {"schema": session_schema, "contrail.view_types": True, "datafusion.execution.batch_size": 1000}
    )
    assert errors == {}, errors
    assert "arrow_flight_session_id" in jar.cookies
    got = raw.get_session_options()
    assert got.get("schema") == session_schema, got
    assert str(got.get("contrail.view_types")).lower() == "true", got
    assert str(got.get("datafusion.execution.batch_size")) == "1000", got
    table = raw.execute("SELECT s FROM only_here ORDER BY id")
    assert table.column("s").to_pylist() == ["x", "y"]
    assert table.schema.field("s").type == pa.string_view()

    # another client (no cookie) is a different session
    assert server.raw().get_session_options().get("schema") != session_schema

    errors = raw.set_session_options({"no_such_option": "1", "contrail.view_types": "maybe"})
    assert errors.get("no_such_option") == "INVALID_NAME", errors
    assert errors.get("contrail.view_types") == "INVALID_VALUE", errors
    # the failed set changed nothing
    assert str(raw.get_session_options().get("contrail.view_types")).lower() == "true"

    assert raw.close_session() == "CLOSED"
    # The closed session's settings are gone: the old cookie either starts a
    # fresh session or is refused.
    try:
        after = raw.get_session_options()
    except flight.FlightError:
        after = {}
    except pa.ArrowException:
        after = {}
    assert after.get("schema") != session_schema, after
    with pytest.raises(Exception):
        raw.execute("SELECT s FROM only_here")


def test_a_prepared_statement_runs_with_its_sessions_settings_or_those_it_was_prepared_with(server):
    """A handle runs under its session's current settings (every way of running
    it), and under the settings it was prepared with when its session is gone
    (evicted, a restart, or a client that sends the handle without the cookie)."""
    utc = 1577836800  # 2020-01-01T00:00:00 in UTC
    five_east = utc - 5 * 3600
    cookies = s.CookieMiddlewareFactory()
    session = server.raw(middleware=[cookies])
    session.execute_update("SET datafusion.execution.time_zone = '+05:00'")
    handle, _, _ = session.prepare("SELECT to_unixtime('2020-01-01T00:00:00') AS t")
    t = lambda table: table.column("t").to_pylist()  # noqa: E731

    assert t(session.execute_prepared(handle)) == [five_east]
    assert t(server.raw().execute_prepared(handle)) == [five_east], "no session: the prepare's settings"

    session.execute_update("SET datafusion.execution.time_zone = '+00:00'")
    assert t(session.execute_prepared(handle)) == [utc]
    direct = session.client.do_get(flight.Ticket(s.cmd_prepared_query(handle)), session.options)
    assert t(s.read_stream(direct)) == [utc], "a DoGet of the handle itself, too"
    assert session.schema(s.cmd_prepared_query(handle)).names == ["t"]
    session.close_prepared(handle)
