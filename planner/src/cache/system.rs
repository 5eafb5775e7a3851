//! `system.cached_tables`: what is cached, and how much of the limit it takes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::error::DataFusionError;

use super::{State, TableCache};
use crate::error::{Error, Result};
use crate::system_table::SystemRows;

/// `system.cached_tables`: what is cached, and how much of the limit it takes.
#[derive(Debug)]
pub(super) struct CachedTablesRows {
    pub(super) cache: Arc<TableCache>,
}

#[async_trait]
impl SystemRows for CachedTablesRows {
    fn schema(&self) -> SchemaRef {
        cache_schema()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        let mut slots: Vec<(String, State, u64)> = self
            .cache
            .slots
            .iter()
            .map(|s| {
                (
                    s.key().clone(),
                    s.value().state.get(),
                    s.value().loads.load(Ordering::Acquire),
                )
            })
            .collect();
        slots.sort_by(|a, b| a.0.cmp(&b.0));
        let ready = |s: &State| match s {
            State::Ready(c) => Some(Arc::clone(c)),
            _ => None,
        };
        let (schemas, tables): (Vec<&str>, Vec<&str>) =
            slots.iter().map(|(k, ..)| k.split_once('.').unwrap_or(("", k))).unzip();
        let states: Vec<&str> = slots
            .iter()
            .map(|(_, s, _)| match s {
                State::Loading => "loading",
                State::Ready(_) => "ready",
                State::Failed(..) => "failed",
            })
            .collect();
        let rows: UInt64Array = slots.iter().map(|(_, s, _)| ready(s).map(|c| c.rows)).collect();
        let bytes: UInt64Array = slots
            .iter()
            .map(|(_, s, _)| ready(s).map(|c| c.memory.bytes()))
            .collect();
        let loaded: TimestampMillisecondArray = slots
            .iter()
            .map(|(_, s, _)| ready(s).map(|c| c.loaded_at_ms))
            .collect::<TimestampMillisecondArray>()
            .with_timezone("UTC");
        let load_ms: UInt64Array = slots.iter().map(|(_, s, _)| ready(s).map(|c| c.load_ms)).collect();
        let errors: StringArray = slots
            .iter()
            .map(|(_, s, _)| match s {
                State::Failed(e, _) => Some(e.as_str()),
                _ => None,
            })
            .collect();
        let loads: UInt64Array = slots.iter().map(|(.., n)| Some(*n)).collect();
        let limit: UInt64Array = slots.iter().map(|_| Some(self.cache.limit)).collect();
        RecordBatch::try_new(
            cache_schema(),
            vec![
                Arc::new(StringArray::from(schemas)),
                Arc::new(StringArray::from(tables)),
                Arc::new(StringArray::from(states)),
                Arc::new(rows),
                Arc::new(bytes),
                Arc::new(limit),
                Arc::new(loaded),
                Arc::new(load_ms),
                Arc::new(loads),
                Arc::new(errors),
            ],
        )
        .map_err(|e| Error::execution(DataFusionError::ArrowError(Box::new(e), None)))
    }
}

fn cache_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_schema", DataType::Utf8, false),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, true),
        Field::new("bytes", DataType::UInt64, true),
        Field::new("cache_limit_bytes", DataType::UInt64, false),
        Field::new(
            "loaded_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("load_ms", DataType::UInt64, true),
        Field::new("loads", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}
