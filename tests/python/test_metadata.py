"""Catalog metadata through ADBC: get_objects at every depth, table schemas, types."""

from __future__ import annotations

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
import pytest

from support import Status, adbc_status, execute_update, query

SCHEMA = "sales"
TABLES = {
    # name: (DDL columns, table type family)
    "alpha_1": "id BIGINT NOT NULL, label VARCHAR, amount DECIMAL(10, 2), seen TIMESTAMP",
    "alpha_2": "x INT",
    "beta": "y DOUBLE, flag BOOLEAN",
}
VIEW = "v_alpha"


@pytest.fixture(scope="module")
def meta_conn(server):
    c = server.connect()
    for table, cols in TABLES.items():
        execute_update(c, f"CREATE TABLE {table} ({cols})")
    execute_update(c, f"INSERT INTO alpha_1 VALUES (1, 'one', 1.50, TIMESTAMP '2024-01-01 00:00:00')")
    execute_update(c, f"CREATE VIEW {VIEW} AS SELECT id, label FROM alpha_1")
    execute_update(c, f"CREATE SCHEMA {SCHEMA}")
    execute_update(c, f"CREATE TABLE {SCHEMA}.orders2 (order_id BIGINT, total DOUBLE)")
    yield c
    c.close()


def objects(conn, **kwargs) -> list[dict]:
    return conn.adbc_get_objects(**kwargs).read_all().to_pylist()


def schemas_of(rows, catalog="contrail") -> dict:
    for row in rows:
        if row["catalog_name"] == catalog:
            return {s["db_schema_name"]: s for s in (row["catalog_db_schemas"] or [])}
    return {}


def tables_of(rows, schema, catalog="contrail") -> dict:
    s = schemas_of(rows, catalog).get(schema)
    if s is None:
        return {}
    return {t["table_name"]: t for t in (s["db_schema_tables"] or [])}


# --------------------------------------------------------------------------


def test_depth_catalogs(meta_conn):
    rows = objects(meta_conn, depth="catalogs")
    names = [r["catalog_name"] for r in rows]
    assert "contrail" in names
    assert len(names) == len(set(names))
    assert all(r["catalog_db_schemas"] is None for r in rows)


def test_catalog_filter(meta_conn):
    assert [r["catalog_name"] for r in objects(meta_conn, depth="catalogs", catalog_filter="contrail")] == [
        "contrail"
    ]
    assert [r["catalog_name"] for r in objects(meta_conn, depth="catalogs", catalog_filter="con%")] == [
        "contrail"
    ]
    assert objects(meta_conn, depth="catalogs", catalog_filter="no_such_catalog") == []


def test_depth_db_schemas(meta_conn):
    rows = objects(meta_conn, depth="db_schemas")
    schemas = schemas_of(rows)
    assert {"public", SCHEMA} <= set(schemas)
    assert all(s["db_schema_tables"] is None for s in schemas.values())


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("sales", {SCHEMA}),
        ("sal%", {SCHEMA}),
        ("publi_", {"public"}),
        ("%ubl%", {"public"}),
        ("nomatch%", set()),
    ],
)
def test_db_schema_patterns(meta_conn, pattern, expected):
    rows = objects(meta_conn, depth="db_schemas", db_schema_filter=pattern)
    assert set(schemas_of(rows)) == expected


def test_depth_tables(meta_conn):
    rows = objects(meta_conn, depth="tables")
    public = tables_of(rows, "public")
    assert set(TABLES) | {VIEW} <= set(public)
    assert set(tables_of(rows, SCHEMA)) == {"orders2"}
    assert public[VIEW]["table_type"] == "VIEW"
    for t in TABLES:
        assert public[t]["table_type"] in ("TABLE", "BASE TABLE"), public[t]["table_type"]
        assert public[t]["table_columns"] is None


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("alpha_1", {"alpha_1"}),
        ("alpha_%", {"alpha_1", "alpha_2"}),
        ("alpha__", {"alpha_1", "alpha_2"}),
        ("al%1", {"alpha_1"}),
        ("%eta", {"beta"}),
        ("b_t_", {"beta"}),
        ("zzz%", set()),
    ],
)
def test_table_name_patterns(meta_conn, pattern, expected):
    rows = objects(meta_conn, depth="tables", db_schema_filter="public", table_name_filter=pattern)
    assert set(tables_of(rows, "public")) == expected


def test_table_types_filter(meta_conn):
    views = objects(meta_conn, depth="tables", db_schema_filter="public", table_types_filter=["VIEW"])
    assert set(tables_of(views, "public")) == {VIEW}
    table_type = tables_of(objects(meta_conn, depth="tables", table_name_filter="beta"), "public")["beta"][
        "table_type"
    ]
    base = objects(meta_conn, depth="tables", db_schema_filter="public", table_types_filter=[table_type])
    assert set(TABLES) <= set(tables_of(base, "public"))
    assert VIEW not in tables_of(base, "public")


def test_depth_columns(meta_conn):
    rows = objects(meta_conn, depth="all", db_schema_filter="public", table_name_filter="alpha_1")
    table = tables_of(rows, "public")["alpha_1"]
    cols = table["table_columns"]
    assert [c["column_name"] for c in cols] == ["id", "label", "amount", "seen"]
    assert [c["ordinal_position"] for c in cols] == [1, 2, 3, 4]
    by_name = {c["column_name"]: c for c in cols}
    # JDBC/XDBC type codes: BIGINT -5, VARCHAR 12, DECIMAL 3
    assert [by_name[c]["xdbc_data_type"] for c in ("id", "label", "amount")] == [-5, 12, 3]
    # nullability as declared: id NOT NULL (when the driver reports it)
    if by_name["id"]["xdbc_nullable"] is not None:
        assert by_name["id"]["xdbc_nullable"] == 0
        assert by_name["label"]["xdbc_nullable"] == 1


def test_columns_of_view_and_other_schema(meta_conn):
    rows = objects(meta_conn, depth="columns", table_name_filter="v_alpha")
    assert [c["column_name"] for c in tables_of(rows, "public")[VIEW]["table_columns"]] == ["id", "label"]
    rows = objects(meta_conn, depth="columns", db_schema_filter=SCHEMA)
    assert [c["column_name"] for c in tables_of(rows, SCHEMA)["orders2"]["table_columns"]] == [
        "order_id",
        "total",
    ]


def test_column_name_filter(meta_conn):
    rows = objects(meta_conn, depth="columns", table_name_filter="alpha_1", column_name_filter="am%")
    assert [c["column_name"] for c in tables_of(rows, "public")["alpha_1"]["table_columns"]] == ["amount"]
    rows = objects(meta_conn, depth="columns", table_name_filter="alpha_1", column_name_filter="_d")
    assert [c["column_name"] for c in tables_of(rows, "public")["alpha_1"]["table_columns"]] == ["id"]


def test_get_table_schema_matches_query_schema(meta_conn):
    for table in [*TABLES, VIEW]:
        declared = meta_conn.adbc_get_table_schema(table)
        streamed = query(meta_conn, f"SELECT * FROM {table}").schema
        assert declared.remove_metadata().equals(streamed.remove_metadata()), (table, declared, streamed)
    s = meta_conn.adbc_get_table_schema("alpha_1")
    assert s.field("id").type == pa.int64() and not s.field("id").nullable
    assert s.field("label").type == pa.string()
    assert s.field("amount").type == pa.decimal128(10, 2)
    other = meta_conn.adbc_get_table_schema("orders2", db_schema_filter=SCHEMA)
    assert other.names == ["order_id", "total"]


def test_get_table_schema_unknown_table(meta_conn):
    with pytest.raises(dbapi.Error) as exc:
        meta_conn.adbc_get_table_schema("no_such_table_xyz")
    assert adbc_status(exc.value) == Status.NOT_FOUND


def test_get_table_types(meta_conn):
    types = meta_conn.adbc_get_table_types()
    assert "VIEW" in types
    table_type = tables_of(objects(meta_conn, depth="tables", table_name_filter="beta"), "public")["beta"][
        "table_type"
    ]
    assert table_type in types
    assert len(types) == len(set(types))


def test_get_info(meta_conn):
    info = meta_conn.adbc_get_info()
    assert "contrail" in str(info.get("vendor_name", "")).lower(), info
    assert info.get("vendor_version"), info
    assert info.get("vendor_arrow_version"), info


def test_new_objects_appear_and_dropped_disappear(meta_conn, name):
    execute_update(meta_conn, f"CREATE TABLE {name} (a INT)")
    assert name in tables_of(objects(meta_conn, depth="tables", table_name_filter=name), "public")
    execute_update(meta_conn, f"DROP TABLE {name}")
    assert name not in tables_of(objects(meta_conn, depth="tables", table_name_filter=name), "public")


def test_tpch_tables_in_metadata(tpch_conn):
    rows = objects(tpch_conn, depth="tables", db_schema_filter="tpch")
    assert set(tables_of(rows, "tpch")) == {
        "nation",
        "region",
        "part",
        "supplier",
        "partsupp",
        "customer",
        "orders",
        "lineitem",
    }
    schema = tpch_conn.adbc_get_table_schema("lineitem", db_schema_filter="tpch")
    assert schema.equals(query(tpch_conn, "SELECT * FROM tpch.lineitem LIMIT 0").schema, check_metadata=False)
