//! Type mapping at the edges: results go out as `Utf8`/`Binary` unless the
//! session asks for view types, and bulk-ingest streams become a one-shot table.

use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, RecordBatch, RecordBatchOptions, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use futures::StreamExt;

/// Cast options that make a value that does not fit an error, never a NULL.
pub const STRICT_CAST: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow::util::display::FormatOptions::new(),
};

/// Whether `dt` is or contains a view type.
pub fn has_view_type(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8View | DataType::BinaryView => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            has_view_type(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().any(|f| has_view_type(f.data_type())),
        DataType::Dictionary(_, v) => has_view_type(v),
        _ => false,
    }
}

/// `dt` with every view type replaced by its plain counterpart.
pub fn without_view_types(dt: &DataType) -> DataType {
    let field = |f: &FieldRef| -> FieldRef {
        Arc::new(
            Field::new(f.name(), without_view_types(f.data_type()), f.is_nullable())
                .with_metadata(f.metadata().clone()),
        )
    };
    match dt {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(without_view_types(v))),
        other => other.clone(),
    }
}

/// `dt` with every dictionary replaced by its value type: results carry a
/// dictionary column's values (the encoders send no dictionary messages, so the
/// schema a client is promised says so too).
pub fn without_dictionaries(dt: &DataType) -> DataType {
    let field =
        |f: &FieldRef| -> FieldRef { Arc::new(f.as_ref().clone().with_data_type(without_dictionaries(f.data_type()))) };
    match dt {
        DataType::Dictionary(_, v) => without_dictionaries(v),
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Map(f, sorted) => DataType::Map(field(f), *sorted),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// `dt` with top-level `Utf8`/`Binary` turned into their view types.
fn with_view_types(dt: &DataType) -> DataType {
    match dt {
        DataType::Utf8 => DataType::Utf8View,
        DataType::Binary => DataType::BinaryView,
        other => other.clone(),
    }
}

/// Flight SQL column metadata (FlightSql.proto): JDBC's `getPrecision` and
/// `getScale` come from these keys, not from the Arrow type.
const PRECISION_KEY: &str = "ARROW:FLIGHT:SQL:PRECISION";
const SCALE_KEY: &str = "ARROW:FLIGHT:SQL:SCALE";

/// The schema a client sees for a plan's output schema: plain `Utf8`/`Binary`
/// by default, `Utf8View`/`BinaryView` when the session asks for view types;
/// dictionaries as their values; decimals carry their precision and scale as
/// Flight SQL column metadata.
pub fn output_schema(schema: &Schema, view_types: bool) -> SchemaRef {
    let map: fn(&DataType) -> DataType = if view_types {
        with_view_types
    } else {
        without_view_types
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let data_type = map(&without_dictionaries(f.data_type()));
            let mut metadata = f.metadata().clone();
            if let DataType::Decimal32(p, s)
            | DataType::Decimal64(p, s)
            | DataType::Decimal128(p, s)
            | DataType::Decimal256(p, s) = &data_type
            {
                metadata.insert(PRECISION_KEY.into(), p.to_string());
                metadata.insert(SCALE_KEY.into(), s.to_string());
            }
            Field::new(f.name(), data_type, f.is_nullable()).with_metadata(metadata)
        })
        .collect();
    if fields.iter().zip(schema.fields()).all(|(new, old)| new == old.as_ref()) {
        return Arc::new(schema.clone());
    }
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The data one result batch should hold: one Flight message, just under the
/// 2 MiB at which DoGet cuts messages (gRPC clients take 4 MiB by default).
/// Cached tables are batched to it and small result batches merged up to it.
pub const MESSAGE_BYTES: usize = 7 << 18;
/// ... and the rows it should hold at most.
pub const MESSAGE_MAX_ROWS: usize = 1 << 16;

/// Bytes of `batch`'s data (what goes on the wire), not of the buffers holding it.
pub fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Cast a stream's batches to [`output_schema`]; view columns that stay views
/// are compacted ([`compact_views`]).
pub fn map_output_stream(stream: SendableRecordBatchStream, view_types: bool) -> SendableRecordBatchStream {
    let input_schema = stream.schema();
    let target = output_schema(&input_schema, view_types);
    let keeps_views = target.fields().iter().any(|f| is_view(f.data_type()));
    if target == input_schema && !keeps_views {
        return stream;
    }
    let out_schema = target.clone();
    let mapped = stream.map(move |batch| {
        let batch = cast_batch(&batch?, &target).map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        Ok(if keeps_views { compact_views(batch) } else { batch })
    });
    Box::pin(RecordBatchStreamAdapter::new(out_schema, mapped))
}

fn is_view(dt: &DataType) -> bool {
    matches!(dt, DataType::Utf8View | DataType::BinaryView)
}

/// `batch` with its top-level `Utf8View`/`BinaryView` columns copied into
/// buffers of their own where they use less than half of the data buffers they
/// hold. A join's `take` or a filter leaves every output batch pointing into the
/// input's whole buffers, and Arrow IPC writes a view column's buffers whole:
/// a join's 750 K rows went to the spool as 2.1 GB (the batches shared one
/// build side's 17 MB of strings), and reading them back ran out of memory.
pub fn compact_views(batch: RecordBatch) -> RecordBatch {
    fn wasteful(held: usize, used: usize) -> bool {
        held > 2 * used
    }
    let mut columns = None::<Vec<ArrayRef>>;
    for (i, column) in batch.columns().iter().enumerate() {
        let compacted: Option<ArrayRef> = match column.data_type() {
            DataType::Utf8View => {
                let a = column.as_string_view();
                let held = a.data_buffers().iter().map(Buffer::len).sum();
                wasteful(held, a.total_buffer_bytes_used()).then(|| Arc::new(a.gc()) as ArrayRef)
            }
            DataType::BinaryView => {
                let a = column.as_binary_view();
                let held = a.data_buffers().iter().map(Buffer::len).sum();
                wasteful(held, a.total_buffer_bytes_used()).then(|| Arc::new(a.gc()) as ArrayRef)
            }
            _ => None,
        };
        if let Some(c) = compacted {
            columns.get_or_insert_with(|| batch.columns().to_vec())[i] = c;
        }
    }
    match columns {
        // Same types and lengths, so this cannot fail; keep the original if it did.
        Some(columns) => RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch),
        None => batch,
    }
}

/// `batch` with each column cast to `target`'s type (a no-op where they match).
pub fn cast_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let options = STRICT_CAST;
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                return Ok(c.clone());
            }
            if let Some(plain) = view_to_plain(c, f.data_type()) {
                return plain;
            }
            cast_with_options(c, f.data_type(), &options)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target.clone(), columns)
}

/// A top-level `Utf8View` → `Utf8` or `BinaryView` → `Binary` column in one
/// pass over its views (arrow's cast appends value by value through a
/// builder); `None` for every other pair, and
/// when the bytes outgrow `i32` offsets, so the generic cast reports it.
fn view_to_plain(column: &ArrayRef, to: &DataType) -> Option<Result<ArrayRef, ArrowError>> {
    match (column.data_type(), to) {
        (DataType::Utf8View, DataType::Utf8) => {
            let a = column.as_string_view();
            let (offsets, values) = plain_parts(a.views(), a.data_buffers(), a.nulls())?;
            Some(StringArray::try_new(offsets, values, a.nulls().cloned()).map(|a| Arc::new(a) as ArrayRef))
        }
        (DataType::BinaryView, DataType::Binary) => {
            let a = column.as_binary_view();
            let (offsets, values) = plain_parts(a.views(), a.data_buffers(), a.nulls())?;
            Some(BinaryArray::try_new(offsets, values, a.nulls().cloned()).map(|a| Arc::new(a) as ArrayRef))
        }
        _ => None,
    }
}

/// Offsets and bytes for views: a view's low 32 bits are its length; up to 12
/// bytes sit inline after it, longer values are (buffer, offset) pairs.
/// Null slots get no bytes, whatever their view says. Values of up to 32 bytes
/// are copied as a fixed 32 (the output has that much slack and is cut back at
/// the end): a fixed-size copy instead of a call to `memcpy` per value.
fn plain_parts(views: &[u128], buffers: &[Buffer], nulls: Option<&NullBuffer>) -> Option<(OffsetBuffer<i32>, Buffer)> {
    let total: usize = views.iter().map(|v| *v as u32 as usize).sum();
    i32::try_from(total).ok()?;
    let mut values = vec![0u8; total + 32];
    let mut offsets = Vec::with_capacity(views.len() + 1);
    offsets.push(0i32);
    let mut at = 0usize;
    for (i, view) in views.iter().enumerate() {
        let len = if nulls.is_some_and(|n| n.is_null(i)) {
            0
        } else {
            *view as u32 as usize
        };
        if len <= 12 {
            values[at..at + 12].copy_from_slice(&view.to_le_bytes()[4..16]);
        } else {
            let buffer = buffers.get((*view >> 64) as u32 as usize)?;
            let start = (*view >> 96) as u32 as usize;
            if len <= 32 && start + 32 <= buffer.len() {
                values[at..at + 32].copy_from_slice(&buffer[start..start + 32]);
            } else {
                values[at..at + len].copy_from_slice(buffer.get(start..start + len)?);
            }
        }
        at += len;
        // `at <= total`, checked to fit above.
        offsets.push(at as i32);
    }
    values.truncate(at);
    Some((OffsetBuffer::new(ScalarBuffer::from(offsets)), Buffer::from_vec(values)))
}

/// `batch` exactly as `promised` (the schema a client was told) describes it,
/// or an error: never a value changed on the way.
///
/// A client decodes every batch with the schema it was promised (FlightInfo,
/// GetSchema, the stream's first message), so a batch encoded under another
/// type is read as garbage (an `Int64` column read as `Int32`, a `UInt32` as an
/// `Int16`...). Where a batch differs, a column is cast to the promised type only
/// when casting it back gives the same values (a list's item named `element`
/// instead of `item`, an `Int64` whose values fit an `Int32`); a lossy
/// difference, or a NULL in a column promised NOT NULL, is an error naming the
/// column. With the promise taken from the physical plan (see
/// `Engine::output_schema`), this is a check that costs a pointer comparison.
pub fn conform(batch: RecordBatch, promised: &SchemaRef) -> crate::Result<RecordBatch> {
    let mismatch = |message: String| crate::Error::ResultMismatch { message };
    if Arc::ptr_eq(batch.schema_ref(), promised) {
        return Ok(batch);
    }
    if batch.schema().fields() == promised.fields() {
        // Only the schema's own metadata can differ.
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        return RecordBatch::try_new_with_options(Arc::clone(promised), batch.columns().to_vec(), &options)
            .map_err(|e| mismatch(e.to_string()));
    }
    if batch.num_columns() != promised.fields().len() {
        return Err(mismatch(format!(
            "a result batch has {} columns where its schema promised {}",
            batch.num_columns(),
            promised.fields().len()
        )));
    }
    let options = STRICT_CAST;
    let columns = batch
        .columns()
        .iter()
        .zip(promised.fields())
        .map(|(column, field)| {
            if !field.is_nullable() && column.null_count() > 0 {
                return Err(mismatch(format!(
                    "column '{}' was promised NOT NULL but holds {} NULL values",
                    field.name(),
                    column.null_count()
                )));
            }
            if column.data_type() == field.data_type() {
                return Ok(Arc::clone(column));
            }
            let lossy = || {
                mismatch(format!(
                    "column '{}' was promised as {} but computed as {}, and its values do not all fit",
                    field.name(),
                    field.data_type(),
                    column.data_type()
                ))
            };
            let cast = cast_with_options(column, field.data_type(), &options).map_err(|_| lossy())?;
            let back = cast_with_options(&cast, column.data_type(), &options).map_err(|_| lossy())?;
            if back.as_ref() != column.as_ref() {
                return Err(lossy());
            }
            Ok(cast)
        })
        .collect::<crate::Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(promised), columns).map_err(|e| mismatch(e.to_string()))
}

/// [`conform`] each batch of `stream` to `promised`.
pub fn conform_stream(stream: SendableRecordBatchStream, promised: SchemaRef) -> SendableRecordBatchStream {
    let out = Arc::clone(&promised);
    let conformed =
        stream.map(move |batch| conform(batch?, &promised).map_err(|e| DataFusionError::External(Box::new(e))));
    Box::pin(RecordBatchStreamAdapter::new(out, conformed))
}

/// A table whose single partition is a stream that can be read once.
#[derive(Debug)]
pub(crate) struct OneShotTable;

impl OneShotTable {
    #[allow(clippy::new_ret_no_self)]
    pub(crate) fn new(schema: SchemaRef, stream: SendableRecordBatchStream) -> StreamingTableProvider {
        StreamingTableProvider {
            schema: schema.clone(),
            inner: Arc::new(OneShot {
                schema,
                stream: Mutex::new(Some(stream)),
            }),
        }
    }
}

/// A [`StreamingTable`] over a [`OneShot`] partition.
#[derive(Debug)]
pub(crate) struct StreamingTableProvider {
    schema: SchemaRef,
    inner: Arc<OneShot>,
}

impl StreamingTableProvider {
    pub(crate) fn into_provider(self) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        Ok(Arc::new(StreamingTable::try_new(self.schema, vec![self.inner])?))
    }
}

struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneShot").field("schema", &self.schema).finish()
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = match self.stream.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        match taken {
            Some(s) => s,
            None => Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                futures::stream::once(async {
                    Err(DataFusionError::Execution("ingest stream already consumed".into()))
                }),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_types_map_recursively() {
        let dt = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert!(has_view_type(&dt));
        assert_eq!(
            without_view_types(&dt),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, false),
            Field::new("i", DataType::Int32, true),
        ]);
        let out = output_schema(&schema, false);
        assert_eq!(out.field(0).data_type(), &DataType::Utf8);
        assert_eq!(output_schema(&schema, true).field(0).data_type(), &DataType::Utf8View);
        let plain = Schema::new(vec![Field::new("s", DataType::Utf8, false)]);
        assert_eq!(output_schema(&plain, true).field(0).data_type(), &DataType::Utf8View);
    }

    fn one_column(array: ArrayRef, to: DataType) -> ArrayRef {
        let target = Arc::new(Schema::new(vec![Field::new("c", to, true)]));
        let batch = RecordBatch::try_from_iter([("c", array)]).expect("batch");
        cast_batch(&batch, &target).expect("cast").column(0).clone()
    }

    #[test]
    fn views_become_plain_arrays_equal_to_arrows_cast() {
        let long = "a value longer than twelve bytes, stored out of line";
        let values = [
            Some("short"),
            None,
            Some(long),
            Some(""),
            Some("exactly12byt"),
            Some("thirteen byte"),
            None,
        ];
        let views: ArrayRef = Arc::new(arrow::array::StringViewArray::from(values.to_vec()));
        let ours = one_column(views.clone(), DataType::Utf8);
        let arrows = cast_with_options(&views, &DataType::Utf8, &CastOptions::default()).expect("cast");
        assert_eq!(ours.as_ref(), arrows.as_ref());
        assert_eq!(ours.as_string::<i32>().value(2), long);
        assert_eq!(ours.null_count(), 2);

        // A slice reads its own views and validity, not the parent's.
        let sliced = one_column(views.slice(2, 4), DataType::Utf8);
        let expected: StringArray = values[2..6].iter().copied().collect();
        assert_eq!(sliced.as_string::<i32>(), &expected);

        let bytes: Vec<Option<&[u8]>> = vec![Some(b"\x00\xff"), None, Some(long.as_bytes())];
        let views: ArrayRef = Arc::new(arrow::array::BinaryViewArray::from(bytes.clone()));
        let plain = one_column(views, DataType::Binary);
        assert_eq!(plain.as_binary::<i32>(), &BinaryArray::from(bytes));
    }

    #[test]
    fn null_slots_contribute_no_bytes_whatever_their_view_says() {
        // A valid view over real bytes, then marked null (as a filter or a
        // join can leave it): the plain array must not carry those bytes.
        let full = arrow::array::StringViewArray::from(vec!["out of line value number one", "tiny"]);
        let (views, buffers, _) = full.into_parts();
        let nulls = NullBuffer::from(vec![false, true]);
        let masked: ArrayRef = Arc::new(arrow::array::StringViewArray::new(views, buffers, Some(nulls)));
        let plain = one_column(masked, DataType::Utf8);
        let plain = plain.as_string::<i32>();
        assert!(plain.is_null(0));
        assert_eq!(plain.value(1), "tiny");
        assert_eq!(plain.values().len(), 4);
    }

    #[test]
    fn views_pointing_into_large_buffers_are_compacted() {
        use arrow::array::{StringViewArray, UInt32Array};
        use arrow::compute::take;
        use arrow::ipc::writer::StreamWriter;

        fn ipc_len(batch: &RecordBatch) -> usize {
            let mut w = StreamWriter::try_new(Vec::new(), &batch.schema()).expect("writer");
            w.write(batch).expect("write");
            w.into_inner().expect("finish").len()
        }
        // 10,000 strings of 40 bytes (400 KB of buffers); take 10 of them, as a join does.
        let all = StringViewArray::from_iter_values((0..10_000).map(|i| format!("{i:0>40}")));
        let picked = take(&all, &UInt32Array::from(vec![3, 7, 9_999, 42, 3, 5, 6, 7, 8, 9]), None).expect("take");
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, false)]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![picked]).expect("batch");
        assert!(ipc_len(&batch) > 400_000, "the uncompacted batch carries all buffers");

        let compacted = compact_views(batch.clone());
        assert_eq!(compacted, batch, "same values");
        assert!(ipc_len(&compacted) < 2_000, "{} bytes", ipc_len(&compacted));

        // A batch that uses its buffers is passed through as it is.
        let whole = RecordBatch::try_new(schema, vec![Arc::new(all) as ArrayRef]).expect("batch");
        let kept = compact_views(whole.clone());
        assert!(kept.column(0).to_data().buffers()[1].ptr_eq(&whole.column(0).to_data().buffers()[1]));
    }

    fn promised(field: Field) -> SchemaRef {
        Arc::new(Schema::new(vec![field]))
    }

    #[test]
    fn batches_conform_to_their_promise_or_fail_without_changing_a_value() {
        use arrow::array::{Int32Array, Int64Array, ListArray, TimestampNanosecondArray};
        use arrow::datatypes::{Int64Type, TimeUnit};
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(3), None, Some(-7)]));
        let batch = RecordBatch::try_from_iter([("r", Arc::clone(&ints))]).expect("batch");

        // The same fields: the promise's schema, nothing else changed.
        let same = promised(Field::new("r", DataType::Int64, true));
        assert!(Arc::ptr_eq(
            conform(batch.clone(), &same).expect("same").schema_ref(),
            &same
        ));

        // Values that fit the promised type are cast, exactly.
        let narrower = promised(Field::new("r", DataType::Int32, true));
        let cast = conform(batch.clone(), &narrower).expect("fits");
        assert_eq!(
            cast.column(0).as_ref(),
            &Int32Array::from(vec![Some(3), None, Some(-7)]) as &dyn Array
        );

        // Values that do not fit: an error, never a wrapped or NULLed value.
        let big: ArrayRef = Arc::new(Int64Array::from(vec![3_000_000_000i64]));
        let big = RecordBatch::try_from_iter([("r", big)]).expect("batch");
        let e = conform(big, &narrower).expect_err("does not fit");
        assert!(e.to_string().contains("'r'"), "{e}");
        assert_eq!(e.kind(), crate::error::ErrorKind::Internal);

        // Sub-microsecond timestamps promised as microseconds: refused.
        let nanos: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![1_000_000_001i64]));
        let nanos = RecordBatch::try_from_iter([("t", nanos)]).expect("batch");
        let micros = promised(Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true));
        assert!(conform(nanos, &micros).is_err());

        // A NULL in a column promised NOT NULL: refused.
        let not_null = promised(Field::new("r", DataType::Int64, false));
        assert!(
            conform(batch, &not_null)
                .expect_err("null")
                .to_string()
                .contains("NOT NULL")
        );

        // A list whose item is named otherwise: relabelled, same values.
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![Some(1), Some(2)])]);
        let list = RecordBatch::try_from_iter([("l", Arc::new(list) as ArrayRef)]).expect("batch");
        let element = Arc::new(Field::new("element", DataType::Int64, true));
        let as_element = promised(Field::new("l", DataType::List(element), true));
        let relabelled = conform(list, &as_element).expect("relabel");
        assert_eq!(relabelled.schema_ref(), &as_element);
        assert_eq!(
            relabelled
                .column(0)
                .as_list::<i32>()
                .value(0)
                .as_primitive::<Int64Type>()
                .values(),
            &[1, 2]
        );
    }

    #[test]
    fn decimals_carry_precision_and_scale() {
        let schema = Schema::new(vec![
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("i", DataType::Int64, true),
        ]);
        let out = output_schema(&schema, false);
        assert_eq!(
            out.field(0).metadata().get(PRECISION_KEY).map(String::as_str),
            Some("10")
        );
        assert_eq!(out.field(0).metadata().get(SCALE_KEY).map(String::as_str), Some("2"));
        assert!(out.field(1).metadata().is_empty());
        let ints = Schema::new(vec![Field::new("i", DataType::Int64, true)]);
        assert_eq!(output_schema(&ints, false).as_ref(), &ints);
    }
}
