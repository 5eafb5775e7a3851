//! Save a finished QueryWorkflow's history for the replay test.
//!
//! ```text
//! cargo run --release -p contrail-workflows --example record_history -- \
//!     127.0.0.1:7233 default <query id> workflows/tests/histories/<name>.bin
//! ```

use prost::Message;
use temporalio_common::protos::temporal::api::history::v1::History;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, namespace, workflow_id, out] = args.as_slice() else {
        return Err("usage: record_history HOST:PORT NAMESPACE WORKFLOW_ID OUT.bin".into());
    };
    let target = contrail_workflows::TemporalTarget {
        address: address.clone(),
        namespace: namespace.clone(),
        task_queue: String::new(),
    };
    let client = contrail_workflows::WorkflowClient::connect(target).await?;
    let events = client.history(workflow_id).await?;
    let bytes = History { events }.encode_to_vec();
    std::fs::write(out, &bytes)?;
    println!("{out}: {} bytes", bytes.len());
    Ok(())
}
