//! Writes never round a value: a conversion a write makes to fit a table's
//! column type that could drop precision is checked, value by value.
//!
//! Delta tables store timestamps in microseconds, while SQL's `TIMESTAMP` (and
//! much ingested data) is in nanoseconds. A plain cast divides, so
//! `2020-01-01T00:00:00.000000001` and `...002` would both be stored as
//! `...000000` (and then join as equal). Where a write narrows a timestamp, the
//! cast becomes `contrail_exact_cast(value, '<type>')`, which casts, and refuses
//! (INVALID_ARGUMENT, naming the value) any value that does not come back the
//! same. Values that fit (most data: whole microseconds) are stored as they are.
//!
//! ```text
//! INSERT: DataFusion's cast to the column type ──> checked when it narrows
//! CTAS / ingest / workflow writes: the projection to the table's types ──> same
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use arrow::util::display::array_value_to_string;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{DataFusionError, ExprSchema, ScalarValue};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, cast, lit,
};

/// The function's name in plans (and in plans sent to workers).
pub const EXACT_CAST: &str = "contrail_exact_cast";

/// `contrail_exact_cast(value, '<arrow type>')`: `value` cast to the type, or an
/// error when a value would not come back the same.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ExactCast {
    signature: Signature,
}

impl Default for ExactCast {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// The function, for registering in a session (every planner and worker context).
pub fn exact_cast_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(ExactCast::default()))
}

impl ScalarUDFImpl for ExactCast {
    fn name(&self) -> &str {
        EXACT_CAST
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Err(DataFusionError::Internal(format!(
            "{EXACT_CAST}: return_field_from_args answers"
        )))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> datafusion::common::Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        let to = match args.scalar_arguments.get(1) {
            Some(Some(ScalarValue::Utf8(Some(to)))) => to.parse::<DataType>()?,
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "{EXACT_CAST} takes a value and its target type as a constant string"
                )));
            }
        };
        Ok(Arc::new(Field::new(EXACT_CAST, to, nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        let to = args.return_field.data_type();
        let value = args
            .args
            .into_iter()
            .next()
            .ok_or_else(|| DataFusionError::Internal(format!("{EXACT_CAST} without arguments")))?;
        match value {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(exact(&array, to)?)),
            ColumnarValue::Scalar(scalar) => {
                let array = exact(&scalar.to_array()?, to)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?))
            }
        }
    }
}

/// `array` cast to `to`, refused if any value changes on the way.
///
/// The error is an Arrow cast error, so it reads as the statement's fault
/// (INVALID_ARGUMENT) wherever it surfaces, deltalake's writer included.
fn exact(array: &ArrayRef, to: &DataType) -> datafusion::common::Result<ArrayRef> {
    let strict = crate::types::STRICT_CAST;
    let cast = cast_with_options(array, to, &strict)?;
    // What the values are at full precision, and what the cast keeps of them.
    let (reference, kept) = match (array.data_type(), to) {
        // Text: parsed to nanoseconds (NULL where it is out of their range:
        // those have no digits past a microsecond to lose).
        (from, DataType::Timestamp(_, tz)) if !matches!(from, DataType::Timestamp(..)) => {
            let nanos = DataType::Timestamp(TimeUnit::Nanosecond, tz.clone());
            let reference = cast_with_options(array, &nanos, &CastOptions::default())?;
            (reference, cast_with_options(&cast, &nanos, &CastOptions::default())?)
        }
        _ => (Arc::clone(array), cast_with_options(&cast, array.data_type(), &strict)?),
    };
    let changed = |i: usize| reference.is_valid(i) && kept.slice(i, 1).as_ref() != reference.slice(i, 1).as_ref();
    let Some(at) = (0..array.len()).find(|&i| changed(i)) else {
        return Ok(cast);
    };
    let value = array_value_to_string(array, at).unwrap_or_else(|_| "a value".to_string());
    Err(DataFusionError::ArrowError(
        Box::new(arrow::error::ArrowError::CastError(format!(
            "{value} does not fit the column's type {to} without losing precision \
             (tables keep timestamps in microseconds): round it first, e.g. date_trunc('microsecond', ...)"
        ))),
        None,
    ))
}

/// Whether converting `from` to `to` can drop precision this module checks: a
/// timestamp to a coarser unit.
pub fn narrows(from: &DataType, to: &DataType) -> bool {
    fn rank(unit: &TimeUnit) -> u8 {
        match unit {
            TimeUnit::Second => 0,
            TimeUnit::Millisecond => 1,
            TimeUnit::Microsecond => 2,
            TimeUnit::Nanosecond => 3,
        }
    }
    match (from, to) {
        (DataType::Timestamp(a, _), DataType::Timestamp(b, _)) => rank(a) > rank(b),
        // Text parsed as a timestamp may carry nanoseconds.
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, DataType::Timestamp(b, _)) => {
            *b != TimeUnit::Nanosecond
        }
        _ => false,
    }
}

/// `expr` (of type `from`) as `to`: checked when the conversion narrows, a plain
/// cast otherwise, itself when the types are equal.
pub fn cast_exact(expr: Expr, from: &DataType, to: &DataType) -> Expr {
    if from == to {
        expr
    } else if narrows(from, to) {
        exact_cast_udf().call(vec![expr, lit(to.to_string())])
    } else {
        cast(expr, to.clone())
    }
}

/// `plan` (a write's input) with every narrowing cast checked: the casts
/// DataFusion adds to fit an `INSERT`'s values to the table's columns, or any
/// other in the plan.
pub fn check_casts(plan: LogicalPlan) -> crate::Result<LogicalPlan> {
    plan.transform_up(|node| {
        // Expressions read their node's input (VALUES has none: literals only).
        let schema = match node.inputs().first() {
            Some(input) => Arc::clone(input.schema()),
            None => Arc::new(datafusion::common::DFSchema::empty()),
        };
        node.map_expressions(|expr| expr.transform_up(|e| checked(e, schema.as_ref())))
    })
    .data()
    .map_err(crate::Error::plan)
}

fn checked(expr: Expr, schema: &dyn ExprSchema) -> datafusion::common::Result<Transformed<Expr>> {
    let Expr::Cast(Cast { expr: inner, field }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let data_type = field.data_type();
    let from = match inner.get_type(schema) {
        Ok(from) => from,
        Err(_) => return Ok(Transformed::no(expr)),
    };
    if narrows(&from, data_type) {
        let checked = exact_cast_udf().call(vec![inner.as_ref().clone(), lit(data_type.to_string())]);
        Ok(Transformed::yes(checked))
    } else {
        Ok(Transformed::no(expr))
    }
}

/// `plan` (rows for a new table) in the types the table stores (see
/// [`crate::stored`]): a column whose table type is coarser (see [`narrows`]) is
/// converted by [`cast_exact`], one Delta lacks is converted to its stored type
/// and carries its Arrow type as field metadata (which becomes the Delta column's);
/// `plan` itself when no column changes.
pub(crate) fn storable(plan: LogicalPlan, table: &str) -> crate::Result<LogicalPlan> {
    use datafusion::common::Column;
    use datafusion::logical_expr::LogicalPlanBuilder;
    use datafusion::logical_expr::expr::FieldMetadata;
    let stored = crate::stored::table_schema(plan.schema().as_arrow(), table)?;
    let given = Arc::clone(plan.schema());
    let changes = |field: &Field, to: &Field| {
        narrows(field.data_type(), to.data_type())
            || to.metadata().contains_key(crate::stored::ARROW_TYPE_KEY)
            || !field.data_type().equals_datatype(to.data_type())
    };
    if !given.fields().iter().zip(stored.fields()).any(|(g, s)| changes(g, s)) {
        return Ok(plan);
    }
    let exprs = given
        .iter()
        .zip(stored.fields())
        .map(|((qualifier, field), to)| {
            let column = Expr::Column(Column::from((qualifier, field)));
            if !changes(field, to) {
                return column;
            }
            let value = if narrows(field.data_type(), to.data_type()) {
                cast_exact(column, field.data_type(), to.data_type())
            } else {
                cast(column, to.data_type().clone())
            };
            let metadata = (!to.metadata().is_empty()).then(|| FieldMetadata::from(to.metadata()));
            value.alias_with_metadata(field.name(), metadata)
        })
        .collect::<Vec<_>>();
    LogicalPlanBuilder::from(plan)
        .project(exprs)
        .and_then(LogicalPlanBuilder::build)
        .map_err(crate::Error::plan)
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampNanosecondArray;

    use super::*;

    fn micros() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    }

    #[test]
    fn whole_microseconds_pass_and_nanoseconds_are_refused() {
        let fits: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![Some(1_000), None, Some(2_000_000)]));
        let cast = exact(&fits, &micros()).expect("whole microseconds fit");
        assert_eq!(cast.data_type(), &micros());
        assert_eq!(cast.null_count(), 1);

        let lossy: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
            Some(1_000),
            Some(1_577_836_800_000_000_001),
        ]));
        let e = exact(&lossy, &micros()).expect_err("a nanosecond is refused");
        assert!(e.to_string().contains("2020-01-01T00:00:00.000000001"), "{e}");
    }

    #[test]
    fn text_with_nanoseconds_is_refused_and_text_that_fits_passes() {
        use arrow::array::StringArray;
        let fits: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2020-01-01T00:00:00.000001"),
            None,
            Some("2020-01-01 00:00:00"),
            Some("3000-01-01T00:00:00"),
        ]));
        let cast = exact(&fits, &micros()).expect("whole microseconds fit, in any spelling");
        assert_eq!(cast.null_count(), 1);
        let lossy: ArrayRef = Arc::new(StringArray::from(vec!["2020-01-01T00:00:00.000000001"]));
        let e = exact(&lossy, &micros()).expect_err("a nanosecond is refused");
        assert!(matches!(e, DataFusionError::ArrowError(..)), "{e}");
    }

    #[test]
    fn only_coarser_timestamps_narrow() {
        let nanos = DataType::Timestamp(TimeUnit::Nanosecond, None);
        assert!(narrows(&nanos, &micros()));
        assert!(!narrows(&micros(), &nanos));
        assert!(!narrows(&DataType::Int64, &DataType::Int32));
        assert!(narrows(&DataType::Utf8, &micros()));
        assert!(!narrows(&DataType::Utf8, &nanos));
    }
}
