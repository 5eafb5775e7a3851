"""Chaos: a pipeline keeps running exactly once while its processes are killed.

A scheduled incremental pipeline moves rows from a directory of Parquet files
(written by the test, with ever-growing ids) into a managed Delta table. Runs go
to ``serve``'s in-process worker and to two ``contrail worker`` processes. At
random moments the test kills -9 a worker, ``serve`` or the Temporal dev server
(and starts it again at once), at least 7 times each. Afterwards the sink holds
every source row exactly once (count, distinct ids, sums), after 20+ runs.

Recovery time = from a kill to the sink's first commit made after it (the
pipeline progressing again); the test prints every one and keeps the worst
under 5 s.
"""

from __future__ import annotations

import json
import pathlib
import random
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

import support
from conftest import Server, _shutdown
from test_workflows import TemporalDev, Worker

KILLS_EACH = 7
FILE_ROWS = 400
RECOVERY_LIMIT_S = 5.0


class Appender(threading.Thread):
    """Writes a new Parquet file of higher ids into the source directory every 0.2 s."""

    def __init__(self, directory: pathlib.Path) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.next_id = 1
        self.files = 0
        self.halt = threading.Event()

    def write_one(self) -> None:
        ids = list(range(self.next_id, self.next_id + FILE_ROWS))
        table = pa.table({"id": pa.array(ids, pa.int64()), "v": pa.array([f"row-{i}" for i in ids])})
        tmp = self.directory / f".part-{self.files:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        tmp.rename(self.directory / f"part-{self.files:05d}.parquet")  # appears whole
        self.next_id += FILE_ROWS
        self.files += 1

    def run(self) -> None:
        while not self.halt.wait(0.2):
            self.write_one()


def commits(log: pathlib.Path) -> list[pathlib.Path]:
    return sorted(log.glob("*.json"))


def test_pipeline_survives_kill_9_of_every_process(contrail_binary, tmp_path_factory):
    base = tmp_path_factory.mktemp("chaos")
    (base / "temporal").mkdir()
    source = base / "source"
    source.mkdir()
    dev = TemporalDev(base / "temporal").start()
    srv = Server(base / "srv", temporal=dev.address).start()
    workers = [Worker(base / f"w{i}", dev.address, data_dir=srv.data_dir) for i in range(2)]
    for i, w in enumerate(workers):
        (base / f"w{i}").mkdir()
        w.start()
    appender = Appender(source)
    appender.write_one()
    rng = random.Random(20261122)
    recoveries: list[tuple[str, float]] = []
    conn = srv.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE EXTERNAL TABLE chaos_src (id BIGINT, v VARCHAR) STORED AS PARQUET LOCATION '{source}/'")
            cur.execute("CREATE TABLE chaos_dst (id BIGINT, v VARCHAR)")
            cur.execute("CREATE PIPELINE chaos SCHEDULE EVERY '1 second' INCREMENTAL BY id "
                        "WITH (on_error = 'skip', max_attempts = 10) "
                        "AS INSERT INTO chaos_dst SELECT id, v FROM chaos_src")
        conn.close()
        log = srv.data_dir / "tables" / "public" / "chaos_dst" / "_delta_log"
        support.wait_until(lambda: len(commits(log)) >= 2, 60, "the first pipeline commit", interval=0.05)
        appender.start()

        victims = ["worker", "serve", "temporal"] * KILLS_EACH
        rng.shuffle(victims)
        for victim in victims:
            time.sleep(rng.uniform(0.3, 1.5))
            before = set(commits(log))
            killed_at = time.monotonic()
            if victim == "worker":
                w = rng.choice(workers)
                w.kill()
                w.start()
            elif victim == "serve":
                srv.kill()
                srv.start()
            else:
                dev.proc.kill()
                dev.proc.wait(30)
                dev.start()

            def progressed():
                return [c for c in commits(log) if c not in before]

            support.wait_until(progressed, 120, f"a commit after killing {victim}", interval=0.02)
            recoveries.append((victim, time.monotonic() - killed_at))

        appender.halt.set()
        appender.join(10)
        total = appender.next_id - 1
        conn = srv.connect()

        def count():
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM chaos_dst")
                return cur.fetchone()[0]

        support.wait_until(lambda: count() >= total, 120, f"all {total} rows in the sink", interval=0.2)
        with conn.cursor() as cur:
            check = "SELECT count(*) AS n, count(DISTINCT id) AS d, sum(id) AS s, sum(length(v)) AS l FROM {}"
            cur.execute(check.format("chaos_src"))
            src = cur.fetchone()
            cur.execute(check.format("chaos_dst"))
            dst = cur.fetchone()
            cur.execute("SELECT count(*) FROM system.pipeline_runs WHERE pipeline = 'chaos' AND state = 'succeeded'")
            (succeeded,) = cur.fetchone()
            cur.execute("DROP PIPELINE chaos")
        conn.close()

        worst = {v: max(t for k, t in recoveries if k == v) for v in ("worker", "serve", "temporal")}
        report = {
            "kills": len(recoveries),
            "runs_succeeded": succeeded,
            "rows": total,
            "recovery_s": [(k, round(t, 2)) for k, t in recoveries],
            "worst_s": {k: round(t, 2) for k, t in worst.items()},
            "median_s": round(sorted(t for _, t in recoveries)[len(recoveries) // 2], 2),
        }
        print("\nchaos report:", json.dumps(report))
        assert src[0] == total, (src, total)
        assert dst == src, f"sink {dst} != source {src}"
        assert dst[0] == dst[1], "duplicate ids in the sink"
        assert succeeded >= 20, report
        assert max(worst.values()) < RECOVERY_LIMIT_S, report
    finally:
        appender.halt.set()
        for w in workers:
            w.kill()
        _shutdown(srv)
        dev.stop()
