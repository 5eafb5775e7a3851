//! # contrail-planner
//!
//! Contrail's SQL front end and storage: everything between a SQL string and a
//! stream of Arrow record batches, with no networking.
//!
//! ```text
//!  server ──plan(settings, sql)──> Engine ──> Planned { query | write | DDL | SET }
//!         <──schema / parameter schema──
//!  server ──execute(settings, planned)──> Outcome::Rows(stream) | Outcome::Count(n)
//!                                           │
//!                      DataFusion 55 ───────┴──> Catalog ──> Delta tables (deltalake)
//!                                                        └─> views / external tables
//! ```
//!
//! * [`engine`]: parse, plan, execute; DDL and DML on managed Delta tables.
//! * [`catalog`]: the persistent catalog under the data directory.
//! * [`exact`]: writes never round a value (checked casts to a column's type).
//! * [`cache`]: `CACHE TABLE`: tables' rows held in memory, never older than the table.
//! * [`distributed`]: physical plans cut into stages and fragments for workflows.
//! * [`light`]: queries that read no table, run where they arrive.
//! * [`limits`]: bounds on a statement's length and nesting, checked before parsing.
//! * [`managed`]: the table provider for managed (Delta Lake) tables.
//! * [`orphans`]: data files of writes that never committed, removed at start.
//! * `ingest`: bulk ingest, written by every core and committed once.
//! * [`settings`]: per-session settings, carried inside tickets and handles.
//! * [`types`]: result type mapping (`Utf8View` -> `Utf8` unless asked).
//! * [`sample`]: TPC-H sample data generated locally.
//! * [`pipeline`]: the `CREATE PIPELINE` family of statements, parsed.
//! * [`pipeline_store`]: pipeline definitions and run records on disk; `system.pipelines`.
//! * [`pipeline_run`]: checking a pipeline at `CREATE`, and planning each run.
//! * [`sink`]: workflow and ingest writes: data files first, one commit at the end.
//! * [`stored`]: how Arrow types Delta lacks are stored exactly and read back.
//! * [`system_table`]: the `system.*` tables, computed afresh on every scan.

pub mod cache;
pub mod catalog;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod exact;
mod ingest;
mod latest;
pub mod light;
pub mod limits;
pub mod managed;
pub mod orphans;
pub mod pipeline;
pub mod pipeline_run;
pub mod pipeline_store;
pub mod sample;
pub mod settings;
pub mod sink;
pub mod stored;
pub mod system_table;
pub mod types;

pub use catalog::{CATALOG, Catalog, DEFAULT_SCHEMA};
pub use engine::{
    Engine, EngineOptions, FragmentedQuery, FragmentedWrite, IngestTarget, Outcome, Planned, Shape, StatementContext,
    count_schema,
};
pub use error::{Error, Result};
pub use settings::SessionSettings;
