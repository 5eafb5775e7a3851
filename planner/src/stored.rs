//! How Arrow types are kept in managed (Delta) tables, exactly.
//!
//! Delta has fewer types than Arrow. A column whose Arrow type Delta lacks is
//! stored as the nearest Delta type that holds every value exactly, and its Arrow
//! type is kept in the column's Delta metadata under [`ARROW_TYPE_KEY`]. Contrail
//! reads such a column back as it went in; a Delta reader that ignores the key
//! reads the stored type, which still shows the same value.
//!
//! | Arrow type                    | stored as                  | read back as   |
//! |-------------------------------|----------------------------|----------------|
//! | UInt8 / UInt16 / UInt32       | SMALLINT / INT / BIGINT    | the same type  |
//! | UInt64                        | DECIMAL(20, 0)             | UInt64         |
//! | Float16                       | FLOAT                      | Float16        |
//! | Date64                        | TIMESTAMP_NTZ              | Date64         |
//! | Time32 / Time64               | INT / BIGINT (since midnight, in the type's unit) | the same type |
//! | Duration                      | BIGINT (in the type's unit)| the same type  |
//! | Timestamp with a zone not UTC | TIMESTAMP (UTC)            | the zone kept  |
//! | Dictionary                    | its value type             | the dictionary |
//! | FixedSizeList                 | ARRAY                      | FixedSizeList  |
//! | Decimal32 / Decimal64         | DECIMAL(p, s)              | the same type  |
//!
//! Nested types are mapped field by field. Refused, naming the column and what to
//! use instead: INTERVAL (Delta has no interval), decimals of more than 38 digits,
//! unions and run-end encoded arrays. Delta's own normalisations stay as they
//! are: large and view strings, binaries and lists are stored as plain ones, and
//! timestamps hold microseconds (a nanosecond that would be lost is refused, see
//! [`crate::exact`]). Lists always come back with items named `item`, as
//! DataFusion makes them (Delta names them `element`).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use tracing::warn;

use crate::error::{Error, Result};

/// The Delta column metadata key holding a column's Arrow type, when Delta stores
/// it as another type.
pub const ARROW_TYPE_KEY: &str = "contrail.arrow_type";

/// The type a value of `dt` is stored as, or why it cannot be stored.
fn stored_type(dt: &DataType) -> std::result::Result<DataType, String> {
    use DataType::*;
    Ok(match dt {
        UInt8 => Int16,
        UInt16 => Int32,
        UInt32 => Int64,
        UInt64 => Decimal128(20, 0),
        Float16 => Float32,
        Date64 => Timestamp(TimeUnit::Microsecond, None),
        Time32(_) => Int32,
        Time64(_) => Int64,
        Duration(_) => Int64,
        Timestamp(_, Some(tz)) if !is_utc(tz) => Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.clone()),
        Decimal32(p, s) | Decimal64(p, s) => Decimal128(*p, *s),
        Decimal256(p, s) if *p <= 38 => Decimal128(*p, *s),
        Decimal256(p, _) => {
            return Err(format!(
                "DECIMAL({p}, ...) has more than 38 digits, the most a Delta table holds; \
                 use DECIMAL(38, s) if the values fit, or VARCHAR"
            ));
        }
        Interval(_) => {
            return Err("Delta tables have no INTERVAL type; store a Duration (e.g. \
                        arrow_cast(x, 'Duration(Microsecond)')) or its parts in separate columns"
                .to_string());
        }
        Union(..) | RunEndEncoded(..) => {
            return Err(format!("{dt} has no Delta type; store its values in plain columns"));
        }
        Dictionary(_, value) => stored_type(value)?,
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView => Binary,
        List(item) | LargeList(item) | ListView(item) | LargeListView(item) | FixedSizeList(item, _) => {
            List(stored_field(item)?)
        }
        Struct(fields) => Struct(
            fields
                .iter()
                .map(stored_field)
                .collect::<std::result::Result<Fields, String>>()?,
        ),
        Map(entries, sorted) => Map(stored_field(entries)?, *sorted),
        other => other.clone(),
    })
}

fn stored_field(field: &FieldRef) -> std::result::Result<FieldRef, String> {
    stored_type(field.data_type())
        .map(|dt| Arc::new(field.as_ref().clone().with_data_type(dt)))
        .map_err(|why| format!("field '{}': {why}", field.name()))
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "utc" | "+00:00" | "Z" | "+00" | "Etc/UTC")
}

/// The type Contrail reads back for `dt`: the same, up to Delta's own
/// normalisations (plain strings, binaries and lists; microsecond timestamps).
fn read_type(dt: &DataType) -> DataType {
    use DataType::*;
    let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(read_type(f.data_type())));
    match dt {
        Timestamp(_, tz) => Timestamp(TimeUnit::Microsecond, tz.clone()),
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView => Binary,
        List(item) | LargeList(item) | ListView(item) | LargeListView(item) => List(field(item)),
        FixedSizeList(item, n) => FixedSizeList(field(item), *n),
        Dictionary(key, value) => Dictionary(key.clone(), Box::new(read_type(value))),
        Struct(fields) => Struct(fields.iter().map(field).collect()),
        Map(entries, sorted) => Map(field(entries), *sorted),
        other => other.clone(),
    }
}

/// The schema a new managed table gets for data of `schema`: each column's stored
/// type, tagged with its Arrow type where they differ, as Delta reads it back.
/// Data files are written in exactly these types.
pub(crate) fn table_schema(schema: &Schema, table: &str) -> Result<Schema> {
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow as _, TryIntoKernel as _};
    let cannot =
        |message: String| Error::invalid("CREATE TABLE", format!("'{table}' cannot store this data: {message}"));
    let fields = schema
        .fields()
        .iter()
        .map(|field| {
            let stored = stored_type(field.data_type())
                .map_err(|why| cannot(format!("column '{}' is {}: {why}", field.name(), field.data_type())))?;
            let read = read_type(field.data_type());
            let mut metadata = field.metadata().clone();
            metadata.remove(ARROW_TYPE_KEY);
            if read != stored {
                metadata.insert(ARROW_TYPE_KEY.to_string(), read.to_string());
            }
            Ok(Field::new(field.name(), stored, field.is_nullable()).with_metadata(metadata))
        })
        .collect::<Result<Vec<_>>>()?;
    let kernel: StructType = (&Schema::new(fields))
        .try_into_kernel()
        .map_err(|e| cannot(e.to_string()))?;
    (&kernel).try_into_arrow().map_err(|e| cannot(e.to_string()))
}

/// The column a stored column reads back as: its Arrow type when the table keeps
/// one, list items named `item`; without the type tag.
pub fn logical_field(stored: &Field) -> Field {
    let mut metadata: HashMap<String, String> = stored.metadata().clone();
    let tagged = metadata
        .remove(ARROW_TYPE_KEY)
        .and_then(|tag| match DataType::from_str(&tag) {
            Ok(dt) => Some(dt),
            Err(e) => {
                warn!(column = %stored.name(), %tag, error = %e, "unreadable column type tag; reading the stored type");
                None
            }
        });
    let data_type = tagged.unwrap_or_else(|| items_named_item(stored.data_type()));
    Field::new(stored.name(), data_type, stored.is_nullable()).with_metadata(metadata)
}

/// A table's columns as Contrail reads them (see [`logical_field`]).
pub fn logical_schema(stored: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        stored.fields().iter().map(|f| logical_field(f)).collect::<Vec<_>>(),
        stored.metadata().clone(),
    ))
}

fn items_named_item(dt: &DataType) -> DataType {
    use DataType::*;
    let field = |f: &FieldRef, name: Option<&str>| {
        let f = f.as_ref().clone().with_data_type(items_named_item(f.data_type()));
        Arc::new(match name {
            Some(name) => f.with_name(name),
            None => f,
        })
    };
    match dt {
        List(item) => List(field(item, Some("item"))),
        LargeList(item) => LargeList(field(item, Some("item"))),
        FixedSizeList(item, n) => FixedSizeList(field(item, Some("item")), *n),
        Struct(fields) => Struct(fields.iter().map(|f| field(f, None)).collect()),
        Map(entries, sorted) => Map(field(entries, None), *sorted),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_a_table(dt: DataType) -> (DataType, DataType) {
        let schema = Schema::new(vec![Field::new("c", dt, true)]);
        let stored = table_schema(&schema, "t").expect("storable");
        let logical = logical_schema(&stored);
        (
            stored.field(0).data_type().clone(),
            logical.field(0).data_type().clone(),
        )
    }

    #[test]
    fn types_delta_lacks_come_back_as_they_went_in() {
        let list = |dt: DataType| DataType::List(Arc::new(Field::new_list_field(dt, true)));
        for dt in [
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
            DataType::Float16,
            DataType::Date64,
            DataType::Time32(TimeUnit::Second),
            DataType::Time64(TimeUnit::Nanosecond),
            DataType::Duration(TimeUnit::Millisecond),
            DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
            DataType::Timestamp(TimeUnit::Microsecond, Some("Europe/Paris".into())),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::FixedSizeList(Arc::new(Field::new_list_field(DataType::Int64, true)), 3),
            DataType::Decimal64(10, 2),
            list(DataType::UInt8),
            list(DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))),
            DataType::Struct(Fields::from(vec![
                Field::new("u", DataType::UInt32, false),
                Field::new("s", DataType::Utf8, true),
            ])),
        ] {
            let (stored, logical) = through_a_table(dt.clone());
            assert_ne!(stored, dt, "{dt} is not a Delta type");
            assert_eq!(logical, dt, "{dt} stored as {stored}");
            assert!(
                arrow::compute::can_cast_types(&stored, &logical) && arrow::compute::can_cast_types(&logical, &stored),
                "{dt} <-> {stored}"
            );
        }
    }

    #[test]
    fn delta_types_are_stored_untagged_and_lists_read_back_with_items_named_item() {
        for dt in [
            DataType::Int32,
            DataType::Utf8,
            DataType::Decimal128(38, 10),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Date32,
        ] {
            let schema = Schema::new(vec![Field::new("c", dt.clone(), true)]);
            let stored = table_schema(&schema, "t").expect("storable");
            assert!(stored.field(0).metadata().get(ARROW_TYPE_KEY).is_none(), "{dt}");
            assert_eq!(logical_schema(&stored).field(0).data_type(), &dt);
        }
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)));
        let (stored, logical) = through_a_table(list.clone());
        assert!(
            matches!(&stored, DataType::List(item) if item.name() == "element"),
            "{stored}"
        );
        assert_eq!(logical, list);
    }

    #[test]
    fn types_with_no_exact_home_are_refused_naming_the_column() {
        for (dt, says) in [
            (
                DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
                "INTERVAL",
            ),
            (DataType::Decimal256(40, 2), "38 digits"),
            (
                DataType::Struct(Fields::from(vec![Field::new(
                    "i",
                    DataType::Interval(arrow::datatypes::IntervalUnit::YearMonth),
                    true,
                )])),
                "field 'i'",
            ),
        ] {
            let schema = Schema::new(vec![Field::new("col", dt.clone(), true)]);
            let message = table_schema(&schema, "s.t").expect_err("refused").to_string();
            assert!(message.contains("column 'col'") && message.contains(says), "{message}");
        }
    }
}
