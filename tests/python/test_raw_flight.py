"""Flight SQL spoken directly with pyarrow.flight; every command built by hand."""

from __future__ import annotations

import pyarrow as pa
import pytest

import support as s

STR = pa.string()


@pytest.fixture(scope="module")
def raw(server) -> s.RawFlightSql:
    r = server.raw()
    r.execute_update("CREATE SCHEMA rawschema")
    r.execute_update("CREATE TABLE rawschema.things (id BIGINT NOT NULL, label VARCHAR, price DECIMAL(8, 2))")
    r.execute_update("CREATE TABLE public.raw_t1 (a INT)")
    r.execute_update("CREATE VIEW public.raw_v1 AS SELECT a FROM public.raw_t1")
    return r


def names_types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


# --------------------------------------------------------------------------
# statements


def test_statement_query(raw):
    info = raw.flight_info(s.cmd_statement_query("SELECT value AS v, 'x' AS s FROM generate_series(1, 1000)"))
    assert names_types(info.schema) == [("v", pa.int64()), ("s", STR)]
    assert len(info.endpoints) >= 1
    table = raw.read_info(info)
    assert table.schema.equals(info.schema, check_metadata=False)
    assert table.num_rows == 1000
    assert sum(table.column("v").to_pylist()) == 1000 * 1001 // 2


def test_a_ticket_can_be_redeemed_again(raw):
    # The first DoGet runs the plan GetFlightInfo made; a second one plans again
    # from the ticket, with its parameters, and must return the same rows.
    handle, _, _ = raw.prepare("SELECT value * ? AS v FROM generate_series(1, 100)")
    handle = raw.bind(handle, pa.table({"p": pa.array([3], pa.int64())}))
    info = raw.flight_info(s.cmd_prepared_query(handle))
    first = raw.read_info(info)
    again = raw.read_info(info)
    assert first.column("v").to_pylist() == [3 * i for i in range(1, 101)]
    assert again.equals(first)


def test_queries_without_tables_answer_where_they_arrive(raw):
    # SELECT 1 and its kind are planned and run on the gRPC runtime (no FROM):
    # same answers, types, errors and tickets as every other query.
    info = raw.flight_info(s.cmd_statement_query("SELECT 1 AS one, 'a' || 'b' AS ab, 2.5 * 2 AS d"))
    first = raw.read_info(info)
    assert first.to_pylist() == [{"one": 1, "ab": "ab", "d": 5.0}]
    assert first.schema.equals(info.schema, check_metadata=False)
    assert raw.read_info(info).equals(first)  # a second DoGet plans again from the ticket
    assert "DataFusion" in raw.execute("SELECT version() AS v").column("v")[0].as_py()
    with pytest.raises(pa.ArrowInvalid, match="(?i)divide by zero"):
        raw.execute("SELECT 1 / 0")
    with pytest.raises(pa.ArrowInvalid):
        raw.execute("SELECT no_such_function(1)")
    assert raw.execute("SELECT 1 AS one").column("one").to_pylist() == [1]


def test_get_schema_matches_stream(raw):
    cmd = s.cmd_statement_query("SELECT CAST(1 AS INT) AS i, 'a' AS s, make_array('b') AS l")
    declared = raw.schema(cmd)
    streamed = raw.fetch(cmd).schema
    assert declared.equals(streamed, check_metadata=False)
    assert declared.field("l").type.value_type == STR


def test_statement_update_counts(raw):
    raw.execute_update("CREATE TABLE raw_counts (id BIGINT, v VARCHAR)")
    assert raw.execute_update("INSERT INTO raw_counts SELECT value, 'v' FROM generate_series(1, 250)") == 250
    assert raw.execute_update("UPDATE raw_counts SET v = 'w' WHERE id % 5 = 0") == 50
    assert raw.execute_update("DELETE FROM raw_counts WHERE id > 200") == 50
    assert raw.execute("SELECT count(*) AS c FROM raw_counts").column(0).to_pylist() == [200]


def test_prepared_query_with_parameters(raw):
    handle, dataset_schema, param_schema = raw.prepare(
        "SELECT value AS v FROM generate_series(1, 100) WHERE value > ? AND value <= ?"
    )
    assert dataset_schema is not None and dataset_schema.names == ["v"]
    assert param_schema is not None and len(param_schema) == 2
    params = pa.record_batch(
        [pa.array([10], param_schema.field(0).type), pa.array([15], param_schema.field(1).type)],
        schema=param_schema,
    )
    handle = raw.bind(handle, params)
    assert raw.execute_prepared(handle).column("v").to_pylist() == [11, 12, 13, 14, 15]
    # rebinding replaces the parameters
    params2 = pa.record_batch(
        [pa.array([97], param_schema.field(0).type), pa.array([1000], param_schema.field(1).type)],
        schema=param_schema,
    )
    handle = raw.bind(handle, params2)
    assert raw.execute_prepared(handle).column("v").to_pylist() == [98, 99, 100]
    raw.close_prepared(handle)


def test_a_prepared_query_sees_what_changed_after_it_was_prepared(raw):
    # The server keeps the plan CreatePreparedStatement made for the handle's
    # first execution; rows written, a table replaced or dropped in between
    # must show as they would had it been planned when it ran.
    sql = "SELECT sum(x) AS s FROM raw_replanned"
    raw.execute_update("CREATE TABLE raw_replanned (x BIGINT)")
    raw.execute_update("INSERT INTO raw_replanned VALUES (1)")
    handle, _, _ = raw.prepare(sql)
    raw.execute_update("INSERT INTO raw_replanned VALUES (2)")
    assert raw.execute_prepared(handle).column("s").to_pylist() == [3]

    handle, _, _ = raw.prepare(sql)
    raw.execute_update("DROP TABLE raw_replanned")
    raw.execute_update("CREATE TABLE raw_replanned (x BIGINT)")
    raw.execute_update("INSERT INTO raw_replanned VALUES (10), (20)")
    assert raw.execute_prepared(handle).column("s").to_pylist() == [30]
    assert raw.execute_prepared(handle).column("s").to_pylist() == [30]  # planned again

    handle, _, _ = raw.prepare(sql)
    raw.execute_update("CACHE TABLE raw_replanned")
    raw.execute_update("INSERT INTO raw_replanned VALUES (5)")
    assert raw.execute_prepared(handle).column("s").to_pylist() == [35]

    # Replaced in place with other columns: the handle's plan read the old ones.
    handle, _, _ = raw.prepare("SELECT * FROM raw_replanned")
    raw.execute_update("CREATE OR REPLACE TABLE raw_replanned AS SELECT 'a' AS label, CAST(7 AS BIGINT) AS x")
    assert raw.execute_prepared(handle).to_pylist() == [{"label": "a", "x": 7}]

    handle, _, _ = raw.prepare(sql)
    raw.execute_update("DROP TABLE raw_replanned")
    with pytest.raises(Exception) as exc:
        raw.execute_prepared(handle)
    s.assert_flight_code(exc.value, "NOT_FOUND")
    raw.close_prepared(handle)


def test_prepared_update_several_parameter_rows(raw):
    raw.execute_update("CREATE TABLE raw_prep (id BIGINT, s VARCHAR)")
    handle, _, param_schema = raw.prepare("INSERT INTO raw_prep VALUES (?, ?)")
    assert param_schema is not None and len(param_schema) == 2
    params = pa.record_batch([pa.array([1, 2, 3], pa.int64()), pa.array(["a", "b", "c"])], names=["p1", "p2"])
    assert raw.execute_prepared_update(handle, params) == 3
    raw.close_prepared(handle)
    assert raw.execute("SELECT id, s FROM raw_prep ORDER BY id").to_pylist() == [
        {"id": 1, "s": "a"},
        {"id": 2, "s": "b"},
        {"id": 3, "s": "c"},
    ]
    handle, _, _ = raw.prepare("DELETE FROM raw_prep WHERE id = ?")
    assert raw.execute_prepared_update(handle, pa.record_batch([pa.array([1, 3, 7], pa.int64())], names=["p"])) == 2
    raw.close_prepared(handle)


def test_ingest_command(raw):
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "s": ["x", "y", None]})
    assert raw.ingest("raw_ingested", data, if_not_exist="create", if_exists="fail") == 3
    assert raw.ingest("raw_ingested", data, if_not_exist="fail", if_exists="append") == 3
    assert raw.execute("SELECT count(*) AS c FROM raw_ingested").column(0).to_pylist() == [6]
    with pytest.raises(Exception) as exc:
        raw.ingest("raw_ingested", data, if_not_exist="create", if_exists="fail")
    try:
        s.assert_flight_code(exc.value, "ALREADY_EXISTS")
    except AssertionError:
        s.assert_flight_code(exc.value, "INVALID_ARGUMENT")
    with pytest.raises(Exception) as exc:
        raw.ingest("raw_never_created", data, if_not_exist="fail", if_exists="append")
    s.assert_flight_code(exc.value, "NOT_FOUND")


# --------------------------------------------------------------------------
# metadata commands


def test_get_catalogs(raw):
    info = raw.flight_info(s.cmd_get_catalogs())
    assert names_types(info.schema) == [("catalog_name", STR)]
    catalogs = raw.read_info(info).column(0).to_pylist()
    assert "contrail" in catalogs
    assert catalogs == sorted(catalogs)


def test_get_db_schemas(raw):
    info = raw.flight_info(s.cmd_get_db_schemas())
    assert names_types(info.schema) == [("catalog_name", STR), ("db_schema_name", STR)]
    rows = raw.read_info(info).to_pylist()
    pairs = {(r["catalog_name"], r["db_schema_name"]) for r in rows}
    assert {("contrail", "public"), ("contrail", "rawschema")} <= pairs
    assert rows == sorted(rows, key=lambda r: (r["catalog_name"] or "", r["db_schema_name"]))
    # catalog given, pattern given
    only = raw.fetch(s.cmd_get_db_schemas("contrail", "raw%")).to_pylist()
    assert only == [{"catalog_name": "contrail", "db_schema_name": "rawschema"}]
    assert raw.fetch(s.cmd_get_db_schemas("contrail", "r_wsch_ma")).num_rows == 1
    assert raw.fetch(s.cmd_get_db_schemas("other_catalog")).num_rows == 0


def test_get_tables(raw):
    info = raw.flight_info(s.cmd_get_tables(schema_pattern="public", table_pattern="raw_%"))
    assert names_types(info.schema) == [
        ("catalog_name", STR),
        ("db_schema_name", STR),
        ("table_name", STR),
        ("table_type", STR),
    ]
    rows = raw.fetch(s.cmd_get_tables(schema_pattern="public", table_pattern="raw_%")).to_pylist()
    by_name = {r["table_name"]: r for r in rows}
    assert {"raw_t1", "raw_v1"} <= set(by_name)
    assert by_name["raw_v1"]["table_type"] == "VIEW"
    assert by_name["raw_t1"]["catalog_name"] == "contrail"
    views = raw.fetch(s.cmd_get_tables(schema_pattern="public", table_types=["VIEW"])).to_pylist()
    assert "raw_v1" in {r["table_name"] for r in views}
    assert all(r["table_type"] == "VIEW" for r in views)


def test_get_tables_include_schema(raw):
    info = raw.flight_info(s.cmd_get_tables(schema_pattern="rawschema", include_schema=True))
    assert info.schema.names[-1] == "table_schema"
    assert info.schema.field("table_schema").type == pa.binary()
    rows = raw.read_info(info).to_pylist()
    (row,) = [r for r in rows if r["table_name"] == "things"]
    declared = pa.ipc.read_schema(pa.py_buffer(row["table_schema"]))
    streamed = raw.execute("SELECT * FROM rawschema.things").schema
    assert declared.equals(streamed, check_metadata=False)
    assert not declared.field("id").nullable


def test_get_table_types(raw):
    info = raw.flight_info(s.cmd_get_table_types())
    assert names_types(info.schema) == [("table_type", STR)]
    types = raw.read_info(info).column(0).to_pylist()
    assert "VIEW" in types
    assert types == sorted(types)


SQL_INFO = {
    "FLIGHT_SQL_SERVER_NAME": 0,
    "FLIGHT_SQL_SERVER_VERSION": 1,
    "FLIGHT_SQL_SERVER_ARROW_VERSION": 2,
    "FLIGHT_SQL_SERVER_READ_ONLY": 3,
    "FLIGHT_SQL_SERVER_SQL": 4,
    "FLIGHT_SQL_SERVER_TRANSACTION": 8,
    "FLIGHT_SQL_SERVER_CANCEL": 9,
    "SQL_DDL_SCHEMA": 501,
    "SQL_DDL_TABLE": 502,
    "SQL_IDENTIFIER_CASE": 503,
    "SQL_IDENTIFIER_QUOTE_CHAR": 504,
    "SQL_QUOTED_IDENTIFIER_CASE": 505,
    "SQL_NULL_ORDERING": 507,
    "SQL_KEYWORDS": 508,
    "SQL_NUMERIC_FUNCTIONS": 509,
    "SQL_STRING_FUNCTIONS": 510,
    "SQL_SYSTEM_FUNCTIONS": 511,
    "SQL_DATETIME_FUNCTIONS": 512,
    "SQL_SEARCH_STRING_ESCAPE": 513,
    "SQL_ANSI92_SUPPORTED_LEVEL": 526,
    "SQL_TRANSACTIONS_SUPPORTED": 563,
}


def test_get_sql_info(raw):
    info = raw.flight_info(s.cmd_get_sql_info())
    assert info.schema.field("info_name").type == pa.uint32()
    assert pa.types.is_union(info.schema.field("value").type)
    table = raw.read_info(info)
    values = dict(zip(table.column("info_name").to_pylist(), table.column("value").to_pylist()))
    missing = sorted(k for k, v in SQL_INFO.items() if v not in values)
    assert not missing, f"GetSqlInfo lacks {missing}"
    assert "contrail" in values[0].lower()
    assert values[1]
    assert values[3] is False  # read-write
    assert values[4] is True
    assert values[504] == '"'
    assert isinstance(values[508], list) and values[508], values[508]
    for fn_list in (509, 510, 512):
        assert isinstance(values[fn_list], list) and len(values[fn_list]) > 5, (fn_list, values[fn_list])
    assert "abs" in {f.lower() for f in values[509]}
    assert "upper" in {f.lower() for f in values[510]}
    assert values[563] is False
    # asking for some ids returns exactly those
    some = raw.fetch(s.cmd_get_sql_info([0, 504]))
    assert sorted(some.column("info_name").to_pylist()) == [0, 504]


def test_get_xdbc_type_info(raw):
    info = raw.flight_info(s.cmd_get_xdbc_type_info())
    expected = [
        "type_name",
        "data_type",
        "column_size",
        "literal_prefix",
        "literal_suffix",
        "create_params",
        "nullable",
        "case_sensitive",
        "searchable",
        "unsigned_attribute",
        "fixed_prec_scale",
        "auto_increment",
        "local_type_name",
        "minimum_scale",
        "maximum_scale",
        "sql_data_type",
        "datetime_subcode",
        "num_prec_radix",
        "interval_precision",
    ]
    assert info.schema.names == expected
    rows = raw.read_info(info).to_pylist()
    assert len(rows) >= 5
    assert rows == sorted(rows, key=lambda r: (r["data_type"], r["type_name"]))
    # filtering by a data type returns only that type (12 = VARCHAR, 4 = INTEGER)
    for code in (12, 4):
        filtered = raw.fetch(s.cmd_get_xdbc_type_info(code)).to_pylist()
        assert filtered and all(r["data_type"] == code for r in filtered), (code, filtered)


KEY_COLUMNS = [
    "pk_catalog_name",
    "pk_db_schema_name",
    "pk_table_name",
    "pk_column_name",
    "fk_catalog_name",
    "fk_db_schema_name",
    "fk_table_name",
    "fk_column_name",
    "key_sequence",
    "fk_key_name",
    "pk_key_name",
    "update_rule",
    "delete_rule",
]


def test_primary_and_foreign_keys_are_empty_with_correct_schemas(raw):
    info = raw.flight_info(s.cmd_get_keys("PrimaryKeys", "contrail", "rawschema", "things"))
    assert info.schema.names == [
        "catalog_name",
        "db_schema_name",
        "table_name",
        "column_name",
        "key_name",
        "key_sequence",
    ]
    assert info.schema.field("key_sequence").type == pa.int32()
    assert raw.read_info(info).num_rows == 0
    for kind in ("ImportedKeys", "ExportedKeys"):
        info = raw.flight_info(s.cmd_get_keys(kind, "contrail", "rawschema", "things"))
        assert info.schema.names == KEY_COLUMNS, kind
        assert info.schema.field("update_rule").type == pa.uint8()
        assert raw.read_info(info).num_rows == 0
    info = raw.flight_info(
        s.cmd_get_cross_reference(("contrail", "rawschema", "things"), ("contrail", "public", "raw_t1"))
    )
    assert info.schema.names == KEY_COLUMNS
    assert raw.read_info(info).num_rows == 0


def test_list_actions(raw):
    actions = {a.type for a in raw.client.list_actions(raw.options)}
    for required in (
        "CreatePreparedStatement",
        "ClosePreparedStatement",
        "CancelFlightInfo",
        "SetSessionOptions",
        "GetSessionOptions",
        "CloseSession",
    ):
        assert required in actions, (required, actions)
