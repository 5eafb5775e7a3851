//! Flight SQL metadata: catalogs, schemas, tables, table types, SQL info,
//! XDBC type info and (empty) key listings.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, SupportedSqlGrammar, XdbcDataType,
};
use contrail_planner::types::output_schema;
use contrail_planner::{CATALOG, Engine, SessionSettings};
use datafusion::datasource::TableType;

use crate::error::Result;

/// Table types we report, ordered by name as Flight SQL asks.
pub const TABLE_TYPES: [&str; 3] = ["SYSTEM TABLE", "TABLE", "VIEW"];

/// `CommandGetCatalogs`.
pub fn catalogs() -> Result<RecordBatch> {
    let mut b = GetCatalogsBuilder::new();
    b.append(CATALOG);
    Ok(b.build()?)
}

/// `CommandGetDbSchemas`, honouring the catalog filter and schema pattern.
pub fn db_schemas(engine: &Engine, cmd: CommandGetDbSchemas) -> Result<RecordBatch> {
    let mut b = cmd.into_builder();
    for schema in engine.catalog().schema_names() {
        b.append(CATALOG, &schema);
    }
    b.append(CATALOG, "information_schema");
    Ok(b.build()?)
}

/// `CommandGetTables`; with `include_schema`, each table's schema is exactly
/// what a `SELECT *` on it streams under `settings`.
pub async fn tables(engine: &Engine, settings: &SessionSettings, cmd: CommandGetTables) -> Result<RecordBatch> {
    let mut b = cmd.into_builder();
    for schema in engine.catalog().schema_names() {
        let provider = engine.catalog().schema_provider(&schema)?;
        let mut names = provider.table_names();
        names.sort();
        for name in names {
            let Ok(Some(table)) = provider.table(&name).await else {
                continue;
            };
            let kind = match table.table_type() {
                TableType::View => "VIEW",
                TableType::Temporary => "LOCAL TEMPORARY",
                TableType::Base => "TABLE",
            };
            let schema_out = output_schema(&table.schema(), settings.view_types());
            b.append(CATALOG, &schema, &name, kind, &schema_out)?;
        }
    }
    // information_schema, as DataFusion exposes it.
    let ctx = engine.context(settings)?;
    for name in [
        "tables",
        "views",
        "columns",
        "df_settings",
        "schemata",
        "routines",
        "parameters",
    ] {
        let sql_name = format!("{CATALOG}.information_schema.{name}");
        if let Ok(table) = ctx.table_provider(sql_name.as_str()).await {
            let schema_out = output_schema(&table.schema(), settings.view_types());
            b.append(CATALOG, "information_schema", name, "SYSTEM TABLE", &schema_out)?;
        }
    }
    Ok(b.build()?)
}

/// `CommandGetTableTypes`.
pub fn table_types() -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]));
    let array = arrow::array::StringArray::from(TABLE_TYPES.to_vec());
    Ok(RecordBatch::try_new(schema, vec![Arc::new(array)])?)
}

/// Schema of `CommandGetPrimaryKeys` results.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of `CommandGetImportedKeys`, `CommandGetExportedKeys` and
/// `CommandGetCrossReference` results.
pub fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// SQL keywords beyond SQL:2003 that DataFusion's parser knows.
const KEYWORDS: &[&str] = &[
    "ANALYZE",
    "ARRAY",
    "COPY",
    "EXPLAIN",
    "EXTERNAL",
    "FORMAT",
    "ILIKE",
    "LIMIT",
    "LOCATION",
    "OFFSET",
    "OPTIONS",
    "PARTITIONED",
    "QUALIFY",
    "REPLACE",
    "SHOW",
    "STORED",
    "STRUCT",
    "TBLPROPERTIES",
    "UNNEST",
    "UNSIGNED",
];
const NUMERIC_FUNCTIONS: &[&str] = &[
    "abs",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atan2",
    "atanh",
    "cbrt",
    "ceil",
    "cos",
    "cosh",
    "cot",
    "degrees",
    "exp",
    "factorial",
    "floor",
    "gcd",
    "isnan",
    "iszero",
    "lcm",
    "ln",
    "log",
    "log10",
    "log2",
    "nanvl",
    "pi",
    "pow",
    "power",
    "radians",
    "random",
    "round",
    "signum",
    "sin",
    "sinh",
    "sqrt",
    "tan",
    "tanh",
    "trunc",
];
const STRING_FUNCTIONS: &[&str] = &[
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "chr",
    "concat",
    "concat_ws",
    "ends_with",
    "initcap",
    "instr",
    "left",
    "length",
    "levenshtein",
    "lower",
    "lpad",
    "ltrim",
    "octet_length",
    "overlay",
    "position",
    "repeat",
    "replace",
    "reverse",
    "right",
    "rpad",
    "rtrim",
    "split_part",
    "starts_with",
    "strpos",
    "substr",
    "substring",
    "to_hex",
    "translate",
    "trim",
    "upper",
    "uuid",
];
const DATETIME_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "current_timestamp",
    "date_bin",
    "date_part",
    "date_trunc",
    "datepart",
    "datetrunc",
    "extract",
    "from_unixtime",
    "make_date",
    "now",
    "to_char",
    "to_date",
    "to_timestamp",
    "to_timestamp_micros",
    "to_timestamp_millis",
    "to_timestamp_nanos",
    "to_timestamp_seconds",
    "to_unixtime",
];
const SYSTEM_FUNCTIONS: &[&str] = &["arrow_typeof", "coalesce", "ifnull", "nullif", "nvl", "nvl2", "version"];

/// Everything `GetSqlInfo` reports: what the JDBC driver's `DatabaseMetaData`
/// and BI tools read when they connect.
pub fn sql_info() -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Contrail");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, true);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(SqlInfo::SqlNullOrdering, SqlNullOrdering::SqlNullsSortedHigh as i32);
    b.append(SqlInfo::SqlKeywords, KEYWORDS);
    b.append(SqlInfo::SqlNumericFunctions, NUMERIC_FUNCTIONS);
    b.append(SqlInfo::SqlStringFunctions, STRING_FUNCTIONS);
    b.append(SqlInfo::SqlSystemFunctions, SYSTEM_FUNCTIONS);
    b.append(SqlInfo::SqlDatetimeFunctions, DATETIME_FUNCTIONS);
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportedGroupBy, 3i32); // GROUP BY unrelated | beyond select
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32) | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    b.append(SqlInfo::SqlAnsi92SupportedLevel, 0b1i32); // ANSI-92 entry level
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    // The spec calls this an ordinal, but the Arrow JDBC driver (the one
    // client that reads it) tests it as a bitmask of SqlOuterJoinsSupportLevel.
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        (1 << SqlOuterJoinsSupportLevel::SqlLimitedOuterJoins as i32)
            | (1 << SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32),
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0b111i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0b111i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlSupportedSubqueries, 0b1111i32);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlSupportedUnions, 0b11i32);
    b.append(SqlInfo::SqlMaxBinaryLiteralLength, 0i64);
    b.append(SqlInfo::SqlMaxCharLiteralLength, 0i64);
    b.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInGroupBy, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInIndex, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInOrderBy, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInSelect, 0i64);
    b.append(SqlInfo::SqlMaxColumnsInTable, 0i64);
    b.append(SqlInfo::SqlMaxConnections, 0i64);
    b.append(SqlInfo::SqlMaxCursorNameLength, 0i64);
    b.append(SqlInfo::SqlMaxIndexLength, 0i64);
    b.append(SqlInfo::SqlDbSchemaNameLength, 0i64);
    b.append(SqlInfo::SqlMaxProcedureNameLength, 0i64);
    b.append(SqlInfo::SqlMaxCatalogNameLength, 0i64);
    b.append(SqlInfo::SqlMaxRowSize, 0i64);
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    b.append(SqlInfo::SqlMaxStatementLength, 0i64);
    b.append(SqlInfo::SqlMaxStatements, 0i64);
    b.append(SqlInfo::SqlMaxTableNameLength, 0i64);
    b.append(SqlInfo::SqlMaxTablesInSelect, 0i64);
    b.append(SqlInfo::SqlMaxUsernameLength, 0i64);
    b.append(SqlInfo::SqlDefaultTransactionIsolation, 0i64);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlSupportedTransactionsIsolationLevels, 0i32);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    b.append(SqlInfo::SqlSupportedResultSetTypes, 0b10i32); // forward only
    b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified, 0i32);
    b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly, 0b10i32); // read only
    b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive, 0i32);
    b.append(SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive, 0i32);
    b.append(SqlInfo::SqlBatchUpdatesSupported, true);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    Ok(b.build()?)
}

/// The types `GetXdbcTypeInfo` lists: those Contrail tables can store.
pub fn xdbc_type_info() -> Result<XdbcTypeInfoData> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let ty = |name: &str,
              dt: XdbcDataType,
              size: Option<i32>,
              prefix: Option<&str>,
              searchable: Searchable,
              unsigned: Option<bool>,
              params: Option<Vec<String>>,
              min_scale: Option<i32>,
              max_scale: Option<i32>| XdbcTypeInfo {
        type_name: name.into(),
        data_type: dt,
        column_size: size,
        literal_prefix: prefix.map(Into::into),
        literal_suffix: prefix.map(Into::into),
        create_params: params,
        nullable: Nullable::NullabilityNullable,
        case_sensitive: matches!(dt, XdbcDataType::XdbcVarchar),
        searchable,
        unsigned_attribute: unsigned,
        fixed_prec_scale: false,
        auto_increment: None,
        local_type_name: Some(name.into()),
        minimum_scale: min_scale,
        maximum_scale: max_scale,
        sql_data_type: dt,
        datetime_subcode: None,
        num_prec_radix: if unsigned.is_some() { Some(10) } else { None },
        interval_precision: None,
    };
    use Searchable::{Basic, Full};
    use XdbcDataType as X;
    for info in [
        ty("BOOLEAN", X::XdbcBit, Some(1), None, Basic, None, None, None, None),
        ty(
            "TINYINT",
            X::XdbcTinyint,
            Some(3),
            None,
            Basic,
            Some(false),
            None,
            None,
            None,
        ),
        ty(
            "BIGINT",
            X::XdbcBigint,
            Some(19),
            None,
            Basic,
            Some(false),
            None,
            None,
            None,
        ),
        ty(
            "BINARY",
            X::XdbcBinary,
            Some(i32::MAX),
            Some("X'"),
            Basic,
            None,
            None,
            None,
            None,
        ),
        ty(
            "VARCHAR",
            X::XdbcVarchar,
            Some(i32::MAX),
            Some("'"),
            Full,
            None,
            None,
            None,
            None,
        ),
        ty(
            "DECIMAL",
            X::XdbcDecimal,
            Some(38),
            None,
            Basic,
            Some(false),
            Some(vec!["precision".into(), "scale".into()]),
            Some(0),
            Some(38),
        ),
        ty(
            "INTEGER",
            X::XdbcInteger,
            Some(10),
            None,
            Basic,
            Some(false),
            None,
            None,
            None,
        ),
        ty(
            "SMALLINT",
            X::XdbcSmallint,
            Some(5),
            None,
            Basic,
            Some(false),
            None,
            None,
            None,
        ),
        ty(
            "FLOAT",
            X::XdbcFloat,
            Some(7),
            None,
            Basic,
            Some(false),
            None,
            None,
            None,
        ),
        ty(
            "DOUBLE",
            X::XdbcDouble,
            Some(15),
            None,
            Basic,
            Some(false),
            None,
            None,
            None,
        ),
        ty("DATE", X::XdbcDate, Some(10), Some("'"), Basic, None, None, None, None),
        ty(
            "TIMESTAMP",
            X::XdbcTimestamp,
            Some(26),
            Some("'"),
            Basic,
            None,
            None,
            Some(0),
            Some(6),
        ),
    ] {
        b.append(info);
    }
    Ok(b.build()?)
}
