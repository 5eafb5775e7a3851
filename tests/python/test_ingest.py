"""Bulk ingest (Flight SQL CommandStatementIngest) through ADBC's adbc_ingest."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import subprocess
import sys
import textwrap

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import HERE
from support import Status, adbc_status, execute_update, query, scalar, wait_idle


def sample_table(start: int = 0, n: int = 5) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "small": pa.array([i % 100 for i in ids], pa.int16()),
            "i32": pa.array([i * 3 if i % 4 else None for i in ids], pa.int32()),
            "f64": pa.array([i / 4 for i in ids], pa.float64()),
            "f32": pa.array([i / 2 for i in ids], pa.float32()),
            "s": pa.array([f"row-{i}-é" if i % 3 else None for i in ids], pa.string()),
            "b": pa.array([i % 2 == 0 for i in ids], pa.bool_()),
            "d": pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in ids], pa.date32()),
            "ts": pa.array(
                [dt.datetime(2024, 1, 1, 12) + dt.timedelta(seconds=i, microseconds=i) for i in ids],
                pa.timestamp("us"),
            ),
            "tstz": pa.array(
                [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i) for i in ids],
                pa.timestamp("us", tz="UTC"),
            ),
            "dec": pa.array([decimal.Decimal(i) / 100 for i in ids], pa.decimal128(12, 2)),
        }
    )


def read_back(conn, table: str, schema: str | None = None) -> pa.Table:
    qualified = f"{schema}.{table}" if schema else table
    return query(conn, f"SELECT * FROM {qualified} ORDER BY id")


def assert_same(got: pa.Table, expected: pa.Table) -> None:
    assert got.schema.names == expected.schema.names
    for field in expected.schema:
        got_type = got.schema.field(field.name).type
        if pa.types.is_timestamp(field.type) and field.type.tz:
            assert pa.types.is_timestamp(got_type) and got_type.tz in ("UTC", "+00:00"), got_type
            assert got.column(field.name).cast(field.type).to_pylist() == expected.column(field.name).to_pylist()
            continue
        assert got_type == field.type, (field.name, got_type, field.type)
    assert got.to_pylist() == expected.to_pylist()


# --------------------------------------------------------------------------


def test_create_round_trips_types(conn, server, name):
    data = sample_table(0, 50)
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, data, mode="create") == data.num_rows
    assert_same(read_back(conn, name), data)
    assert (server.data_dir / "tables" / "public" / name / "_delta_log").is_dir()


def test_create_fails_if_table_exists(conn, name):
    data = sample_table(0, 3)
    with conn.cursor() as cur:
        cur.adbc_ingest(name, data, mode="create")
        with pytest.raises(dbapi.ProgrammingError) as exc:
            cur.adbc_ingest(name, sample_table(100, 3), mode="create")
    assert adbc_status(exc.value) in (Status.ALREADY_EXISTS, Status.INVALID_ARGUMENT)
    assert name in str(exc.value)
    assert_same(read_back(conn, name), data)


def test_append(conn, name):
    first, second = sample_table(0, 10), sample_table(10, 7)
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, first, mode="create") == first.num_rows
        assert cur.adbc_ingest(name, second, mode="append") == second.num_rows
    assert_same(read_back(conn, name), pa.concat_tables([first, second]))


def test_append_to_missing_table_is_not_found(conn, name):
    with conn.cursor() as cur:
        with pytest.raises(dbapi.ProgrammingError) as exc:
            cur.adbc_ingest(name, sample_table(0, 3), mode="append")
    assert adbc_status(exc.value) == Status.NOT_FOUND
    with pytest.raises(dbapi.ProgrammingError):
        query(conn, f"SELECT * FROM {name}")


def test_append_with_incompatible_schema_fails_and_keeps_data(conn, name):
    data = sample_table(0, 4)
    with conn.cursor() as cur:
        cur.adbc_ingest(name, data, mode="create")
        wrong = pa.table({"id": pa.array(["not", "an", "int"]), "other": [1, 2, 3]})
        with pytest.raises(dbapi.Error):
            cur.adbc_ingest(name, wrong, mode="append")
    assert_same(read_back(conn, name), data)


def test_replace(conn, name):
    with conn.cursor() as cur:
        cur.adbc_ingest(name, sample_table(0, 10), mode="create")
        new = pa.table({"id": pa.array([7, 8], pa.int64()), "other": pa.array(["x", "y"])})
        assert cur.adbc_ingest(name, new, mode="replace") == new.num_rows
    got = read_back(conn, name)
    assert got.schema.names == ["id", "other"]
    assert got.to_pylist() == new.to_pylist()


def test_replace_creates_missing_table(conn, name):
    data = sample_table(0, 3)
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, data, mode="replace") == data.num_rows
    assert_same(read_back(conn, name), data)


def test_create_append(conn, name):
    first, second = sample_table(0, 5), sample_table(5, 5)
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, first, mode="create_append") == first.num_rows
        assert cur.adbc_ingest(name, second, mode="create_append") == second.num_rows
    assert_same(read_back(conn, name), pa.concat_tables([first, second]))


def test_create_append_with_other_columns_is_already_exists(conn, name):
    """ADBC: appending data whose columns the existing table does not have is
    ALREADY_EXISTS, and the table keeps its rows."""
    data = sample_table(0, 4)
    with conn.cursor() as cur:
        cur.adbc_ingest(name, data, mode="create")
        for mode in ("create_append", "append"):
            with pytest.raises(dbapi.Error) as exc:
                cur.adbc_ingest(name, pa.table({"id": [1], "elsewhere": ["x"]}), mode=mode)
            assert adbc_status(exc.value) == Status.ALREADY_EXISTS, exc.value
            assert "elsewhere" in str(exc.value) or "other" in str(exc.value), exc.value
    assert_same(read_back(conn, name), data)


def test_ingest_into_other_schema(conn, name):
    schema = f"ing_{name}"
    execute_update(conn, f"CREATE SCHEMA {schema}")
    data = sample_table(0, 6)
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, data, mode="create", db_schema_name=schema) == data.num_rows
    assert_same(read_back(conn, name, schema), data)
    with pytest.raises(dbapi.ProgrammingError):
        query(conn, f"SELECT * FROM public.{name}")


def test_ingest_into_table_created_with_sql(conn, name):
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT NOT NULL, s VARCHAR)")
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "s": ["a", None]})
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, data, mode="append") == 2
    assert query(conn, f"SELECT * FROM {name} ORDER BY id").to_pylist() == data.to_pylist()


def test_large_ingest_from_reader(conn, name):
    batch_rows, batches = 100_000, 20
    schema = pa.schema([("id", pa.int64()), ("g", pa.int32()), ("s", pa.string())])

    def gen():
        for b in range(batches):
            ids = pa.array(range(b * batch_rows, (b + 1) * batch_rows), pa.int64())
            yield pa.record_batch(
                [ids, pc.cast(pc.bit_wise_and(ids, 7), pa.int32()), pc.cast(ids, pa.string())], schema=schema
            )

    reader = pa.RecordBatchReader.from_batches(schema, gen())
    n = batch_rows * batches
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, reader, mode="create") == n
    row = query(conn, f"SELECT count(*) AS c, sum(id) AS s, count(DISTINCT g) AS g FROM {name}").to_pylist()[0]
    assert row == {"c": n, "s": n * (n - 1) // 2, "g": 8}


def test_large_string_and_view_inputs_are_accepted(conn, name):
    """pandas 3 / polars hand over large_string and string_view columns."""
    data = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "ls": pa.array(["a", None, "c"], pa.large_string()),
            "sv": pa.array(["x", "y", None], pa.string_view()),
        }
    )
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, data, mode="create") == 3
    got = query(conn, f"SELECT * FROM {name} ORDER BY id")
    assert got.column("ls").to_pylist() == ["a", None, "c"]
    assert got.column("sv").to_pylist() == ["x", "y", None]
    assert got.schema.field("ls").type == pa.string()
    assert got.schema.field("sv").type == pa.string()


def test_schema_metadata_is_accepted(conn, name):
    """pandas (DataFrame.to_sql, pa.Table.from_pandas) attaches schema metadata."""
    data = pa.table({"id": pa.array([1, 2], pa.int64()), "s": ["a", None]}).replace_schema_metadata(
        {"pandas": '{"note": "from pandas"}', "origin": "test"}
    )
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, data, mode="create") == 2
        assert cur.adbc_ingest(name, data, mode="append") == 2
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 4


def test_ingest_is_atomic_when_client_dies_mid_stream(conn, server, name):
    """A DoPut cut off half way (client killed) leaves the table as it was."""
    base = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["a", "b", "c"]})
    with conn.cursor() as cur:
        cur.adbc_ingest(name, base, mode="create")

    script = textwrap.dedent(
        f"""
        import sys
        import pyarrow as pa, pyarrow.compute as pc, pyarrow.flight as flight
        import support
        client = flight.connect("grpc+tcp://{server.address}")
        schema = pa.schema([("id", pa.int64()), ("s", pa.string())])
        desc = flight.FlightDescriptor.for_command(
            support.cmd_statement_ingest("{name}", if_not_exist="fail", if_exists="append"))
        writer, reader = client.do_put(desc, schema)
        for b in range(20):
            ids = pa.array(range(b * 50_000, (b + 1) * 50_000), pa.int64())
            writer.write_batch(pa.record_batch([ids, pc.cast(ids, pa.string())], schema=schema))
        print("WROTE", flush=True)
        sys.stdin.read()  # hold the stream open until we are killed
        """
    )
    env = dict(os.environ, PYTHONPATH=str(HERE))
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "WROTE", f"child failed: {line!r}"
    finally:
        child.kill()
        child.wait(30)
    # Let the server notice the broken stream and finish whatever it does with it.
    wait_idle(server.pid)
    assert scalar(conn, f"SELECT count(*) FROM {name}") == base.num_rows
    # and the table still takes writes
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, base, mode="append") == base.num_rows
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 2 * base.num_rows


def data_files(server, table: str) -> set[str]:
    return {p.name for p in (server.data_dir / "tables" / "public" / table).glob("*.parquet")}


def commits(server, table: str) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "tables" / "public" / table / "_delta_log").glob("*.json"))


def test_append_takes_columns_by_name_and_converts_types(conn, name):
    first = sample_table(0, 4)
    # Other column order, narrower integer and float types, large strings.
    second = sample_table(4, 3).select(list(reversed(first.schema.names)))
    second = second.set_column(second.schema.get_field_index("id"), "id", second.column("id").cast(pa.int32()))
    second = second.set_column(second.schema.get_field_index("f64"), "f64", second.column("f64").cast(pa.float32()))
    second = second.set_column(second.schema.get_field_index("s"), "s", second.column("s").cast(pa.large_string()))
    with conn.cursor() as cur:
        cur.adbc_ingest(name, first, mode="create")
        assert cur.adbc_ingest(name, second, mode="append") == second.num_rows
    assert_same(read_back(conn, name), pa.concat_tables([first, sample_table(4, 3)]))


@pytest.mark.parametrize(
    "data, message",
    [
        (pa.table({"id": pa.array([1], pa.int64())}), "has column 's', which the data does not"),
        (
            pa.table({"id": pa.array([1], pa.int64()), "s": ["a"], "extra": [1]}),
            "the data has column 'extra'",
        ),
        (
            pa.table({"id": pa.array([[1]], pa.list_(pa.int64())), "s": ["a"]}),
            "column 'id'",
        ),
    ],
    ids=["missing", "extra", "unconvertible"],
)
def test_append_of_other_columns_is_already_exists(conn, server, name, data, message):
    """The table exists, not as this data needs it: ALREADY_EXISTS, as ADBC specifies."""
    base = pa.table({"id": pa.array([1, 2], pa.int64()), "s": ["a", "b"]})
    with conn.cursor() as cur:
        cur.adbc_ingest(name, base, mode="create")
        with pytest.raises(dbapi.ProgrammingError) as exc:
            cur.adbc_ingest(name, data, mode="append")
    assert adbc_status(exc.value) == Status.ALREADY_EXISTS
    assert message in str(exc.value)
    assert commits(server, name) == ["00000000000000000000.json"]
    assert query(conn, f"SELECT * FROM {name} ORDER BY id").to_pylist() == base.to_pylist()


def test_failed_append_commits_nothing_and_leaves_no_files(conn, server, name):
    """Nulls into a NOT NULL column, in the last of many batches: the batches before
    it were written (by every writer) but must not stay behind."""
    execute_update(conn, f"CREATE TABLE {name} (id BIGINT NOT NULL, s VARCHAR)")
    good = [pa.record_batch({"id": pa.array(range(i * 1000, (i + 1) * 1000), pa.int64()),
                             "s": pa.array([str(i)] * 1000)}) for i in range(9)]
    bad = pa.record_batch({"id": pa.array([1, None], pa.int64()), "s": pa.array(["x", "y"])})
    data = pa.Table.from_batches([*good, bad])
    before = data_files(server, name)
    with conn.cursor() as cur:
        with pytest.raises(dbapi.Error) as exc:
            cur.adbc_ingest(name, data, mode="append")
    assert adbc_status(exc.value) == Status.INVALID_ARGUMENT, exc.value
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 0
    assert len(commits(server, name)) == 1
    wait_idle(server.pid)
    assert data_files(server, name) == before


def test_large_ingest_is_one_commit(conn, server, name):
    batches = [pa.record_batch({"id": pa.array(range(i * 50_000, (i + 1) * 50_000), pa.int64())}) for i in range(12)]
    with conn.cursor() as cur:
        assert cur.adbc_ingest(name, pa.Table.from_batches(batches), mode="create") == 600_000
        assert cur.adbc_ingest(name, pa.Table.from_batches(batches[:3]), mode="append") == 150_000
    assert commits(server, name) == ["00000000000000000000.json", "00000000000000000001.json"]
    row = query(conn, f"SELECT count(*) AS c, count(DISTINCT id) AS d, sum(id) AS s FROM {name}").to_pylist()[0]
    assert row == {"c": 750_000, "d": 600_000, "s": 599_999 * 600_000 // 2 + 149_999 * 150_000 // 2}


def test_compression_follows_the_session_setting(conn, server, name):
    import pyarrow.parquet as pq

    data = sample_table(0, 20)
    with conn.cursor() as cur:
        cur.adbc_ingest(name, data, mode="create")
        cur.execute("SET datafusion.execution.parquet.compression = 'zstd(3)'")
        cur.adbc_ingest(name, data, mode="append")
    codecs = sorted(
        pq.ParquetFile(server.data_dir / "tables" / "public" / name / f).metadata.row_group(0).column(0).compression
        for f in data_files(server, name)
    )
    assert set(codecs) == {"SNAPPY", "ZSTD"}, codecs
    assert scalar(conn, f"SELECT count(*) FROM {name}") == 40
