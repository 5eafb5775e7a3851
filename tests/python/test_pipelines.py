"""CREATE PIPELINE against a real Temporal dev server, a real ``contrail serve``
(whose in-process worker runs the runs) and real Delta tables on disk.

* incremental runs deliver each source row to the sink exactly once; the Delta
  log carries each run's transaction (app id, seq) and watermark in one commit
* schedules fire; PAUSE / RESUME / SET / RUN / DROP do what they say
* on_error = 'fail' stops the pipeline and shows the error; 'skip' goes on
* COPY pipelines add files per run, never twice
* DROP of a running run: cancelled before its commit, nothing is committed and its
  workflows end CANCELED; a commit that started finishes, and the run completes as
  succeeded (runs held at those points by the worker's test hold, support.Hold)
* every error path gets the right gRPC code and the server keeps serving
* the definition survives restarts, including a fresh Temporal dev server
"""

from __future__ import annotations

import base64
import json
import pathlib
import threading
import time

import adbc_driver_manager
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import support
from conftest import Server, _shutdown
from test_workflows import TemporalDev, temporal  # noqa: F401  (the module's Temporal dev server)

RUN_TIMEOUT = 90


@pytest.fixture(scope="module")
def pl_server(contrail_binary, temporal, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("contrail-pl"), temporal=temporal.address).start()
    yield srv
    _shutdown(srv)


@pytest.fixture
def conn(pl_server):
    c = pl_server.connect()
    yield c
    c.close()


def sql(conn, text: str):
    with conn.cursor() as cur:
        cur.execute(text)
        return cur.fetch_arrow_table()


def rows(conn, text: str) -> list[dict]:
    return sql(conn, text).to_pylist()


def runs(conn, pipeline: str) -> list[dict]:
    return rows(conn, f"SELECT * FROM system.pipeline_runs WHERE pipeline = '{pipeline}' ORDER BY started, run_id")


def finished_runs(conn, pipeline: str, state: str = "succeeded") -> list[dict]:
    return [r for r in runs(conn, pipeline) if r["state"] == state]


def wait_runs(conn, pipeline: str, n: int, state: str = "succeeded", timeout: float = RUN_TIMEOUT) -> list[dict]:
    return support.wait_until(
        lambda: (lambda done: done if len(done) >= n else None)(finished_runs(conn, pipeline, state)),
        timeout, f"{n} {state} runs of {pipeline}", interval=0.2,
    )


def pipeline_row(conn, name: str) -> dict:
    (row,) = rows(conn, f"DESCRIBE PIPELINE {name}")
    return row


def delta_commits(data_dir: pathlib.Path, table: str) -> list[list[dict]]:
    log = data_dir / "tables" / "public" / table / "_delta_log"
    return [[json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in sorted(log.glob("*.json"))]


def expect_error(conn, text: str, code: str, *needles: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as err:
        sql(conn, text)
    message = str(err.value)
    assert code in message, message
    for n in needles:
        assert n in message, message
    return message


def create_source(conn, src: str, dst: str, n: int, start: int = 1) -> None:
    sql(conn, f"CREATE TABLE {src} (id BIGINT, v VARCHAR)")
    sql(conn, f"CREATE TABLE {dst} (id BIGINT, v VARCHAR)")
    append(conn, src, start, n)


def append(conn, src: str, start: int, n: int) -> None:
    sql(conn, f"INSERT INTO {src} SELECT value AS id, 'v' || value AS v FROM generate_series({start}, {start + n - 1})")


def same_rows(conn, a: str, b: str) -> None:
    left = sql(conn, f"SELECT id, v FROM {a} ORDER BY id")
    right = sql(conn, f"SELECT id, v FROM {b} ORDER BY id")
    assert left.num_rows == right.num_rows
    assert left.equals(right)


# --------------------------------------------------------------------------


def test_incremental_runs_deliver_every_row_exactly_once(pl_server, conn):
    create_source(conn, "inc_src", "inc_dst", 1000)
    sql(conn, "CREATE PIPELINE inc INCREMENTAL BY id AS INSERT INTO inc_dst SELECT id, v FROM inc_src")
    (first,) = wait_runs(conn, "inc", 1)
    assert (first["seq"], first["rows_read"], first["rows_written"]) == (1, 1000, 1000)
    assert (first["watermark_from"], first["watermark_to"]) == (None, "1000")
    same_rows(conn, "inc_src", "inc_dst")

    append(conn, "inc_src", 1001, 500)
    sql(conn, "RUN PIPELINE inc")
    second = wait_runs(conn, "inc", 2)[-1]
    assert (second["seq"], second["rows_written"]) == (2, 500)
    assert (second["watermark_from"], second["watermark_to"]) == ("1000", "1500")
    same_rows(conn, "inc_src", "inc_dst")

    # Nothing new: a run that commits nothing.
    sql(conn, "RUN PIPELINE inc")
    (empty,) = wait_runs(conn, "inc", 1, state="no_data")
    assert empty["rows_read"] == 0
    assert rows(conn, "SELECT count(*) AS n FROM inc_dst") == [{"n": 1500}]
    described = pipeline_row(conn, "inc")
    assert (described["state"], described["watermark"]) == ("active", "1500")

    # The Delta log: each run's transaction and watermark in the commit with its rows.
    commits = [c for c in delta_commits(pl_server.data_dir, "inc_dst") if any("add" in a for a in c)]
    assert len(commits) == 2
    for seq, (commit, watermark) in enumerate(zip(commits, ["1000", "1500"]), start=1):
        (txn,) = [a["txn"] for a in commit if "txn" in a]
        assert txn["appId"].startswith("contrail-pipeline-inc-") and txn["version"] == seq
        (info,) = [a["commitInfo"] for a in commit if "commitInfo" in a]
        assert info["contrail.pipeline"] == {"app_id": txn["appId"], "seq": seq, "watermark": watermark}
    sql(conn, "DROP PIPELINE inc")


def test_schedule_pause_resume_set_drop(pl_server, conn, temporal):
    create_source(conn, "sch_src", "sch_dst", 10)
    sql(conn, "CREATE PIPELINE sch SCHEDULE EVERY '1 second' INCREMENTAL BY id "
              "AS INSERT INTO sch_dst SELECT id, v FROM sch_src")
    row = pipeline_row(conn, "sch")
    assert (row["schedule"], row["state"]) == ("EVERY '1s'", "active")
    assert row["next_run"] is not None
    schedule = json.loads(temporal.cli("schedule", "describe", "-s", "contrail-pipeline-sch", "-o", "json").stdout)
    # Runs get a 2 s workflow task timeout (Temporal's default is 10 s): what a worker
    # killed holding a run's workflow task costs.
    assert schedule["schedule"]["action"]["startWorkflow"]["workflowTaskTimeout"] == "2s", schedule["schedule"]
    wait_runs(conn, "sch", 1)
    append(conn, "sch_src", 11, 10)
    support.wait_until(lambda: rows(conn, "SELECT count(*) AS n FROM sch_dst") == [{"n": 20}], RUN_TIMEOUT,
                       "the schedule to pick up new rows", interval=0.2)

    sql(conn, "ALTER PIPELINE sch PAUSE")
    row = pipeline_row(conn, "sch")
    assert (row["state"], row["next_run"]) == ("paused", None)
    schedule = json.loads(temporal.cli("schedule", "describe", "-s", "contrail-pipeline-sch", "-o", "json").stdout)
    assert schedule["schedule"]["state"]["paused"] is True
    # Let any run that started before the pause finish, then nothing more may run.
    # A run the schedule started just before the pause may not have written its
    # run record yet: Temporal's list of the schedule's running workflows has it.
    def in_flight() -> bool:
        described = json.loads(
            temporal.cli("schedule", "describe", "-s", "contrail-pipeline-sch", "-o", "json").stdout)
        return bool(described.get("info", {}).get("runningWorkflows")) or any(
            r["state"] == "running" for r in runs(conn, "sch"))
    support.wait_until(lambda: not in_flight(), RUN_TIMEOUT, "runs in flight to finish", interval=0.2)
    before = len(runs(conn, "sch"))
    append(conn, "sch_src", 21, 10)
    time.sleep(3)  # three schedule periods: a paused schedule must not fire
    assert len(runs(conn, "sch")) == before
    assert rows(conn, "SELECT count(*) AS n FROM sch_dst") == [{"n": 20}]

    sql(conn, "ALTER PIPELINE sch RESUME")
    support.wait_until(lambda: rows(conn, "SELECT count(*) AS n FROM sch_dst") == [{"n": 30}], RUN_TIMEOUT,
                       "resumed runs", interval=0.2)
    same_rows(conn, "sch_src", "sch_dst")

    sql(conn, "ALTER PIPELINE sch SET (max_attempts = 3, overlap = 'buffer_one')")
    assert "max_attempts = 3" not in pipeline_row(conn, "sch")["definition"]  # the text stays as written
    stored = json.loads((pl_server.data_dir / "pipelines" / "sch.json").read_text())
    assert stored["definition"]["options"]["max_attempts"] == 3
    assert stored["definition"]["options"]["overlap"] == "BufferOne"
    schedule = json.loads(temporal.cli("schedule", "describe", "-s", "contrail-pipeline-sch", "-o", "json").stdout)
    assert "BUFFER_ONE" in json.dumps(schedule["schedule"]["policies"])

    sql(conn, "DROP PIPELINE sch")
    assert rows(conn, "SELECT name FROM system.pipelines WHERE name = 'sch'") == []
    assert temporal.cli("schedule", "describe", "-s", "contrail-pipeline-sch", check=False).returncode != 0
    expect_error(conn, "DESCRIBE PIPELINE sch", "NOT_FOUND", "pipeline 'sch' not found")


def test_on_error_fail_stops_the_pipeline_and_skip_goes_on(conn):
    create_source(conn, "err_src", "err_dst", 5)
    # 1 / (id - id): division by zero at run time, on every attempt.
    sql(conn, "CREATE PIPELINE err_fail WITH (max_attempts = 2, on_error = 'fail') "
              "AS INSERT INTO err_dst SELECT id, CAST(1 / (id - id) AS VARCHAR) FROM err_src")
    (failed,) = wait_runs(conn, "err_fail", 1, state="failed")
    assert failed["attempts"] == 2
    assert "Divide by zero" in failed["error"], failed
    row = support.wait_until(lambda: (lambda r: r if r["state"] == "failed" else None)(pipeline_row(conn, "err_fail")),
                             RUN_TIMEOUT, "the pipeline to be marked failed", interval=0.2)
    assert "Divide by zero" in row["error"]
    assert rows(conn, "SELECT count(*) AS n FROM err_dst") == [{"n": 0}]

    sql(conn, "CREATE PIPELINE err_skip WITH (max_attempts = 1, on_error = 'skip') "
              "AS INSERT INTO err_dst SELECT id, CAST(1 / (id - id) AS VARCHAR) FROM err_src")
    (failed,) = wait_runs(conn, "err_skip", 1, state="failed")
    assert failed["attempts"] == 1
    assert pipeline_row(conn, "err_skip")["state"] == "active"
    for name in ("err_fail", "err_skip"):
        sql(conn, f"DROP PIPELINE {name}")


def test_copy_pipeline_adds_files_once_per_run(pl_server, conn):
    out = pl_server.base / "copy-out"
    sql(conn, "CREATE TABLE cp_src (id BIGINT, v VARCHAR)")
    append(conn, "cp_src", 1, 300)
    sql(conn, f"CREATE PIPELINE cp INCREMENTAL BY id AS COPY (SELECT id, v FROM cp_src) TO '{out}' STORED AS PARQUET")
    wait_runs(conn, "cp", 1)
    append(conn, "cp_src", 301, 200)
    sql(conn, "RUN PIPELINE cp")
    wait_runs(conn, "cp", 2)
    files = sorted(out.glob("*.parquet"))
    assert files and not list(out.glob(".contrail-*"))
    got = pa.concat_tables([pq.read_table(f) for f in files]).sort_by("id")
    assert got.column("id").to_pylist() == list(range(1, 501))
    marker = [json.loads(p.read_text()) for p in out.glob("_contrail_*.json")]
    assert [(m["seq"], m["watermark"]) for m in marker] == [(2, "500")]
    sql(conn, "DROP PIPELINE cp")


def test_invalid_definitions_and_statements(conn):
    sql(conn, "CREATE TABLE bad_src (id BIGINT, v VARCHAR, flag BOOLEAN)")
    sql(conn, "CREATE TABLE bad_dst (id BIGINT, v VARCHAR)")
    body = "AS INSERT INTO bad_dst SELECT id, v FROM bad_src"
    expect_error(conn, f"CREATE PIPELINE b1 SCHEDULE EVERY 'often' {body}", "INVALID_ARGUMENT", "invalid interval 'often'")
    expect_error(conn, f"CREATE PIPELINE b1 SCHEDULE CRON '61 * * * *' {body}", "INVALID_ARGUMENT", "not a valid minute")
    expect_error(conn, "CREATE PIPELINE b1 AS INSERT INTO bad_dst SELECT id, v FROM nope", "NOT_FOUND", "nope")
    expect_error(conn, "CREATE PIPELINE b1 AS INSERT INTO bad_dst SELECT id, zz FROM bad_src", "INVALID_ARGUMENT", "zz")
    expect_error(conn, "CREATE PIPELINE b1 AS INSERT INTO bad_dst SELECT id FROM bad_src", "INVALID_ARGUMENT", "Column count")
    expect_error(conn, f"CREATE PIPELINE b1 INCREMENTAL BY nope {body}", "INVALID_ARGUMENT", "'nope' is not a column")
    expect_error(conn, "CREATE PIPELINE b1 INCREMENTAL BY flag AS INSERT INTO bad_dst SELECT id, v FROM bad_src",
                 "INVALID_ARGUMENT", "not orderable")
    expect_error(conn, f"CREATE PIPELINE b1 WITH (max_attempts = 0) {body}", "INVALID_ARGUMENT", "max_attempts")
    expect_error(conn, f"CREATE PIPELINE b1 WITH (colour = 'red') {body}", "INVALID_ARGUMENT", "unknown option 'colour'")
    expect_error(conn, "CREATE PIPELINE b1 SCHEDULE SOMETIMES AS INSERT INTO bad_dst SELECT 1, 'x'",
                 "INVALID_ARGUMENT", "SOMETIMES", "line 1")
    expect_error(conn, "DROP PIPELINE nope", "NOT_FOUND", "pipeline 'nope' not found")
    expect_error(conn, "RUN PIPELINE nope", "NOT_FOUND")
    expect_error(conn, "ALTER PIPELINE nope PAUSE", "NOT_FOUND")
    sql(conn, "DROP PIPELINE IF EXISTS nope")
    assert rows(conn, "SELECT name FROM system.pipelines WHERE name = 'b1'") == []

    sql(conn, f"CREATE PIPELINE b2 SCHEDULE EVERY '1 hour' WITH (paused = true) {body}")
    expect_error(conn, f"CREATE PIPELINE b2 {body}", "ALREADY_EXISTS", "pipeline 'b2' already exists")
    sql(conn, f"CREATE PIPELINE IF NOT EXISTS b2 {body}")
    assert pipeline_row(conn, "b2")["state"] == "paused"
    sql(conn, f"CREATE OR REPLACE PIPELINE b2 SCHEDULE CRON '0 3 * * *' {body}")
    row = pipeline_row(conn, "b2")
    assert (row["schedule"], row["state"]) == ("CRON '0 3 * * *'", "active")
    shown = rows(conn, "SHOW PIPELINES")
    assert [r["name"] for r in shown if r["name"] == "b2"] == ["b2"]
    sql(conn, "DROP PIPELINE b2")
    # Still serving.
    assert rows(conn, "SELECT 1 AS one") == [{"one": 1}]


def test_pipelines_need_temporal(make_server):
    srv = make_server()  # --temporal off
    c = srv.connect()
    try:
        with pytest.raises(adbc_driver_manager.Error) as err:
            sql(c, "CREATE PIPELINE p AS INSERT INTO t SELECT 1")
        assert "FailedPrecondition" in str(err.value) and "--temporal" in str(err.value)
        assert rows(c, "SHOW PIPELINES") == []
    finally:
        c.close()


def test_definitions_survive_restarts_and_a_fresh_temporal(contrail_binary, tmp_path_factory):
    base = tmp_path_factory.mktemp("pl-restart")
    (base / "t1").mkdir()
    dev = TemporalDev(base / "t1").start()
    srv = Server(base / "srv", temporal=dev.address).start()
    try:
        c = srv.connect()
        create_source(c, "rs_src", "rs_dst", 100)
        sql(c, "CREATE PIPELINE rs SCHEDULE EVERY '1 second' INCREMENTAL BY id "
               "AS INSERT INTO rs_dst SELECT id, v FROM rs_src")
        wait_runs(c, "rs", 1)
        c.close()
        srv.stop()
        dev.stop()

        # A fresh Temporal (its database gone), the same data directory.
        (base / "t2").mkdir()
        dev = TemporalDev(base / "t2").start()
        srv.temporal = dev.address
        srv.start()
        c = srv.connect()
        assert [r["name"] for r in rows(c, "SHOW PIPELINES")] == ["rs"]
        dev.cli("schedule", "describe", "-s", "contrail-pipeline-rs")  # re-created
        append(c, "rs_src", 101, 50)
        support.wait_until(lambda: rows(c, "SELECT count(*) AS n FROM rs_dst") == [{"n": 150}], RUN_TIMEOUT,
                           "runs on the fresh Temporal", interval=0.2)
        same_rows(c, "rs_src", "rs_dst")
        sql(c, "DROP PIPELINE rs")
        c.close()
    finally:
        _shutdown(srv)
        dev.stop()


def workflow_of(run: dict) -> str:
    """The run's workflow id (the run id ends with '-' and 8 characters of Temporal's run id)."""
    return run["run_id"][:-9]


# Runs held at known points by the worker's test hold (support.Hold): no test
# here depends on how long a query or a commit takes.

@pytest.fixture(scope="module")
def held(contrail_binary, temporal, tmp_path_factory):
    """A server whose worker holds every write (on a task queue of its own, so the
    module's other server never takes its activities), and its hold."""
    base = tmp_path_factory.mktemp("contrail-pl-held")
    hold = support.Hold(base / "hold")
    srv = Server(base, temporal=temporal.address, env=hold.env(),
                 extra_args=("--task-queue", "contrail-pl-held")).start()
    yield srv, hold
    _shutdown(srv)


def held_run(conn, hold: support.Hold, name: str, n: int) -> tuple[str, dict]:
    """Create pipeline ``name`` from ``<name>_src`` (n rows) into ``<name>_dst``; its
    first run, held with its data files written and its commit not decided yet:
    (the query workflow's id, the run's record)."""
    create_source(conn, f"{name}_src", f"{name}_dst", n)
    sql(conn, f"CREATE PIPELINE {name} INCREMENTAL BY id AS INSERT INTO {name}_dst SELECT id, v FROM {name}_src")
    query_id = hold.wait("fragments", f"pipeline-{name}-")
    (run,) = [r for r in runs(conn, name) if r["state"] == "running"]
    return query_id, run


def status(temporal, workflow_id: str) -> str:
    return temporal.status(workflow_id).removeprefix("WORKFLOW_EXECUTION_STATUS_")


def events(temporal, workflow_id: str, kind: str) -> list[dict]:
    return [e for e in temporal.history(workflow_id)["events"] if e["eventType"] == f"EVENT_TYPE_{kind}"]


def scheduled_activities(temporal, workflow_id: str) -> list[str]:
    return [e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in events(temporal, workflow_id, "ACTIVITY_TASK_SCHEDULED")]


def test_pause_signals_a_running_run(held, temporal):
    srv, hold = held
    conn = srv.connect()
    try:
        query_id, run = held_run(conn, hold, "pausing", 20)
        sql(conn, "ALTER PIPELINE pausing PAUSE")
        signals = events(temporal, workflow_of(run), "WORKFLOW_EXECUTION_SIGNALED")
        assert [s["workflowExecutionSignaledEventAttributes"]["signalName"] for s in signals] == ["set_paused"]
        sql(conn, "ALTER PIPELINE pausing RESUME")
        hold.release(query_id, "fragments")
        hold.wait("commit", query_id)
        hold.release(query_id, "commit")
        (done,) = wait_runs(conn, "pausing", 1)
        assert (done["run_id"], done["rows_written"]) == (run["run_id"], 20)
        same_rows(conn, "pausing_src", "pausing_dst")
        sql(conn, "DROP PIPELINE pausing")
    finally:
        conn.close()


def test_drop_before_the_commit_cancels_the_run_and_commits_nothing(held, temporal):
    """Cancelled before its commit point, a run commits nothing, and says so."""
    srv, hold = held
    conn = srv.connect()
    try:
        query_id, run = held_run(conn, hold, "dropfirst", 20)
        sql(conn, "DROP PIPELINE dropfirst")  # returns once the run has ended
        assert status(temporal, workflow_of(run)) == "CANCELED"
        assert status(temporal, query_id) == "CANCELED"
        assert "commit_write" not in " ".join(scheduled_activities(temporal, query_id))
        # Nothing is left to commit, released or not.
        hold.release(query_id, "fragments")
        hold.release(query_id, "commit")
        assert hold.waiting("commit", query_id) == []
        assert rows(conn, "SELECT count(*) AS n FROM dropfirst_dst") == [{"n": 0}]
        assert len(delta_commits(srv.data_dir, "dropfirst_dst")) == 1  # its CREATE TABLE only
    finally:
        conn.close()


def test_drop_during_the_commit_lets_it_finish_and_the_run_succeeds(held, temporal):
    """A commit that started when the cancel came finishes, and the run reports it
    committed (its workflows completed, not cancelled); DROP returns after it."""
    srv, hold = held
    conn = srv.connect()
    try:
        query_id, run = held_run(conn, hold, "dropmid", 20)
        hold.release(query_id, "fragments")
        hold.wait("commit", query_id)
        dropped: dict = {}

        def drop() -> None:
            c = srv.connect()
            try:
                sql(c, "DROP PIPELINE dropmid")
                dropped["ok"] = True
            except Exception as e:  # noqa: BLE001  (reported by the assertion below)
                dropped["error"] = e
            finally:
                c.close()

        dropping = threading.Thread(target=drop)
        dropping.start()
        try:
            support.wait_until(lambda: events(temporal, query_id, "WORKFLOW_EXECUTION_CANCEL_REQUESTED"), 30,
                               "the cancel to reach the run's query workflow", interval=0.1)
            assert dropping.is_alive(), dropped  # DROP waits for the run, which waits for its commit
        finally:
            hold.release(query_id, "commit")
            dropping.join(RUN_TIMEOUT)
        assert not dropping.is_alive() and dropped == {"ok": True}, dropped
        assert status(temporal, query_id) == "COMPLETED"
        assert status(temporal, workflow_of(run)) == "COMPLETED"
        (completed,) = events(temporal, workflow_of(run), "WORKFLOW_EXECUTION_COMPLETED")
        payload = completed["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0]["data"]
        outcome = json.loads(base64.b64decode(payload))
        assert (outcome["state"], outcome["rows_written"]) == ("succeeded", 20)
        same_rows(conn, "dropmid_src", "dropmid_dst")
        commits = delta_commits(srv.data_dir, "dropmid_dst")
        assert len(commits) == 2
        assert [a["txn"]["appId"] for a in commits[1] if "txn" in a][0].startswith("contrail-pipeline-dropmid-")
    finally:
        conn.close()
