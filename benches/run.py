"""Contrail against the servers and engines users would pick instead.

Every benchmark runs its cases interleaved (A B C, B C A, ... for ``--rounds``
rounds), reports medians, and states each result as a ratio to Contrail's, so
the drift of a shared 2-core machine cancels out. Writes
``benches/results/latest.md`` and one PNG chart per benchmark.

    make bench                      # SF 1, 5 rounds (about 15 minutes on 2 cores); make bench SF=0.1 for a quick look
    benches/.venv/bin/python benches/run.py --sf 0.1 --rounds 3 --only scan,roundtrip
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "python"))
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
import support  # noqa: E402  (raw Flight SQL over pyarrow.flight)

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
INT_COLUMNS = ["l_orderkey", "l_partkey", "l_suppkey", "l_linenumber"]
SCAN_QUERIES = {
    "select *": "SELECT * FROM {table}",
    "4 int columns": f"SELECT {', '.join(INT_COLUMNS)} FROM {{table}}",
}


# --------------------------------------------------------------------------
# data and servers


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR") or Path.home() / ".cache" / "contrail-target")


def contrail_bin() -> Path:
    return Path(os.environ.get("CONTRAIL_BIN") or target_dir() / "release" / "contrail")


def rust_client_bin() -> Path:
    """`server/examples/flight_client.rs`, built by `make build` beside the server."""
    return target_dir() / "release" / "examples" / "flight_client"


def rust_client(*args: str) -> dict:
    """Run the Rust Flight SQL client (`flight_client <args>`); its JSON output."""
    done = subprocess.run([str(rust_client_bin()), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"flight_client {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout)


def tpch_parquet(sf: float) -> Path:
    """TPC-H at scale `sf` as one Parquet file per table (tpchgen-cli; generated once)."""
    out = HERE / "data" / f"tpch-sf{sf:g}"
    if all((out / f"{t}.parquet").exists() for t in TABLES):
        return out
    out.mkdir(parents=True, exist_ok=True)
    cli = Path(sys.executable).parent / "tpchgen-cli"
    print(f"generating TPC-H SF {sf:g} into {out}", flush=True)
    subprocess.run([str(cli), "parquet", "-s", f"{sf:g}", f"--output-dir={out}"], check=True)
    return out


SERVER_PIDS: dict[str, int] = {}
"""The process of each running `contrail()` server, by URI (for its CPU time)."""


@contextlib.contextmanager
def contrail(data: Path, *args: str, log_level: str = "warn", log_path: Path | None = None) -> Iterator[str]:
    """`contrail serve` on a free loopback port, the TPC-H Parquet files as tables. Yields its grpc:// URI.
    Its log goes to `log_path` (kept) if given, else into the temporary directory."""
    with tempfile.TemporaryDirectory(prefix="contrail-bench-") as tmp:
        port_file = Path(tmp) / "port"
        log_path = log_path or Path(tmp) / "contrail.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [str(contrail_bin()), "serve", "--listen", "127.0.0.1:0", "--data-dir", f"{tmp}/data",
             "--port-file", str(port_file), "--log", log_level,
             *(() if "--temporal" in args else ("--temporal", "off")), *args],
            stdout=log, stderr=subprocess.STDOUT,
        )
        uri = None
        try:
            address = peers.wait_until(lambda: _port(port_file, proc), timeout=120, what="contrail to start",
                                       proc=proc, log_path=log_path)
            uri = f"grpc://{address}"
            with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
                for t in TABLES:
                    cur.execute(f"CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{data / (t + '.parquet')}'")
            SERVER_PIDS[uri] = proc.pid
            yield uri
        finally:
            SERVER_PIDS.pop(uri, None)
            proc.terminate()
            proc.wait(30)
            log.close()


def _port(port_file: Path, proc: subprocess.Popen) -> str | None:
    text = port_file.read_text().strip() if port_file.exists() else ""
    return text if re.fullmatch(r"127\.0\.0\.1:\d+", text) else None


# --------------------------------------------------------------------------
# measuring


def interleave(cases: dict[str, Callable[[], dict]], rounds: int) -> dict[str, list[dict]]:
    """Run every case once per round, rotating the order each round."""
    names = list(cases)
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            out[name].append(cases[name]())
    return out


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def timed(fn: Callable[[], pa.Table | int]) -> dict:
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    if isinstance(result, pa.Table):
        out = {"s": seconds, "rows": result.num_rows, "bytes": result.nbytes}
    else:
        out = {"s": seconds, "rows": result, "bytes": 0}
    # Give the result's memory back before the next case (pyarrow's pool keeps it otherwise).
    del result
    pa.default_memory_pool().release_unused()
    return out


def isolated(fn: Callable[..., pa.Table | int], *args) -> dict:
    """`timed(fn(*args))` in a fresh client process, with that process's peak RSS.

    Large results read back to back in one process fragment its heap until the
    harness outgrows the machine (SF 1's scan went past 20 GiB); a process per
    case starts clean and shows what the client needed."""
    # forkserver, not fork: the harness has threads (pyarrow, servers). An executor,
    # not a Pool: a case that dies (out of memory) fails the run instead of hanging it.
    ctx = mp.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_timed_child, fn, args).result()


def _timed_child(fn: Callable[..., pa.Table | int], args: tuple) -> dict:
    import resource

    out = timed(lambda: fn(*args))
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return out


def raw_query(uri: str, sql: str) -> pa.Table:
    return support.RawFlightSql(flight.connect(uri)).execute(sql)


def adbc_query(uri: str, sql: str) -> pa.Table:
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def pyarrow_get(uri: str, name: str) -> pa.Table:
    return flight.connect(uri).do_get(flight.Ticket(name.encode())).read_all()


def plain_strings(schema: pa.Schema) -> pa.Schema:
    """`schema` with string_view as string (PostgreSQL's ADBC driver does not take views)."""
    return pa.schema([pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type) for f in schema])


def pg_load(pg: "peers.PostgresServer", table: str, parquet: Path) -> None:
    """Stream a Parquet file into PostgreSQL with binary COPY (adbc-driver-postgresql), batch by batch."""
    import adbc_driver_postgresql.dbapi as pgdbapi

    pf = pq.ParquetFile(parquet)
    target = plain_strings(pf.schema_arrow)
    batches = (b.cast(target) for b in pf.iter_batches(batch_size=65_536))
    reader = pa.RecordBatchReader.from_batches(target, batches)
    with pgdbapi.connect(pg.dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.adbc_ingest(table, reader, mode="create")
        cur.execute(f"VACUUM (FREEZE, ANALYZE) {table}")


def pg_copy_out(dsn: str, sql: str, rows: int) -> int:
    """Read a query's result with COPY ... TO STDOUT (FORMAT binary); returns its row count."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)") as copy:
            for _ in copy:
                pass
    return rows


class Report:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sections: list[str] = []
        self.charts: list[tuple[str, dict[str, float], str]] = []

    def table(self, title: str, header: list[str], rows: list[list], note: str = "") -> None:
        lines = [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
        self.sections.append("\n".join(lines))
        print("\n".join(lines) + "\n", flush=True)

    def chart(self, name: str, values: dict[str, float], unit: str) -> None:
        self.charts.append((name, values, unit))

    def write(self) -> Path:
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        head = [
            "# Contrail benchmarks",
            "",
            f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
            f"TPC-H SF {self.args.sf:g}, {self.args.rounds} interleaved rounds, medians. "
            "Ratios are peer / Contrail for times (>1: Contrail faster) and Contrail / peer for rates.",
            "",
        ]
        for name, values, unit in self.charts:
            png = out / f"{name}.png"
            _bar_chart(png, name, values, unit)
            head.append(f"![{name}]({png.name})")
        path = out / self.args.out
        path.write_text("\n".join(head) + "\n\n" + "\n\n".join(self.sections) + "\n")
        return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _bar_chart(path: Path, title: str, values: dict[str, float], unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(values)))
    names = list(values)
    colors = ["#1f77b4" if n.startswith("contrail") else "#999999" for n in names]
    ax.barh(names, [values[n] for n in names], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------
# 1. scans


def bench_scan(args, data: Path, report: Report) -> None:
    lineitem_path = data / "lineitem.parquet"
    rows_total = pq.ParquetFile(lineitem_path).metadata.num_rows
    ints_path = data / "lineitem_4ints.parquet"
    if not ints_path.exists():
        pq.write_table(pq.read_table(lineitem_path, columns=INT_COLUMNS), ints_path)
    with contrail(data) as c, peers.RoapiServer({"lineitem": lineitem_path}) as r, \
            peers.PyArrowFlightServer({"select *": lineitem_path, "4 int columns": ints_path}) as p, \
            peers.PostgresServer() as pg:
        pg_load(pg, "lineitem", lineitem_path)
        # The same file again as a table held in memory (CACHE TABLE), like roapi's
        # and the pyarrow server's: Contrail's own Flight path without Parquet decoding.
        with flightsql.connect(c, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE EXTERNAL TABLE lineitem_cached STORED AS PARQUET LOCATION '{lineitem_path}'")
            cur.execute("CACHE TABLE lineitem_cached")
        iperf = statistics.median(peers.iperf3_loopback_gbps(seconds=3) for _ in range(3))
        for label, template in SCAN_QUERIES.items():
            sql, cached_sql = template.format(table="lineitem"), template.format(table="lineitem_cached")
            cases = {
                "contrail pyarrow": lambda: isolated(raw_query, c, sql),
                "contrail adbc": lambda: isolated(adbc_query, c, sql),
                "contrail cached (memory) pyarrow": lambda: isolated(raw_query, c, cached_sql),
                "contrail cached (memory) adbc": lambda: isolated(adbc_query, c, cached_sql),
                "roapi (memory) pyarrow": lambda: isolated(raw_query, r.uri, sql),
                "roapi (memory) adbc": lambda: isolated(adbc_query, r.uri, sql),
                "pyarrow server (memory)": lambda: isolated(pyarrow_get, p.uri, label),
                # The Rust client (arrow-flight) streams: each batch decoded, then dropped.
                "contrail rust": lambda: rust_client("scan", c, sql),
                "contrail cached (memory) rust": lambda: rust_client("scan", c, cached_sql),
                "roapi (memory) rust": lambda: rust_client("scan", r.uri, sql),
                "pyarrow server (memory) rust": lambda: rust_client("get", p.uri, label),
                "postgres psycopg COPY binary": lambda: isolated(pg_copy_out, pg.dsn, sql, rows_total),
            }
            results = interleave(cases, args.rounds)
            base = results["contrail pyarrow"]
            cached = results["contrail cached (memory) pyarrow"]
            nbytes = base[0]["bytes"]
            rows = []
            rates = {}
            for name, rs in results.items():
                s = median(rs, "s")
                gbps = nbytes / s / 1e9
                rates[name] = gbps
                rows.append([name, s, gbps, rs[0]["rows"] / s / 1e6, s / median(base, "s"),
                             s / median(cached, "s"), f"{gbps / iperf:.0%}", max(x["peak_rss"] for x in rs) / 2**30])
            report.table(
                f"1. Scan: {label} ({rows_total:,} rows)",
                ["case", "median s", "GB/s (Arrow bytes)", "Mrows/s", "time / contrail pyarrow",
                 "time / contrail cached pyarrow", "% of iperf3", "client peak RSS GiB"],
                rows,
                f"Query `{sql}`; Arrow result {nbytes / 1e9:.2f} GB. iperf3 loopback: {iperf:.2f} GB/s. "
                "contrail: the Parquet file as an external table, decoded on every read; contrail cached: "
                "the same file as a second external table after `CACHE TABLE` (rows held in memory, as roapi "
                "and the pyarrow server hold them). pyarrow and adbc hold the whole result, as `read_all` and "
                "`fetch_arrow_table` do; rust (arrow-flight, `server/examples/flight_client.rs`) decodes each "
                "batch and drops it, as a streaming consumer does: what the server delivers when the client "
                "is not the bottleneck. Each read runs in a fresh client process, with its peak RSS.",
            )
            report.chart(f"scan-{label.replace(' ', '-').replace('*', 'star')}", rates, "GB/s")


# --------------------------------------------------------------------------
# 1b. results compressed for a slow link

LINK_RATE = "1gbit"
CODECS = ["none", "lz4", "zstd"]


def compressed_query(uri: str, codec: str, sql: str) -> pa.Table:
    """`sql` read by pyarrow's client after `SET contrail.result_compression`, in one session."""
    # The session the server mints (its Set-Cookie), kept by the cookie jar.
    raw = support.RawFlightSql(flight.connect(uri, middleware=[support.CookieMiddlewareFactory()]))
    raw.execute(f"SET contrail.result_compression = '{codec}'")
    return raw.execute(sql)


def compressed_adbc_query(uri: str, codec: str, sql: str) -> pa.Table:
    # The cookie middleware keeps one session across statements, so the SET holds.
    cookies = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
    with flightsql.connect(uri, db_kwargs=cookies, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(f"SET contrail.result_compression = '{codec}'")
        cur.execute(sql)
        return cur.fetch_arrow_table()


def bench_link(args, data: Path, report: Report) -> None:
    lineitem_path = data / "lineitem.parquet"
    sql = "SELECT * FROM lineitem_cached"
    with contrail(data) as c, peers.PyArrowFlightServer({"select *": lineitem_path}) as p:
        with flightsql.connect(c, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE EXTERNAL TABLE lineitem_cached STORED AS PARQUET LOCATION '{lineitem_path}'")
            cur.execute("CACHE TABLE lineitem_cached")
        cases = {}
        for codec in CODECS:
            cases[f"contrail cached, {codec}"] = lambda codec=codec: isolated(compressed_query, c, codec, sql)
        cases["contrail cached, zstd, adbc"] = lambda: isolated(compressed_adbc_query, c, "zstd", sql)
        for codec in CODECS:
            ticket = "select *" if codec == "none" else f"select *|{codec}"
            cases[f"pyarrow server (memory), {codec}"] = lambda t=ticket: isolated(pyarrow_get, p.uri, t)
        loopback = interleave(cases, args.rounds)
        with peers.shaped_loopback([int(c.rsplit(":", 1)[1]), p.port], LINK_RATE) as shaped:
            link = interleave(cases, args.rounds) if shaped else None
    nbytes = loopback["contrail cached, none"][0]["bytes"]
    base = median(link["contrail cached, none"], "s") if link else None
    rows = []
    for name in cases:
        row = [name, median(loopback[name], "s")]
        if link:
            s = median(link[name], "s")
            row += [s, nbytes / s / 1e9, base / s]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
    note = (f"`{sql}` (the SF 1 lineitem table after `CACHE TABLE`, {nbytes / 1e9:.2f} GB of Arrow) read by pyarrow's "
            "client (and ADBC) after `SET contrail.result_compression`; the pyarrow server writes the same table "
            "with `IpcWriteOptions(compression=...)`. Each read in a fresh client process. ")
    if link:
        note += (f"The link: traffic from both servers' ports limited to {LINK_RATE}/s with tc htb on loopback "
                 "(a client in another building); client and servers still share the 2 cores.")
    else:
        note += "The link case did not run: shaping loopback needs root and tc's htb (`peers.shaped_loopback`)."
    report.table(
        f"1b. `SELECT *` compressed for a slow link ({LINK_RATE}/s)",
        ["case", "loopback median s", f"{LINK_RATE}/s median s", "GB/s of Arrow data", "speed-up vs uncompressed"],
        rows, note,
    )
    if link:
        report.chart("link-select-star", {n: nbytes / median(rs, "s") / 1e9 for n, rs in link.items()}, "GB/s")


# --------------------------------------------------------------------------
# 2. round trips


def bench_roundtrip(args, data: Path, report: Report) -> None:
    n = args.roundtrips
    # The floor: a pyarrow Flight server answering the same two RPCs with a
    # 1-row table from memory (no SQL); what gRPC and the client cost here.
    one_row = data / "one_row.parquet"
    if not one_row.exists():
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"Int64(1)": pa.array([1], pa.int64())}), one_row)
    with contrail(data) as c, peers.RoapiServer({"nation": data / "nation.parquet"}) as r, \
            peers.PyArrowFlightServer(one_row, name="one") as floor:
        def raw_loop(uri):
            client = support.RawFlightSql(flight.connect(uri))
            def run():
                lat = []
                for _ in range(n // args.rounds):
                    t = time.perf_counter()
                    client.execute("SELECT 1")
                    lat.append(time.perf_counter() - t)
                return {"lat": lat}
            return run

        def adbc_loop(uri):
            conn = flightsql.connect(uri, autocommit=True)
            def run():
                lat = []
                with conn.cursor() as cur:
                    for _ in range(n // args.rounds):
                        t = time.perf_counter()
                        cur.execute("SELECT 1")
                        cur.fetchall()
                        lat.append(time.perf_counter() - t)
                return {"lat": lat}
            return run

        def rust_loop(uri):
            return lambda: rust_client("roundtrip", uri, "SELECT 1", str(n // args.rounds))

        cases = {"contrail raw": raw_loop(c), "contrail adbc": adbc_loop(c), "contrail rust": rust_loop(c),
                 "roapi raw": raw_loop(r.uri), "roapi adbc": adbc_loop(r.uri), "roapi rust": rust_loop(r.uri),
                 "pyarrow server (memory, no SQL) raw": raw_loop(floor.uri),
                 "pyarrow server (memory, no SQL) rust": rust_loop(floor.uri)}
        results = interleave(cases, args.rounds)
        rows, p50s = [], {}
        base = None
        for name, rs in results.items():
            lat = sorted(x for run in rs for x in run["lat"])
            p50, p99 = lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3
            p50s[name] = p50
            rows.append([name, len(lat), p50, p99])
        for row in rows:
            mate = "contrail " + row[0].rsplit(" ", 1)[1]
            row.append(row[2] / p50s[mate])
        report.table(f"2. `SELECT 1` round trip ({n} per case)", ["case", "calls", "p50 ms", "p99 ms", "p50 / contrail"],
                     rows, "raw: GetFlightInfo + DoGet with pyarrow.flight; adbc: cursor.execute + fetchall; rust: "
                     "GetFlightInfo + DoGet with arrow-flight (`server/examples/flight_client.rs`, one thread). "
                     "The pyarrow server answers both RPCs from memory without SQL: the floor of gRPC "
                     "and the Python client on this machine.")
        report.chart("roundtrip-p50", p50s, "p50 ms")


# --------------------------------------------------------------------------
# 3. TPC-H


def bench_tpch(args, data: Path, report: Report) -> None:
    import datafusion
    import duckdb

    queries = {int(p.stem[1:]): p.read_text() for p in (HERE / "tpch" / "queries").glob("q*.sql")}
    queries = dict(sorted(queries.items()))
    df = datafusion.SessionContext()
    # DataFusion with the join thresholds Contrail's sessions use (engine.rs).
    tuned = datafusion.SessionContext(
        datafusion.SessionConfig()
        .set("datafusion.optimizer.hash_join_single_partition_threshold", str(64 << 20))
        .set("datafusion.optimizer.hash_join_single_partition_threshold_rows", "2000000")
    )
    duck = duckdb.connect()
    for t in TABLES:
        df.register_parquet(t, str(data / f"{t}.parquet"))
        tuned.register_parquet(t, str(data / f"{t}.parquet"))
        duck.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data / (t + '.parquet')}')")
    with contrail(data) as c:
        conn = flightsql.connect(c, autocommit=True)
        raw = support.RawFlightSql(flight.connect(c))

        def contrail_q(sql):
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetch_arrow_table()

        # Two Flight SQL clients: ADBC prepares every statement (CreatePreparedStatement,
        # GetFlightInfo, DoGet, ClosePreparedStatement); pyarrow's sends GetFlightInfo + DoGet.
        engines = {
            "contrail (Flight SQL, ADBC)": contrail_q,
            "contrail (Flight SQL, pyarrow)": raw.execute,
            "datafusion (in process)": lambda sql: df.sql(sql).to_arrow_table(),
            "datafusion (in process, Contrail's join thresholds)": lambda sql: tuned.sql(sql).to_arrow_table(),
            "duckdb (in process)": lambda sql: duck.sql(sql).to_arrow_table(),
        }
        per_query: dict[str, dict[int, float]] = {e: {} for e in engines}
        for q, sql in queries.items():
            cases = {e: (lambda f=f: timed(lambda: f(sql))) for e, f in engines.items()}
            results = interleave(cases, args.rounds)
            counts = {e: {r["rows"] for r in rs} for e, rs in results.items()}
            if len({frozenset(c) for c in counts.values()}) != 1:
                raise SystemExit(f"TPC-H Q{q}: the engines disagree on the row count: {counts}")
            for e, rs in results.items():
                per_query[e][q] = median(rs, "s")
        conn.close()
    names = list(engines)
    rows = [[f"Q{q}"] + [per_query[e][q] for e in names] for q in queries]
    totals = {e: sum(per_query[e].values()) for e in names}
    rows.append(["**total**"] + [totals[e] for e in names])
    base = totals[names[0]]
    rows.append(["total / contrail (ADBC)"] + [totals[e] / base for e in names])
    rows.append(["total / contrail (pyarrow)"] + [totals[e] / totals[names[1]] for e in names])
    report.table(f"3. TPC-H SF {args.sf:g}, 22 queries (median seconds)", ["query"] + names, rows,
                 "Contrail reads the same Parquet files as external tables. Its sessions broadcast a join's "
                 "build side up to 64 MiB / 2M rows; DataFusion in process runs with its defaults "
                 "(1 MiB / 128K rows) and with Contrail's. Contrail is read by two clients: ADBC "
                 "(prepare, GetFlightInfo, DoGet, close: four calls per query) and pyarrow's Flight "
                 "SQL client (GetFlightInfo, DoGet).")
    report.chart("tpch-total", totals, "seconds (sum of per-query medians)")


# --------------------------------------------------------------------------
# 4. bulk ingest


def bench_ingest(args, data: Path, report: Report) -> None:
    import adbc_driver_postgresql.dbapi as pgdbapi

    lineitem = pq.read_table(data / "lineitem.parquet")
    # Plain strings (PostgreSQL's ADBC driver does not take string_view), in 64K-row
    # batches: ADBC sends one gRPC message per batch and its clients cap messages at 16 MiB.
    lineitem = lineitem.cast(plain_strings(lineitem.schema))
    lineitem = pa.Table.from_batches(lineitem.to_batches(max_chunksize=65_536))
    counter = iter(range(1_000_000))
    with contrail(data) as c, peers.PostgresServer() as pg:
        def contrail_ingest():
            with flightsql.connect(c, autocommit=True) as conn, conn.cursor() as cur:
                cur.adbc_ingest(f"ingest_{next(counter)}", lineitem, mode="create")
            return lineitem.num_rows

        def pg_copy():
            # adbc_driver_postgresql's ingest is COPY ... FROM STDIN (FORMAT binary).
            with pgdbapi.connect(pg.dsn, autocommit=True) as conn, conn.cursor() as cur:
                cur.adbc_ingest(f"ingest_{next(counter)}", lineitem, mode="create")
            return lineitem.num_rows

        results = interleave({"contrail (CommandStatementIngest)": lambda: timed(contrail_ingest),
                              "postgres COPY FROM (binary)": lambda: timed(pg_copy)}, args.rounds)
    rates = {n: lineitem.num_rows / median(rs, "s") for n, rs in results.items()}
    base = rates["contrail (CommandStatementIngest)"]
    rows = [[n, median(rs, "s"), rates[n] / 1e6, base / rates[n]] for n, rs in results.items()]
    report.table(f"4. Bulk ingest of lineitem ({lineitem.num_rows:,} rows)",
                 ["case", "median s", "Mrows/s", "contrail rate / this"], rows)
    report.chart("ingest", {n: r / 1e6 for n, r in rates.items()}, "Mrows/s")


# --------------------------------------------------------------------------
# 5. concurrency


MIXED = {
    "SELECT 1": "SELECT 1",
    "point lookup": "SELECT o_totalprice FROM orders WHERE o_orderkey = 7",
    "join": "SELECT n_name, count(*) FROM nation JOIN customer ON c_nationkey = n_nationkey GROUP BY n_name",
    "TPC-H Q6": "SELECT sum(l_extendedprice * l_discount) FROM lineitem WHERE l_shipdate >= date '1994-01-01' "
    "AND l_shipdate < date '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24",
}


SHORT = ("SELECT 1", "point lookup", "join")
"""The kinds of the mix a dashboard would send: from a session of their own, whose
`contrail.priority` each run sets."""

SESSION = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}  # keeps one server session per connection


def _client(uri: str, seconds: float, priority: str, results) -> None:
    """One client running the mix in turn for `seconds`, the short kinds from a session
    with `contrail.priority = priority`: (kind, latency) pairs, errors, and what stopped it."""
    lat, errors, failure = [], 0, None
    kinds = list(MIXED)
    try:
        with flightsql.connect(uri, db_kwargs=SESSION, autocommit=True) as long_conn, \
                flightsql.connect(uri, db_kwargs=SESSION, autocommit=True) as short_conn, \
                long_conn.cursor() as long_cur, short_conn.cursor() as short_cur:
            short_cur.execute(f"SET contrail.priority = '{priority}'")
            short_cur.execute("SHOW contrail.priority")
            if short_cur.fetchall()[0][1] != priority:
                raise RuntimeError("the session did not keep contrail.priority")
            end = time.monotonic() + seconds
            i = os.getpid()
            while time.monotonic() < end:
                kind = kinds[i % len(kinds)]
                i += 1
                cur = short_cur if kind in SHORT else long_cur
                t = time.perf_counter()
                try:
                    cur.execute(MIXED[kind])
                    cur.fetchall()
                    lat.append((kind, time.perf_counter() - t))
                except Exception:  # counted, reported
                    errors += 1
    except Exception as e:  # noqa: BLE001 - reported by the parent
        failure = repr(e)
    finally:
        results.put((lat, errors, failure))


def _alone(uri: str, min_seconds: float = 1.5, min_runs: int = 10) -> dict[str, tuple[float, float]]:
    """Each query of the mix on an idle server, run for at least `min_seconds` and `min_runs`
    (so the server's CPU time, counted in 10 ms ticks, is read to ~1%): p50 latency and the
    server's CPU seconds per run."""
    pid = SERVER_PIDS[uri]
    out = {}
    with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
        for kind, sql in MIXED.items():
            cur.execute(sql)
            cur.fetchall()
            lat, cpu, start = [], support.cpu_seconds(pid), time.perf_counter()
            while len(lat) < min_runs or time.perf_counter() - start < min_seconds:
                t = time.perf_counter()
                cur.execute(sql)
                cur.fetchall()
                lat.append(time.perf_counter() - t)
            out[kind] = (statistics.median(lat), (support.cpu_seconds(pid) - cpu) / len(lat))
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return sorted(values)[min(len(values) - 1, int(len(values) * q))]


def bench_concurrency(args, data: Path, report: Report) -> None:
    runs = {  # label: (CPU threads, contrail.priority of the short queries' sessions, other flags)
        "1 CPU thread": (1, "normal", ()),
        "2 CPU threads": (2, "normal", ()),
        "2 CPU threads, short queries interactive": (2, "interactive", ()),
        "same, normal threads not niced": (2, "interactive", ("--normal-nice", "0")),
    }
    cores = len(os.sched_getaffinity(0))
    rows, qps, by_kind, alone = [], {}, {}, {}
    for label, (threads, priority, flags) in runs.items():
        with contrail(data, "--cpu-threads", str(threads), *flags) as c:
            alone[label] = _alone(c)
            # spawn, not fork: the ADBC driver's Go runtime does not survive a fork.
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            procs = [ctx.Process(target=_client, args=(c, args.concurrency_seconds, priority, q))
                     for _ in range(32)]
            for p in procs:
                p.start()
            got = [q.get(timeout=args.concurrency_seconds + 120) for _ in procs]
            for p in procs:
                p.join()
        failures = [f for _, _, f in got if f]
        if failures:
            raise SystemExit(f"concurrency, {label}: {len(failures)} clients failed: {failures[0]}")
        lat = [x for l, _, _ in got for _, x in l]
        by_kind[label] = {k: [x for l, _, _ in got for kind, x in l if kind == k] for k in MIXED}
        errors = sum(e for _, e, _ in got)
        name = f"contrail, {label}"
        qps[name] = len(lat) / args.concurrency_seconds
        # Every client runs the mix in turn, so the kinds complete about equally often:
        # with the server's CPU per mix measured alone, the machine's cores allow this rate.
        cpu_per_mix = sum(cpu for _, cpu in alone[label].values())
        bound = len(MIXED) * cores / cpu_per_mix
        rows.append([name, qps[name], bound, f"{qps[name] / bound:.0%}", _pct(lat, 0.5) * 1e3,
                     _pct(lat, 0.99) * 1e3, errors])
    report.table("5. 32 concurrent ADBC clients, mixed workload",
                 ["server", "queries/s", "CPU-bound queries/s", "of the bound", "p50 ms", "p99 ms", "errors"], rows,
                 f"{args.concurrency_seconds:g} s per run; every client runs the mix in turn: "
                 f"{', '.join(MIXED)}, the short ones ({', '.join(SHORT)}) from a second session. "
                 f"CPU-bound queries/s: {len(MIXED)} queries x {cores} cores / the "
                 "server's CPU seconds for one of each, measured alone on the same server just before "
                 "(the clients' own CPU not counted; with 1 CPU thread the server cannot reach it). "
                 "Short queries interactive: that second session sets `contrail.priority = 'interactive'`. "
                 "The threads running normal statements run at nice 10 (`--normal-nice`, the default) but in "
                 "the last run, where they keep the server's priority.")
    kind_rows = []
    for kind in MIXED:
        p50_alone, cpu = alone["2 CPU threads"][kind]
        kind_rows.append([kind, p50_alone * 1e3, cpu * 1e3,
                          *(v for label in runs for v in (_pct(by_kind[label][kind], 0.5) * 1e3,
                                                          _pct(by_kind[label][kind], 0.99) * 1e3))])
    report.table("5b. The mix by query: alone, and among 32 clients",
                 ["query", "alone p50 ms", "server CPU ms",
                  *(f"{label}: {p}" for label in runs for p in ("p50 ms", "p99 ms"))], kind_rows,
                 "Alone: at least 10 runs and 1.5 s on an idle server with 2 CPU threads, one client. "
                 "A query that reads no table "
                 "(SELECT 1) runs on the gRPC threads; the others share their session's CPU threads with every "
                 "running query of the same priority.")
    report.chart("concurrency-qps", qps, "queries/s")


# --------------------------------------------------------------------------
# 6. workflows


def bench_workflows(args, data: Path, report: Report) -> None:
    """The same statements inline and as Temporal workflows (embedded dev server,
    the worker in the server process), and workflow statements per second."""
    temporal = Path(sys.executable).parent / "temporal"
    queries = {
        "1 fragment: SELECT * FROM region": "SELECT * FROM region",
        "TPC-H Q1": (HERE / "tpch" / "queries" / "q1.sql").read_text(),
        "TPC-H Q3": (HERE / "tpch" / "queries" / "q3.sql").read_text(),
    }
    repeat = 20  # statements per case and round: latency percentiles need samples
    with contrail(data, "--temporal", "embedded", "--temporal-bin", str(temporal)) as c:
        # Sessions (and so SET) need the driver's cookie middleware.
        session = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
        conns = {mode: flightsql.connect(c, db_kwargs=session, autocommit=True) for mode in ("inline", "workflow")}
        for mode, conn in conns.items():
            with conn.cursor() as cur:
                cur.execute(f"SET contrail.execution_mode = '{mode}'")

        def case(mode: str, sql: str, n: int):
            def run():
                lat = []
                with conns[mode].cursor() as cur:
                    for _ in range(n):
                        t = time.perf_counter()
                        cur.execute(sql)
                        cur.fetch_arrow_table()
                        lat.append(time.perf_counter() - t)
                return {"lat": lat}
            return run

        rows, p50s = [], {}
        for label, sql in queries.items():
            n = repeat if label.startswith("1 fragment") else 3
            results = interleave({m: case(m, sql, n) for m in conns}, args.rounds)
            p50 = {m: statistics.median(x for r in rs for x in r["lat"]) * 1e3 for m, rs in results.items()}
            p99 = {m: sorted(x for r in rs for x in r["lat"])[int(len(rs) * n * 0.99)] * 1e3
                   for m, rs in results.items()}
            rows.append([label, p50["inline"], p50["workflow"], p99["workflow"], p50["workflow"] - p50["inline"],
                         p50["workflow"] / p50["inline"]])
            p50s[f"{label}, inline"] = p50["inline"]
            p50s[f"{label}, workflow"] = p50["workflow"]

        # All 22 TPC-H queries, one after another; each answer checked against inline.
        tpch = {int(p.stem[1:]): p.read_text() for p in (HERE / "tpch" / "queries").glob("q*.sql")}

        def all_queries(mode: str):
            def run():
                total, answers = 0.0, {}
                with conns[mode].cursor() as cur:
                    for number in sorted(tpch):
                        t = time.perf_counter()
                        cur.execute(tpch[number])
                        answers[number] = cur.fetch_arrow_table()
                        total += time.perf_counter() - t
                return {"total": total, "answers": answers}
            return run

        results = interleave({m: all_queries(m) for m in conns}, args.rounds)
        for number in tpch:
            want = results["inline"][0]["answers"][number]
            for r in results["workflow"]:
                got = r["answers"][number]
                if got.num_rows != want.num_rows or got.schema != want.schema:
                    raise SystemExit(f"TPC-H Q{number} as a workflow: {got.num_rows} rows, inline {want.num_rows}")
        total = {m: statistics.median(r["total"] for r in rs) * 1e3 for m, rs in results.items()}
        rows.append(["TPC-H, all 22 queries (total)", total["inline"], total["workflow"], "-", total["workflow"] -
                     total["inline"], total["workflow"] / total["inline"]])

        # Throughput: 4 clients issuing 1-fragment workflow statements.
        seconds = min(args.concurrency_seconds, 10.0)
        done, stop = [], time.monotonic() + seconds

        def client():
            with flightsql.connect(c, db_kwargs=session, autocommit=True) as conn, conn.cursor() as cur:
                cur.execute("SET contrail.execution_mode = 'workflow'")
                n = 0
                while time.monotonic() < stop:
                    cur.execute(queries["1 fragment: SELECT * FROM region"])
                    cur.fetch_arrow_table()
                    n += 1
                done.append(n)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for conn in conns.values():
            conn.close()
    rate = sum(done) / seconds
    report.table("6. Workflows: the same statement inline and as a Temporal workflow",
                 ["statement", "inline p50 ms", "workflow p50 ms", "workflow p99 ms", "added p50 ms",
                  "workflow / inline"], rows,
                 f"Embedded Temporal dev server, the worker in the server process; {rate:.1f} workflow "
                 f"statements/s from 4 clients (1-fragment statements, {seconds:g} s).")
    report.chart("workflows-p50", p50s, "p50 ms")


# --------------------------------------------------------------------------
# 7. pipelines


PIPELINE_FILES = 8


def pipeline_parquet(rows: int) -> Path:
    """`rows` rows of 8 mixed columns (ints, doubles, strings, a date) as 8 Parquet
    files in one directory; pyarrow with a fixed seed, generated once."""
    import numpy as np

    out = HERE / "data" / f"pipeline-{rows}"
    files = [out / f"part-{i}.parquet" for i in range(PIPELINE_FILES)]
    if all(f.exists() for f in files):
        return out
    print(f"generating {rows:,} rows of Parquet into {out}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    statuses = pa.array(["F", "O", "P"])
    words = ["carefully", "final", "pending", "requests", "deposits", "ironic", "quickly", "express",
             "accounts", "packages", "furiously", "regular", "bold", "slyly", "theodolites", "blithely"]
    comments = pa.array([" ".join(rng.choice(words, int(rng.integers(2, 7)))) for _ in range(4096)])
    per = -(-rows // PIPELINE_FILES)
    for i, path in enumerate(files):
        lo, hi = min(rows, i * per), min(rows, (i + 1) * per)
        n = hi - lo
        table = pa.table({
            "id": pa.array(np.arange(lo, hi, dtype=np.int64)),
            "customer": pa.array(rng.integers(1, 1_500_000, n, dtype=np.int32)),
            "quantity": pa.array(rng.integers(1, 51, n, dtype=np.int32)),
            "price": pa.array(np.round(rng.uniform(1, 100_000, n), 2)),
            "discount": pa.array(rng.integers(0, 11, n) / 100),
            "status": statuses.take(pa.array(rng.integers(0, len(statuses), n))),
            "comment": comments.take(pa.array(rng.integers(0, len(comments), n))),
            "ship_date": pa.array(rng.integers(8036, 10_592, n, dtype=np.int32)).cast(pa.date32()),  # 1992-1998
        })
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.rename(path)
    return out


class PipelineFailed(RuntimeError):
    pass


def _sql(conn, text: str) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(text)
        return cur.fetch_arrow_table()


def _log_phases(log_path: Path, pipeline: str) -> dict[str, float]:
    """Epoch seconds of one pipeline run's steps in the server log: `pipeline run
    planned`, its first `fragment starts` and last `fragment done` (DEBUG), and the
    first `write committed` after those (the commit activity names no pipeline;
    runs do not overlap here)."""
    out: dict[str, float] = {}
    fragment = f"fragment=pipeline-{pipeline}-"
    for line in log_path.read_text(errors="replace").splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z ", line)
        if not m:
            continue
        t = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.timezone.utc).timestamp()
        if "pipeline run planned" in line and f"pipeline={pipeline} " in line:
            out = {"planned": t}
        elif "planned" in out and "fragment starts" in line and fragment in line:
            out.setdefault("first fragment", t)
        elif "planned" in out and "fragment done" in line and fragment in line:
            out["last fragment"] = t
        elif "last fragment" in out and "committed" not in out and "write committed" in line:
            out["committed"] = t
    return out


PIPELINE_LOG = "warn,contrail_server=info,contrail_planner=info,contrail_workflows=debug"


def bench_pipeline(args, data: Path, report: Report) -> None:
    """Parquet files into a Delta table: a Contrail pipeline (one run, a Temporal
    workflow), Contrail's inline INSERT ... SELECT, and delta-rs (`deltalake`)."""
    import itertools

    import deltalake
    import pyarrow.dataset as pads

    n = args.pipeline_rows
    src_dir = pipeline_parquet(n)
    temporal = Path(sys.executable).parent / "temporal"
    log_path = HERE / "data" / "pipeline-contrail.log"
    session = {"adbc.flight.sql.rpc.with_cookie_middleware": "true"}
    seq = itertools.count()
    phases: list[dict[str, float]] = []
    with contrail(data, "--temporal", "embedded", "--temporal-bin", str(temporal), log_level=PIPELINE_LOG,
                  log_path=log_path) as c, \
            tempfile.TemporaryDirectory(prefix="deltalake-peer-") as peer_dir, \
            flightsql.connect(c, db_kwargs=session, autocommit=True) as conn:
        _sql(conn, "SET contrail.execution_mode = 'inline'")
        _sql(conn, f"CREATE EXTERNAL TABLE pl_src STORED AS PARQUET LOCATION '{src_dir}/'")
        (count,) = _sql(conn, "SELECT count(*) AS n FROM pl_src").column(0).to_pylist()
        assert count == n, (count, n)

        def fresh_table(prefix: str) -> str:
            name = f"{prefix}_{next(seq)}"
            _sql(conn, f"CREATE TABLE {name} AS SELECT * FROM pl_src LIMIT 0")
            return name

        def count_and_drop(table: str) -> int:
            (got,) = _sql(conn, f"SELECT count(*) AS n FROM {table}").column(0).to_pylist()
            _sql(conn, f"DROP TABLE {table}")
            return got

        def pipeline_run() -> dict:
            dst = fresh_table("pl_dst")
            name = dst.replace("pl_dst", "bench_pl")
            sent = time.time()
            start = time.perf_counter()
            _sql(conn, f"CREATE PIPELINE {name} AS INSERT INTO {dst} SELECT * FROM pl_src")
            created = time.perf_counter() - start
            deadline = start + 900
            while True:
                run = _sql(conn, "SELECT state, rows_written, started, finished, attempts, error "
                                 f"FROM system.pipeline_runs WHERE pipeline = '{name}'").to_pylist()
                if run and run[0]["state"] == "succeeded":
                    break
                if run and run[0]["state"] != "running":
                    raise PipelineFailed(f"pipeline {name}: run {run[0]}")
                if time.perf_counter() > deadline:
                    raise PipelineFailed(f"pipeline {name}: not done after 900 s: {run}")
                time.sleep(0.02)
            wall = time.perf_counter() - start
            run = run[0]
            started, finished = run["started"].timestamp(), run["finished"].timestamp()
            _sql(conn, f"DROP PIPELINE {name}")
            logged = _log_phases(log_path, name)
            nan = float("nan")
            phases.append({
                "CREATE PIPELINE returns": created,
                "send to run started": started - sent,
                "started to planned": logged.get("planned", nan) - started,
                "planned to first fragment": logged.get("first fragment", nan) - logged.get("planned", nan),
                "fragments": logged.get("last fragment", nan) - logged.get("first fragment", nan),
                "last fragment to committed": logged.get("committed", nan) - logged.get("last fragment", nan),
                "committed to finished": finished - logged.get("committed", nan),
                "finished to observed": sent + wall - finished,
            })
            return {"s": wall, "server_s": finished - started, "rows": count_and_drop(dst),
                    "reported": run["rows_written"], "attempts": run["attempts"]}

        def inline_insert() -> dict:
            dst = fresh_table("inl_dst")
            start = time.perf_counter()
            result = _sql(conn, f"INSERT INTO {dst} SELECT * FROM pl_src")
            s = time.perf_counter() - start
            return {"s": s, "rows": count_and_drop(dst), "reported": result.column(0)[0].as_py()}

        def delta_rs() -> dict:
            path = Path(peer_dir) / f"t_{next(seq)}"
            start = time.perf_counter()
            # A RecordBatchReader over the files: delta-rs pulls batches as it writes.
            reader = pads.dataset(src_dir, format="parquet").scanner().to_reader()
            deltalake.write_deltalake(str(path), reader)
            s = time.perf_counter() - start
            adds = pa.table(deltalake.DeltaTable(str(path)).get_add_actions(flatten=True))
            rows = sum(adds["num_records"].to_pylist())
            subprocess.run(["rm", "-rf", str(path)], check=True)
            return {"s": s, "rows": rows, "reported": rows}

        cases = {
            "contrail pipeline (CREATE PIPELINE, 1 run)": pipeline_run,
            "contrail INSERT ... SELECT (inline, ADBC)": inline_insert,
            "deltalake write_deltalake (delta-rs)": delta_rs,
        }
        try:
            results = interleave(cases, args.rounds)
        except Exception:
            tail = log_path.read_text(errors="replace").splitlines()[-40:]
            print(f"server log tail ({log_path}):\n" + "\n".join(tail), flush=True)
            raise
    names = list(cases)
    pipe, inline, peer = (results[k] for k in names)
    peer_rate = n / median(peer, "s")
    inline_s = median(inline, "s")
    rows, rates, wrong = [], {}, []
    entries = [(names[0] + ", wall", pipe, "s"), (names[0] + ", server", pipe, "server_s"),
               (names[1], inline, "s"), (names[2], peer, "s")]
    for label, rs, key in entries:
        s = median(rs, key)
        rate = n / s
        rates[label] = rate / 1e6
        written = sorted({r["rows"] for r in rs} | {r["reported"] for r in rs})
        if written != [n]:
            wrong.append(f"{label}: {', '.join(f'{w:,}' for w in written)}")
        rows.append([label, f"{n:,}", ", ".join(f"{w:,}" for w in written), s, rate / 1e6, rate / peer_rate,
                     s / inline_s])
    attempts = sorted({r["attempts"] for r in pipe})
    median_phases = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    src_mb = sum(f.stat().st_size for f in src_dir.glob("*.parquet")) / 1e6
    note = (
        f"Source: {PIPELINE_FILES} Parquet files, {src_mb:,.0f} MB (8 columns: 3 integer, 2 double, 2 string, "
        "a date), an external table. Every case writes a new Delta table (created empty beforehand, outside "
        "the timing; Contrail's dropped after each case). Mrecords/s: source rows / median s. "
        "Pipeline, wall: from sending `CREATE PIPELINE` until `system.pipeline_runs` shows `succeeded` (polled every "
        "20 ms); pipeline, server: that run's `finished - started`. Rows written: the destination's `count(*)` (deltalake: "
        f"the Delta log's numRecords) and what the statement or run reported. Pipeline attempts: {attempts}. "
        "deltalake: `write_deltalake(path, pyarrow.dataset(dir).scanner().to_reader())` in the harness process.\n\n"
        "Where a pipeline run's wall time goes (medians, seconds; from the server log): "
        + ", ".join(f"{k} {v:.2f}" for k, v in median_phases.items()) + "."
    )
    if wrong:
        note += "\n\n**Wrong row counts** (expected " + f"{n:,}): " + "; ".join(wrong) + "."
    report.table(
        f"7. Pipeline: {n:,} Parquet rows into a Delta table",
        ["case", "source rows", "rows written", "median s", "Mrecords/s", "rate / deltalake",
         "time / inline INSERT"],
        rows, note,
    )
    report.chart("pipeline", rates, "Mrecords/s")


BENCHES = {"scan": bench_scan, "link": bench_link, "roundtrip": bench_roundtrip, "tpch": bench_tpch, "ingest": bench_ingest,
           "concurrency": bench_concurrency, "workflows": bench_workflows, "pipeline": bench_pipeline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--roundtrips", type=int, default=1000)
    ap.add_argument("--concurrency-seconds", type=float, default=15.0)
    ap.add_argument("--pipeline-rows", type=int, default=10_000_000, help="rows the pipeline benchmark moves")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    ap.add_argument("--out", default="latest.md", help="report file name under benches/results/")
    args = ap.parse_args()
    data = tpch_parquet(args.sf)
    report = Report(args)
    started = time.monotonic()
    for name in args.only.split(","):
        t = time.monotonic()
        BENCHES[name.strip()](args, data, report)
        print(f"[{name}: {time.monotonic() - t:.0f} s]", flush=True)
    path = report.write()
    print(f"wrote {path} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
