//! Determinism: histories recorded from real runs replay against the current
//! `QueryWorkflow`: `scan` (an aggregate over one table), `tpch_q3` (joins with
//! shuffles), `killed_worker` (a worker killed with -9 mid-query: timed-out and
//! retried activities), `fragment_failed` (a division by zero), `ctas` (`CREATE TABLE ... AS`: fragments
//! writing data files, then the commit activity); and `PipelineWorkflow`:
//! `pipeline_run` (plan, child query workflow, finish) and `pipeline_failed` (two
//! failed attempts with a timer between, then `on_error = 'fail'`). A change to the workflow's command
//! sequence fails here before it breaks running workflows.
//!
//! Record more with `examples/record_history.rs` (re-record after an intended
//! change to the command sequence, and version the workflow if old runs may be open).

use std::path::Path;

use contrail_workflows::pipeline::PipelineWorkflow;
use contrail_workflows::workflow::QueryWorkflow;
use prost::Message;
use temporalio_client::WorkflowHistory;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

#[tokio::test]
async fn recorded_histories_replay() {
    // Read when run, not when built: a build reused from a clone at another path
    // would otherwise look in that clone.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest_dir).join("tests/histories");
    let mut replayed = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("histories directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    entries.sort();
    for path in entries {
        let bytes = std::fs::read(&path).expect("read history");
        let history = History::decode(bytes.as_slice()).expect("decode history");
        assert!(history.events.len() > 3, "{}: empty history", path.display());
        let replayer = WorkflowReplayer::new(
            WorkflowReplayerOptions::new()
                .register_workflow::<QueryWorkflow>()
                .expect("register")
                .register_workflow::<PipelineWorkflow>()
                .expect("register")
                .build(),
        )
        .expect("replayer");
        if let Err(e) = replayer.replay_workflow(WorkflowHistory::from(history)).await {
            panic!("{} does not replay: {e}", path.display());
        }
        replayed.push(path);
    }
    assert!(replayed.len() >= 7, "expected recorded histories in {}", dir.display());
}
