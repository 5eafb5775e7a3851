//! Running statements off the gRPC runtime, and streaming their results.
//!
//! DataFusion runs on its own multi-threaded Tokio runtimes (see "Thread
//! Scheduling" in DataFusion's crate docs): the gRPC runtime only moves bytes.
//! There are two, the [`Lane`]s: one for sessions with `contrail.priority =
//! 'interactive'`, one for every other statement. Results flow through a small
//! bounded channel, so a slow client holds back the query instead of the server
//! buffering its result.

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

use contrail_planner::SessionSettings;
use contrail_planner::settings::Priority;

use crate::error::{Error, Result};

/// Batches in flight between the query and the gRPC stream.
const CHANNEL_DEPTH: usize = 2;
/// How long a cancellation of a not-yet-started query is remembered.
const CANCEL_MEMORY: Duration = Duration::from_secs(600);

/// Where a statement's CPU work runs.
///
/// Tokio serves a runtime's tasks in turn, so a short query on a runtime busy
/// with long ones waits a full turn of every long query's tasks at each step
/// (planning, each read, each batch): among 32 clients running a mix with
/// TPC-H Q6, a 5-7 ms point lookup took ~0.4-0.5 s (p50). Sessions that set
/// `contrail.priority = 'interactive'` get CPU threads of their own, shared only
/// with other interactive statements (~16-20 ms at equal priority). The kernel
/// shares the cores between the two sets of threads; the normal ones run at a
/// lower priority (`--normal-nice`), so interactive statements get the cores
/// first (~7-13 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Awaited where it is (on the gRPC runtime): a query that reads no table,
    /// see `contrail_planner::light`. Cheaper than the two thread hops. (Its
    /// cost is not bounded: a constant expression can still be expensive.)
    Here,
    /// The interactive CPU runtime.
    Interactive,
    /// The CPU runtime every other statement uses.
    Normal,
}

impl Lane {
    /// The lane of a statement of a session with `priority`; `light` when it reads no table.
    pub fn of(light: bool, priority: Priority) -> Self {
        match (light, priority) {
            (true, _) => Self::Here,
            (false, Priority::Interactive) => Self::Interactive,
            (false, Priority::Normal) => Self::Normal,
        }
    }

    /// The CPU lane of the session with `settings` (for statements that read tables).
    pub fn session(settings: &SessionSettings) -> Self {
        Self::of(false, settings.priority())
    }

    /// The lane of statement `sql` of the session with `settings`.
    pub fn sql(sql: &str, settings: &SessionSettings) -> Self {
        Self::of(contrail_planner::light::is_light_sql(sql), settings.priority())
    }
}

/// Lower the calling thread's scheduling priority to nice value `nice`, unless it
/// already runs lower (a server started under `nice -n 15` keeps 15: this never
/// raises a priority). On Linux the nice value belongs to the thread, and the
/// kernel gives a thread of nice 10 about a tenth of the CPU time of a nice 0
/// thread it competes with. Lowering needs no privilege; failing only costs the
/// priority, so it is logged.
#[cfg(target_os = "linux")]
fn lower_priority(nice: i32) {
    use rustix::process::{getpriority_process, setpriority_process};
    static WARNED: std::sync::Once = std::sync::Once::new();
    let lowered = match getpriority_process(None) {
        Ok(own) if own >= nice => Ok(()),
        _ => setpriority_process(None, nice),
    };
    if let Err(e) = lowered {
        WARNED.call_once(|| tracing::warn!(nice, error = %e, "cannot lower the normal CPU threads' priority"));
    }
}

/// Elsewhere `setpriority` would set the whole process's priority: not done.
#[cfg(not(target_os = "linux"))]
fn lower_priority(nice: i32) {
    static NOTED: std::sync::Once = std::sync::Once::new();
    NOTED.call_once(|| info!(nice, "thread priorities are only set on Linux"));
}

/// The CPU runtimes and the registry of running queries.
pub struct Executor {
    runtimes: Vec<Runtime>,
    normal: Handle,
    interactive: Handle,
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
    /// Two runtimes (normal and interactive) of `threads` workers each (default:
    /// one per core). Idle threads cost no CPU. The normal runtime's threads run
    /// at nice value `normal_nice` (0: the process's own priority), see [`Lane`].
    pub fn new(threads: Option<usize>, normal_nice: i32) -> Result<Self> {
        let mut runtimes = Vec::with_capacity(2);
        for (name, nice) in [("contrail-cpu", normal_nice), ("contrail-interactive", 0)] {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                b.worker_threads(n.max(1));
            }
            if nice > 0 {
                b.on_thread_start(move || lower_priority(nice));
            }
            // Deep statements recurse deeply (see contrail_planner::limits).
            b.thread_stack_size(contrail_planner::limits::THREAD_STACK_BYTES);
            match b.thread_name(name).enable_all().build() {
                Ok(rt) => runtimes.push(rt),
                Err(e) => {
                    // Dropping a runtime blocks, which panics inside the caller's runtime.
                    runtimes.into_iter().for_each(Runtime::shutdown_background);
                    return Err(Error::Internal {
                        message: format!("cannot start the {name} runtime: {e}"),
                    });
                }
            }
        }
        Ok(Self {
            normal: runtimes[0].handle().clone(),
            interactive: runtimes[1].handle().clone(),
            runtimes,
            running: DashMap::new(),
            cancelled_early: DashMap::new(),
        })
    }

    /// The normal CPU runtime, for work that is spawned rather than awaited here.
    pub fn handle(&self) -> &Handle {
        &self.normal
    }

    /// The runtime of `lane` ([`Lane::Here`] has none of its own: what it spawns
    /// goes to the normal one).
    pub fn handle_of(&self, lane: Lane) -> &Handle {
        match lane {
            Lane::Interactive => &self.interactive,
            Lane::Here | Lane::Normal => &self.normal,
        }
    }

    /// Run a future on the normal CPU runtime and wait for it.
    pub async fn run<F, T>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_in(Lane::Normal, None, fut).await
    }

    /// Run a future in `lane` and wait for it, dropped (and so stopped) after
    /// `timeout` if given, at its next await. Writes are one Delta commit at
    /// their end, so a statement stopped early leaves no trace.
    pub async fn run_in<F, T>(&self, lane: Lane, timeout: Option<Duration>, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let limited = async move {
            match timeout {
                Some(limit) => tokio::time::timeout(limit, fut)
                    .await
                    .unwrap_or(Err(Error::Timeout { limit })),
                None => fut.await,
            }
        };
        if lane == Lane::Here {
            return limited.await;
        }
        self.handle_of(lane).spawn(limited).await.map_err(|e| Error::Internal {
            message: format!("statement task failed: {e}"),
        })?
    }

    /// Start a query in `lane` (a CPU runtime). `start` plans and executes it and
    /// returns its output schema and stream. Returns the schema and a stream of
    /// batches; dropping the stream (client gone) stops the query, and so does
    /// `timeout` running out (the stream then ends with [`Error::Timeout`]).
    ///
    /// The returned stream ends cleanly only when the query ran to its end: a
    /// query that failed, was cancelled, timed out or panicked ends it with an
    /// error, after the batches already sent. So a client never mistakes a cut
    /// result for a whole one.
    pub async fn stream<F>(
        self: &Arc<Self>,
        lane: Lane,
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
        let registered = Registered {
            executor: Arc::clone(self),
            query_id,
        };
        let (schema_tx, schema_rx) = oneshot::channel();
        let (tx, rx) = mpsc::channel::<RecordBatch>(CHANNEL_DEPTH);
        // How the query ended; dropped unsent if its task panics.
        let (end_tx, end_rx) = oneshot::channel::<Result<()>>();
        self.handle_of(lane).spawn(async move {
            let id = &registered.query_id;
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
            // Everything the query waits for (planning, its next batch, room
            // in the channel while the client reads slowly) also waits for
            // a cancel, the deadline and the client leaving.
            macro_rules! or_stop {
                ($wait:expr) => {
                    tokio::select! {
                        biased;
                        () = token.cancelled() => {
                            info!(query_id = %id, "query cancelled");
                            Err(Some(contrail_planner::Error::Cancelled.into()))
                        }
                        () = tx.closed() => {
                            debug!(query_id = %id, "client went away; query stopped");
                            Err(None)
                        }
                        e = &mut expired => {
                            info!(query_id = %id, error = %e, "query stopped");
                            Err(Some(e))
                        }
                        done = $wait => Ok(done),
                    }
                };
            }
            let ended: std::result::Result<(), Option<Error>> = async {
                let (schema, stream) = match or_stop!(start) {
                    Ok(Ok(started)) => started,
                    Ok(Err(e)) | Err(Some(e)) => {
                        let _ = schema_tx.send(Err(e));
                        return Err(None);
                    }
                    Err(None) => return Err(None),
                };
                let _ = schema_tx.send(Ok(schema));
                let mut stream = crate::coalesce::ready_coalesce(stream);
                loop {
                    let batch = match or_stop!(stream.next())? {
                        None => return Ok(()),
                        Some(Ok(batch)) => batch,
                        Some(Err(e)) => return Err(Some(contrail_planner::Error::execution(e).into())),
                    };
                    let permit = or_stop!(tx.reserve())?.map_err(|_| None)?;
                    rows += batch.num_rows();
                    batches += 1;
                    permit.send(batch);
                }
            }
            .await;
            let _ = end_tx.send(match ended {
                Ok(()) => Ok(()),
                Err(Some(e)) => Err(e),
                // The client left, or planning failed (reported with the schema).
                Err(None) => Err(Error::Internal {
                    message: "query stopped".into(),
                }),
            });
            debug!(query_id = %id, rows, batches, elapsed_ms = started.elapsed().as_millis() as u64, "query stream done");
        });
        let schema = schema_rx.await.map_err(|_| Error::Internal {
            message: "query task ended before planning finished".into(),
        })??;
        let end = futures::stream::once(async move {
            match end_rx.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(Err(e)),
                Err(_) => Some(Err(Error::Internal {
                    message:
                        "the query task ended unexpectedly (a panic, or the server stopping); the result is incomplete"
                            .into(),
                })),
            }
        })
        .filter_map(std::future::ready);
        Ok((
            schema,
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok).chain(end),
        ))
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

/// A query in [`Executor::running`], removed however its task ends (panics too).
struct Registered {
    executor: Arc<Executor>,
    query_id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.executor.running.remove(&self.query_id);
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        for rt in self.runtimes.drain(..) {
            // May run inside the IO runtime (the last Arc can live in a task):
            // never block here.
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hold every thread of `handle`'s runtime (`threads` of them) until the
    /// returned sender is dropped.
    async fn occupy(handle: &Handle, threads: usize) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(std::sync::Mutex::new(held));
        for _ in 0..threads {
            let (busy_tx, busy) = oneshot::channel();
            let held = Arc::clone(&held);
            handle.spawn(async move {
                let _ = busy_tx.send(());
                // Blocks this worker thread, as a long query's batch would.
                let _ = held.lock().map(|held| held.recv());
            });
            busy.await.expect("a thread is taken");
        }
        release
    }

    /// Light statements are answered, and interactive ones run, while every
    /// normal CPU thread is busy; normal ones wait for a free thread.
    #[tokio::test]
    async fn lanes_do_not_wait_for_a_busy_normal_runtime() {
        let executor = Executor::new(Some(1), 0).expect("executor");
        let release = occupy(executor.handle(), 1).await;

        let normal = executor.run_in(Lane::Normal, None, async { Ok("normal") });
        tokio::pin!(normal);
        for lane in [Lane::Here, Lane::Interactive] {
            let other = executor.run_in(lane, None, async move { Ok(lane) });
            let raced = async {
                tokio::select! {
                    biased;
                    _ = &mut normal => panic!("ran on a CPU runtime whose only thread is busy"),
                    answer = other => answer,
                }
            };
            // Fails rather than hangs if `lane` shares the busy thread.
            let answer = tokio::time::timeout(Duration::from_secs(30), raced).await;
            assert_eq!(
                answer
                    .expect("answered while the normal runtime is busy")
                    .expect("answer"),
                lane
            );
        }
        drop(release);
        assert_eq!(normal.await.expect("normal"), "normal");
    }

    /// The nice value of the calling thread (Linux, /proc/thread-self/stat field 19).
    #[cfg(target_os = "linux")]
    fn thread_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest = stat.rsplit_once(')').expect("comm").1;
        rest.split_whitespace()
            .nth(16)
            .expect("nice")
            .parse()
            .expect("a number")
    }

    /// Normal statements run below the priority of interactive ones and of the
    /// gRPC threads; with `normal_nice` 0 nothing changes.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn normal_threads_run_at_the_configured_nice_value() {
        let own = thread_nice();
        assert!(own < 10, "the tests themselves run at nice {own}");
        let executor = Executor::new(Some(1), 10).expect("executor");
        let nice = |lane| executor.run_in(lane, None, async { Ok(thread_nice()) });
        assert_eq!(nice(Lane::Normal).await.expect("normal"), 10);
        assert_eq!(nice(Lane::Interactive).await.expect("interactive"), own);
        assert_eq!(nice(Lane::Here).await.expect("here"), own);
        // Blocking work spawned from a normal statement (file reads) runs there too.
        let blocking = executor
            .handle_of(Lane::Normal)
            .spawn_blocking(thread_nice)
            .await
            .expect("blocking");
        assert_eq!(blocking, 10);
        drop(executor);

        let plain = Executor::new(Some(1), 0).expect("executor");
        assert_eq!(
            plain
                .run_in(Lane::Normal, None, async { Ok(thread_nice()) })
                .await
                .expect("normal"),
            own
        );
    }

    /// A thread already running lower than asked keeps its priority.
    #[cfg(target_os = "linux")]
    #[test]
    fn lowering_never_raises_a_priority() {
        let nice = std::thread::spawn(|| {
            rustix::process::setpriority_process(None, 15).expect("nice 15");
            lower_priority(10);
            thread_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(nice, 15);
    }

    fn one_column() -> (SchemaRef, RecordBatch) {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).expect("batch");
        (schema, batch)
    }

    /// Start `batches` as a query's output stream.
    async fn streaming<S>(
        executor: &Arc<Executor>,
        id: &str,
        timeout: Option<Duration>,
        batches: S,
    ) -> futures::stream::BoxStream<'static, Result<RecordBatch>>
    where
        S: futures::Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
    {
        let (schema, _) = one_column();
        let start = async move {
            let stream: datafusion::execution::SendableRecordBatchStream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(Arc::clone(&schema), batches),
            );
            Ok((schema, stream))
        };
        let (_, rows) = executor
            .stream(Lane::Normal, id.into(), timeout, start)
            .await
            .expect("started");
        rows.boxed()
    }

    /// A query whose task panics halfway ends its result with an error, not
    /// with a clean end that would pass a cut result off as whole.
    #[tokio::test]
    async fn a_panic_mid_query_ends_the_result_with_an_error() {
        let executor = Arc::new(Executor::new(Some(1), 0).expect("executor"));
        let (_, batch) = one_column();
        let batches = futures::stream::iter([Ok(batch)]).chain(futures::stream::once(async {
            panic!("a bug in an operator");
        }));
        let got: Vec<_> = streaming(&executor, "q-panic", None, batches).await.collect().await;
        // The batch may still be held for coalescing when the panic comes.
        let (last, sent) = got.split_last().expect("an end");
        assert!(sent.len() <= 1 && sent.iter().all(Result::is_ok), "{got:?}");
        let err = last.as_ref().expect_err("the panic is reported");
        assert!(err.to_string().contains("incomplete"), "{err}");
        until_none_running(&executor).await; // a panicked query leaves the registry
    }

    /// Wait (bounded) until no query is registered as running.
    async fn until_none_running(executor: &Executor) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while executor.running() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the query stopped");
    }

    /// A client that stops reading does not keep a query alive: a cancel and
    /// the statement timeout stop it while it waits for room to send, and the
    /// client then reads what was sent and the reason.
    #[tokio::test]
    async fn a_query_waiting_on_a_slow_client_can_be_cancelled_and_timed_out() {
        /// Set when the query's stream is dropped: the query has stopped.
        struct Stopped(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Stopped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        async fn until_stopped(stopped: &std::sync::atomic::AtomicBool) {
            tokio::time::timeout(Duration::from_secs(30), async {
                while !stopped.load(std::sync::atomic::Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the query stopped while its client read nothing");
        }
        let executor = Arc::new(Executor::new(Some(1), 0).expect("executor"));
        let endless = |stopped: &Arc<std::sync::atomic::AtomicBool>| {
            let guard = Stopped(Arc::clone(stopped));
            futures::stream::repeat_with(move || {
                let _alive = &guard;
                Ok(one_column().1)
            })
        };

        let stopped = Arc::default();
        let rows = streaming(&executor, "q-cancel", None, endless(&stopped)).await;
        assert_eq!(executor.running(), 1);
        assert!(executor.cancel("q-cancel"));
        until_stopped(&stopped).await;
        let got: Vec<_> = rows.collect().await;
        let (last, sent) = got.split_last().expect("an end");
        assert!(sent.iter().all(Result::is_ok) && sent.len() <= CHANNEL_DEPTH, "{got:?}");
        assert!(
            last.as_ref().is_err_and(|e| e.to_string().contains("cancel")),
            "{last:?}"
        );

        let limit = Duration::from_millis(50);
        let stopped = Arc::default();
        let rows = streaming(&executor, "q-timeout", Some(limit), endless(&stopped)).await;
        until_stopped(&stopped).await;
        until_none_running(&executor).await;
        let got: Vec<_> = rows.collect().await;
        let last = got.last().expect("an end");
        assert!(matches!(last, Err(Error::Timeout { .. })), "{last:?}");
    }

    #[test]
    fn lane_follows_lightness_then_priority() {
        assert_eq!(Lane::of(true, Priority::Interactive), Lane::Here);
        assert_eq!(Lane::of(true, Priority::Normal), Lane::Here);
        assert_eq!(Lane::of(false, Priority::Interactive), Lane::Interactive);
        assert_eq!(Lane::of(false, Priority::Normal), Lane::Normal);
        let mut interactive = SessionSettings::default();
        interactive
            .set(contrail_planner::settings::PRIORITY, "interactive")
            .expect("priority");
        assert_eq!(Lane::sql("SELECT 1", &interactive), Lane::Here);
        assert_eq!(Lane::sql("SELECT * FROM t", &interactive), Lane::Interactive);
        assert_eq!(Lane::session(&SessionSettings::default()), Lane::Normal);
    }
}
