//! Bulk ingest (Flight SQL `CommandStatementIngest`) into managed tables.
//!
//! ```text
//! DoPut batches ──one-shot scan──> round robin to N partitions
//!   ──project by name onto the table's columns (casts)──> N Parquet writers at once
//!   ──> one Delta commit: the table's creation, or an append on the version read
//! ```
//!
//! Replacing a table's contents goes through deltalake's own write (it removes
//! the old files and changes the schema in the same commit).

use arrow::compute::can_cast_types;
use arrow::datatypes::Schema;
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};

use crate::error::{Error, Result};

/// The schema a new managed table gets for data of `schema`: see
/// [`crate::stored::table_schema`].
pub(crate) fn table_schema_for(schema: &Schema, table: &str) -> Result<Schema> {
    crate::stored::table_schema(schema, table)
}

/// `input` with the table's columns, in the table's order and types, taken by
/// name from the data. Every table column must be in the data and the data may
/// have no other column; types convert as SQL casts do (a value that does not
/// convert fails the ingest when it is reached). A value is checked against the
/// column's Arrow type (a `UInt8` column refuses 300 although it is stored as a
/// SMALLINT), then converted to the stored type.
pub(crate) fn conform_to_table(input: LogicalPlan, table: &Schema, name: &str) -> Result<LogicalPlan> {
    let given = input.schema().clone();
    let columns =
        |fields: &arrow::datatypes::Fields| fields.iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    let refuse = |message: String| Err(Error::invalid("ingest", message));
    let mut exprs = Vec::with_capacity(table.fields().len());
    for stored in table.fields() {
        let field = &crate::stored::logical_field(stored);
        let Ok((qualifier, found)) = given.qualified_field_with_unqualified_name(field.name()) else {
            return refuse(format!(
                "'{name}' has column '{}', which the data does not (the data has: {})",
                field.name(),
                columns(given.fields())
            ));
        };
        if !can_cast_types(found.data_type(), field.data_type()) {
            return refuse(format!(
                "column '{}' of '{name}' is {}; the data's {} does not convert to it",
                field.name(),
                field.data_type(),
                found.data_type()
            ));
        }
        let column = Expr::Column(Column::from((qualifier, found)));
        let value = if found.data_type() == field.data_type() {
            column
        } else {
            crate::exact::cast_exact(column, found.data_type(), field.data_type())
        };
        exprs.push(if field.data_type() == stored.data_type() {
            if found.data_type() == field.data_type() {
                value
            } else {
                value.alias(field.name())
            }
        } else {
            Expr::Cast(datafusion::logical_expr::Cast::new(
                Box::new(value),
                stored.data_type().clone(),
            ))
            .alias(field.name())
        });
    }
    if let Some(extra) = given.fields().iter().find(|f| table.field_with_name(f.name()).is_err()) {
        return refuse(format!(
            "the data has column '{}', which '{name}' does not (its columns: {})",
            extra.name(),
            columns(table.fields())
        ));
    }
    LogicalPlanBuilder::from(input)
        .project(exprs)
        .and_then(LogicalPlanBuilder::build)
        .map_err(Error::plan)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, TimeUnit};
    use datafusion::logical_expr::table_scan;

    use super::*;

    fn scan(fields: Vec<Field>) -> LogicalPlan {
        table_scan(Some("ingest"), &Schema::new(fields), None)
            .and_then(LogicalPlanBuilder::build)
            .expect("scan")
    }

    #[test]
    fn new_tables_get_types_delta_stores() {
        let data = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("ls", DataType::LargeUtf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            Field::new("d", DataType::Date32, true),
        ]);
        let table = table_schema_for(&data, "t").expect("schema");
        let types: Vec<_> = table
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("id", DataType::Int64),
                ("ls", DataType::Utf8),
                ("ts", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))),
                ("d", DataType::Date32),
            ]
        );
        assert!(!table.field(0).is_nullable());
        assert!(table.field(1).is_nullable());
    }

    #[test]
    fn columns_are_taken_by_name_and_cast_to_the_table() {
        let table = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]);
        let data = scan(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("id", DataType::Int32, true),
        ]);
        let plan = conform_to_table(data, &table, "public.t").expect("conform");
        let out = plan.schema();
        assert_eq!(out.field(0).name(), "id");
        assert_eq!(out.field(0).data_type(), &DataType::Int64);
        assert_eq!(out.field(1).name(), "s");
        assert_eq!(out.field(1).data_type(), &DataType::Utf8);
    }

    #[test]
    fn missing_extra_or_unconvertible_columns_are_refused() {
        let table = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]);
        let refused = |fields: Vec<Field>| {
            let e = conform_to_table(scan(fields), &table, "public.t").expect_err("refused");
            assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
            e.to_string()
        };
        let missing = refused(vec![Field::new("id", DataType::Int64, false)]);
        assert!(missing.contains("has column 's', which the data does not"), "{missing}");
        let extra = refused(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("x", DataType::Int8, true),
        ]);
        assert!(extra.contains("the data has column 'x'"), "{extra}");
        let unconvertible = refused(vec![
            Field::new(
                "id",
                DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
                true,
            ),
            Field::new("s", DataType::Utf8, true),
        ]);
        assert!(
            unconvertible.contains("column 'id' of 'public.t' is Int64"),
            "{unconvertible}"
        );
    }
}
