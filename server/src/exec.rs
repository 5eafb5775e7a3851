//! Running statements off the gRPC runtime, and streaming their results.
//!
//! DataFusion runs on its own multi-threaded Tokio runtime (see "Thread
//! Scheduling" in DataFusion's crate docs): the gRPC runtime only moves bytes.
//! Results flow through a small bounded channel, so a slow client holds back
//! the query instead of the server buffering its result.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use dashmap::DashMap;
use futures::StreamExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::error::{Error, Result};

/// Batches in flight between the query and the gRPC stream.
const CHANNEL_DEPTH: usize = 2;
/// How long a cancellation of a not-yet-started query is remembered.
const CANCEL_MEMORY: Duration = Duration::from_secs(600);

/// The CPU runtime and the registry of running queries.
pub struct Executor {
    runtime: Option<Runtime>,
    handle: Handle,
    running: DashMap<String, CancellationToken>,
    cancelled_early: DashMap<String, Instant>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("running", &self.running.len())
            .finish()
    }
}

impl Executor {
    /// A dedicated runtime with `threads` workers (default: one per core).
    pub fn new(threads: Option<usize>) -> Result<Self> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = threads {
            b.worker_threads(n.max(1));
        }
        let runtime = b
            .thread_name("contrail-cpu")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal {
                message: format!("cannot start the CPU runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        Ok(Self {
            runtime: Some(runtime),
            handle,
            running: DashMap::new(),
            cancelled_early: DashMap::new(),
        })
    }

    /// The CPU runtime, for work that is spawned rather than awaited here.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Run a future on the CPU runtime and wait for it.
    pub async fn run<F, T>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_with_timeout(None, fut).await
    }

    /// [`Executor::run`], dropped (and so stopped) after `timeout`. Writes are
    /// one Delta commit at their end, so a statement stopped early leaves no trace.
    pub async fn run_with_timeout<F, T>(&self, timeout: Option<Duration>, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(async move {
                match timeout {
                    Some(limit) => tokio::time::timeout(limit, fut)
                        .await
                        .unwrap_or(Err(Error::Timeout { limit })),
                    None => fut.await,
                }
            })
            .await
            .map_err(|e| Error::Internal {
                message: format!("statement task failed: {e}"),
            })?
    }

    /// [`Executor::run_with_timeout`], or, when `light` (a query that reads no
    /// table, see `contrail_planner::light`), `fut` awaited where it is: planning
    /// it costs less than the two thread hops, and it does not queue behind the
    /// queries that keep the CPU runtime busy.
    pub async fn run_unless_light<F, T>(&self, light: bool, timeout: Option<Duration>, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        if light {
            fut.await
        } else {
            self.run_with_timeout(timeout, fut).await
        }
    }

    /// Start a query on the CPU runtime. `start` plans and executes it and
    /// returns its output schema and stream. Returns the schema and a stream of
    /// batches; dropping the stream (client gone) stops the query, and so does
    /// `timeout` running out (the stream then ends with [`Error::Timeout`]).
    pub async fn stream<F>(
        self: &Arc<Self>,
        query_id: String,
        timeout: Option<Duration>,
        start: F,
    ) -> Result<(
        SchemaRef,
        impl futures::Stream<Item = Result<RecordBatch>> + Send + 'static,
    )>
    where
        F: Future<Output = Result<(SchemaRef, datafusion::execution::SendableRecordBatchStream)>> + Send + 'static,
    {
        if self.cancelled_early.remove(&query_id).is_some() {
            return Err(contrail_planner::Error::Cancelled.into());
        }
        let token = CancellationToken::new();
        self.running.insert(query_id.clone(), token.clone());
        let (schema_tx, schema_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel::<Result<RecordBatch>>(CHANNEL_DEPTH);
        let this = Arc::clone(self);
        let id = query_id.clone();
        self.handle.spawn(async move {
            let started = Instant::now();
            let (mut rows, mut batches) = (0usize, 0usize);
            let expired = async move {
                match timeout {
                    Some(limit) => {
                        tokio::time::sleep(limit).await;
                        Error::Timeout { limit }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expired);
            let started_query = tokio::select! {
                started_query = start => started_query,
                e = &mut expired => Err(e),
            };
            match started_query {
                Err(e) => {
                    let _ = schema_tx.send(Err(e));
                }
                Ok((schema, stream)) => {
                    let _ = schema_tx.send(Ok(schema));
                    let mut stream = crate::coalesce::ready_coalesce(stream);
                    loop {
                        let next = tokio::select! {
                            biased;
                            () = token.cancelled() => {
                                let _ = tx.send(Err(contrail_planner::Error::Cancelled.into())).await;
                                info!(query_id = %id, "query cancelled");
                                break;
                            }
                            () = tx.closed() => {
                                debug!(query_id = %id, "client went away; query stopped");
                                break;
                            }
                            e = &mut expired => {
                                info!(query_id = %id, error = %e, "query stopped");
                                let _ = tx.send(Err(e)).await;
                                break;
                            }
                            next = stream.next() => next,
                        };
                        match next {
                            None => break,
                            Some(Ok(batch)) => {
                                rows += batch.num_rows();
                                batches += 1;
                                if tx.send(Ok(batch)).await.is_err() {
                                    break;
                                }
                            }
                            Some(Err(e)) => {
                                let _ = tx.send(Err(contrail_planner::Error::execution(e).into())).await;
                                break;
                            }
                        }
                    }
                }
            }
            this.running.remove(&id);
            debug!(query_id = %id, rows, batches, elapsed_ms = started.elapsed().as_millis() as u64, "query stream done");
        });
        let schema = schema_rx.await.map_err(|_| Error::Internal {
            message: "query task ended before planning finished".into(),
        })??;
        Ok((schema, tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// Cancel a query, running or not yet started. Returns whether it was running.
    pub fn cancel(&self, query_id: &str) -> bool {
        if let Some((_, token)) = self.running.remove(query_id) {
            token.cancel();
            return true;
        }
        let now = Instant::now();
        self.cancelled_early
            .retain(|_, at| now.duration_since(*at) < CANCEL_MEMORY);
        self.cancelled_early.insert(query_id.to_string(), now);
        false
    }

    /// Number of queries streaming right now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Cancel everything (shutdown).
    pub fn cancel_all(&self) {
        for entry in self.running.iter() {
            entry.value().cancel();
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // May run inside the IO runtime (the last Arc can live in a task):
            // never block here.
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A light statement is answered while every CPU thread is busy; any other
    /// waits for a free one.
    #[tokio::test]
    async fn light_work_does_not_wait_for_a_busy_cpu_runtime() {
        let executor = Executor::new(Some(1)).expect("executor");
        // Hold the one CPU thread until the test lets go.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (busy_tx, busy) = oneshot::channel();
        executor.handle().spawn(async move {
            let _ = busy_tx.send(());
            let _ = held.recv();
        });
        busy.await.expect("the CPU thread is taken");

        let heavy = executor.run_unless_light(false, None, async { Ok(2) });
        tokio::pin!(heavy);
        let light = executor.run_unless_light(true, None, async { Ok(1) });
        tokio::select! {
            biased;
            _ = &mut heavy => panic!("ran on a CPU runtime whose only thread is busy"),
            answer = light => assert_eq!(answer.expect("light"), 1),
        }
        release.send(()).expect("release");
        assert_eq!(heavy.await.expect("heavy"), 2);
    }
}
