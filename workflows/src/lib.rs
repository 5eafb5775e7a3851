//! # contrail-workflows
//!
//! Long-running and distributed statements as Temporal workflows. Temporal
//! carries plans and tickets; the rows move as Arrow over Flight between workers
//! and from workers to clients.
//!
//! ```text
//!  server: plan -> stages (contrail_planner::distributed) -> QueryInput
//!     │ start QueryWorkflow (id = query id)            ┌──────── Temporal ────────┐
//!     ▼                                                 │ QueryWorkflow: stages in │
//!  WorkflowClient ── start / progress / cancel ───────► │ order, one activity per  │
//!                                                       │ fragment                 │
//!  worker (in `serve`, or `contrail worker`) ◄───────── └──────────────────────────┘
//!     FragmentActivities::run_fragment
//!        decode plan -> execute partition -> Spool (Arrow IPC on disk) -> FragmentTicket
//!        inputs: DoGet from the workers holding them (dataplane::FlightFetcher)
//!  client ── DoGet(spool ticket) ──► the worker named in each FlightInfo endpoint
//! ```
//!
//! * [`workflow`]: `QueryWorkflow` (deterministic; replay-tested).
//! * [`activities`]: the fragment activity, and committing or discarding a write's files.
//! * [`fragment`]: running one fragment into the spool.
//! * [`spool`]: fragment outputs on local disk, with a TTL.
//! * [`dataplane`]: spool tickets, serving and fetching outputs over Flight.
//! * [`pipeline`]: `PipelineWorkflow`, one run of a pipeline, and its activities.
//! * [`schedule`]: pipelines as Temporal Schedules (create, pause, trigger, drop).
//! * [`client`]: starting, polling and cancelling workflows.
//! * [`worker`]: the Temporal worker thread.
//! * [`embedded`]: the supervised `temporal server start-dev`.
//! * [`hold`]: a test hook holding write workflows at known points (inert unless set).

pub mod activities;
pub mod client;
pub mod dataplane;
pub mod embedded;
pub mod error;
pub mod fragment;
pub mod hold;
pub mod pipeline;
pub mod schedule;
pub mod spool;
pub mod worker;
pub mod workflow;

pub use client::{QueryState, TemporalTarget, WorkflowClient};
pub use error::{Error, Result};
pub use fragment::{FragmentRunner, FragmentTask, FragmentTicket};
pub use spool::Spool;
pub use workflow::{QueryInput, QueryOutput, QueryProgress, StageSpec};
