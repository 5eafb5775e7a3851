//! Sample data: the eight TPC-H tables, generated locally with `tpchgen`, loaded
//! as managed tables into the `tpch` schema.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};
use tracing::info;

use crate::engine::{Engine, IngestTarget};
use crate::error::{Error, Result};
use crate::settings::SessionSettings;

/// Schema the TPC-H tables are loaded into.
pub const TPCH_SCHEMA: &str = "tpch";

/// The TPC-H table names.
pub const TPCH_TABLES: [&str; 8] = [
    "nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem",
];

/// Load TPC-H at `scale_factor` into `tpch.*`, skipping tables that exist.
/// Returns the number of rows loaded.
pub async fn load_tpch(engine: &Engine, scale_factor: f64) -> Result<u64> {
    if !(scale_factor > 0.0 && scale_factor <= 100.0) {
        return Err(Error::invalid(
            "scale factor",
            format!("{scale_factor} (expected 0 < sf <= 100)"),
        ));
    }
    let mut settings = SessionSettings::default();
    engine
        .sql(&mut settings, &format!("CREATE SCHEMA IF NOT EXISTS {TPCH_SCHEMA}"))
        .await?;
    let mut total = 0u64;
    for table in TPCH_TABLES {
        if engine.catalog().schema_provider(TPCH_SCHEMA)?.table_exist(table) {
            continue;
        }
        let batches = generate(table, scale_factor)?;
        let Some(first) = batches.first() else { continue };
        let schema: SchemaRef = first.schema();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(batches.into_iter().map(Ok)),
        ));
        let target = IngestTarget {
            schema: Some(TPCH_SCHEMA.to_string()),
            table: table.to_string(),
            create: true,
            fail_if_exists: true,
            ..Default::default()
        };
        engine.ingest(&settings, target, schema, stream).await?;
        info!(table, rows, scale_factor, "loaded TPC-H table");
        total += rows as u64;
    }
    Ok(total)
}

fn generate(table: &str, sf: f64) -> Result<Vec<RecordBatch>> {
    const BATCH: usize = 64 * 1024;
    fn collect(it: impl Iterator<Item = Result<RecordBatch, arrow::error::ArrowError>>) -> Result<Vec<RecordBatch>> {
        it.collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid("TPC-H generator", e.to_string()))
    }
    match table {
        "nation" => collect(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        "region" => collect(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        "part" => collect(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        "supplier" => collect(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        "partsupp" => collect(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        "customer" => collect(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        "orders" => collect(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
        _ => collect(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(BATCH)),
    }
}
