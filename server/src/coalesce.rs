//! Small result batches merged into Flight-message-sized ones, without waiting.
//!
//! DataFusion hands out batches of `batch_size` rows (8192) whatever their width,
//! so a narrow result (a few integer columns) leaves as hundreds of ~256 KiB
//! messages, each with its own IPC header, HTTP/2 frames, write and client-side
//! decode. [`ready_coalesce`] merges consecutive small batches up to about one
//! message ([`MESSAGE_BYTES`]: 1.75 MiB, as cached tables are batched) but only
//! while the next batch is already there: when the query has nothing ready, what
//! is held goes out at once, so a slow query's first rows are never delayed.
//!
//! ```text
//! query ──8192-row batches──> ready_coalesce ──~1.75 MiB batches──> channel ──> DoGet
//!                             (flushes on Pending, on a large batch, at the end)
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use contrail_planner::types::{MESSAGE_BYTES, MESSAGE_MAX_ROWS, data_bytes};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use futures::{Stream, StreamExt};

/// `stream` with consecutive small batches merged while more are ready.
pub fn ready_coalesce(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    Box::pin(ReadyCoalesce {
        schema: stream.schema(),
        input: stream,
        held: Vec::new(),
        held_bytes: 0,
        held_rows: 0,
        next: None,
        done: false,
    })
}

struct ReadyCoalesce {
    schema: SchemaRef,
    input: SendableRecordBatchStream,
    /// Small batches waiting to go out together.
    held: Vec<RecordBatch>,
    held_bytes: usize,
    held_rows: usize,
    /// What came in after `held` was full: goes out (or starts the next group) next.
    next: Option<Result<RecordBatch>>,
    done: bool,
}

impl ReadyCoalesce {
    /// What is held, as one batch.
    fn flush(&mut self) -> Result<RecordBatch> {
        let held = std::mem::take(&mut self.held);
        (self.held_bytes, self.held_rows) = (0, 0);
        match <[RecordBatch; 1]>::try_from(held) {
            Ok([one]) => Ok(one),
            Err(many) => {
                concat_batches(&self.schema, &many).map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
            }
        }
    }

    /// Take `batch` into the group; `Some` when something must go out first.
    fn admit(&mut self, batch: RecordBatch) -> Option<Result<RecordBatch>> {
        let bytes = data_bytes(&batch);
        let rows = batch.num_rows();
        if bytes >= MESSAGE_BYTES / 2 {
            // Large enough on its own: never copied.
            if self.held.is_empty() {
                return Some(Ok(batch));
            }
            self.next = Some(Ok(batch));
            return Some(self.flush());
        }
        if !self.held.is_empty()
            && (self.held_bytes + bytes > MESSAGE_BYTES || self.held_rows + rows > MESSAGE_MAX_ROWS)
        {
            self.next = Some(Ok(batch));
            return Some(self.flush());
        }
        self.held.push(batch);
        self.held_bytes += bytes;
        self.held_rows += rows;
        None
    }
}

impl Stream for ReadyCoalesce {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(next) = this.next.take() {
            match next {
                Ok(batch) => {
                    if let Some(out) = this.admit(batch) {
                        return Poll::Ready(Some(out));
                    }
                }
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        loop {
            if this.done {
                return Poll::Ready((!this.held.is_empty()).then(|| this.flush()));
            }
            match this.input.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    if let Some(out) = this.admit(batch) {
                        return Poll::Ready(Some(out));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    if this.held.is_empty() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    // What came before the error goes out first.
                    this.next = Some(Err(e));
                    return Poll::Ready(Some(this.flush()));
                }
                Poll::Ready(None) => this.done = true,
                Poll::Pending if this.held.is_empty() => return Poll::Pending,
                // Nothing more is ready: do not make the client wait for it.
                Poll::Pending => return Poll::Ready(Some(this.flush())),
            }
        }
    }
}

impl RecordBatchStream for ReadyCoalesce {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::stream;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn ints(from: i64, rows: usize) -> RecordBatch {
        let values = Int64Array::from_iter_values(from..from + rows as i64);
        RecordBatch::try_new(schema(), vec![Arc::new(values)]).expect("batch")
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().expect("ints");
                col.values().to_vec()
            })
            .collect()
    }

    async fn collect(input: Vec<Result<RecordBatch>>) -> Vec<Result<RecordBatch>> {
        let stream = Box::pin(RecordBatchStreamAdapter::new(schema(), stream::iter(input)));
        ready_coalesce(stream).collect().await
    }

    #[tokio::test]
    async fn ready_small_batches_leave_as_few_message_sized_ones_in_order() {
        // 100 batches of 1000 rows x 8 bytes, all ready: 100,000 rows, 800 KB.
        let input: Vec<_> = (0..100).map(|i| Ok(ints(i * 1000, 1000))).collect();
        let out: Vec<RecordBatch> = collect(input).await.into_iter().collect::<Result<_>>().expect("ok");
        assert_eq!(values(&out), (0..100_000).collect::<Vec<_>>());
        // Capped by MESSAGE_MAX_ROWS (65,536 rows = 512 KiB here): two batches, not 100.
        assert_eq!(
            out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
            vec![65_000, 35_000]
        );
    }

    #[tokio::test]
    async fn large_batches_pass_through_unmerged_and_flush_what_was_held() {
        let wide = |rows: usize| {
            let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
            let text = "x".repeat(1024);
            let col = StringArray::from_iter_values(std::iter::repeat_n(text.as_str(), rows));
            RecordBatch::try_new(schema, vec![Arc::new(col)]).expect("batch")
        };
        let big = wide(1024); // ~1 MiB: at least half a message
        let small = wide(10);
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            big.schema(),
            stream::iter([Ok(small.clone()), Ok(small.clone()), Ok(big.clone()), Ok(small.clone())]),
        ));
        let out: Vec<RecordBatch> = ready_coalesce(stream).try_collect_vec().await;
        assert_eq!(
            out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
            vec![20, 1024, 10]
        );
    }

    #[tokio::test]
    async fn nothing_is_held_back_when_the_query_has_nothing_ready() {
        // The second batch only comes after the first reached the consumer.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(1);
        let stream = Box::pin(RecordBatchStreamAdapter::new(
            schema(),
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let mut out = ready_coalesce(stream);
        tx.send(Ok(ints(0, 10))).await.expect("send");
        let first = out.next().await.expect("a batch").expect("ok");
        assert_eq!(values(&[first]), (0..10).collect::<Vec<_>>());
        tx.send(Ok(ints(10, 5))).await.expect("send");
        drop(tx);
        let rest: Vec<RecordBatch> = out.try_collect_vec().await;
        assert_eq!(values(&rest), (10..15).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn rows_before_an_error_go_out_before_it() {
        let err = DataFusionError::Execution("boom".into());
        let out = collect(vec![Ok(ints(0, 3)), Ok(ints(3, 3)), Err(err), Ok(ints(6, 3))]).await;
        let batch = out[0].as_ref().expect("the rows before the error");
        assert_eq!(values(std::slice::from_ref(batch)), (0..6).collect::<Vec<_>>());
        assert!(matches!(&out[1], Err(e) if e.to_string().contains("boom")), "{out:?}");
    }

    trait TryCollectVec {
        async fn try_collect_vec(self) -> Vec<RecordBatch>;
    }

    impl TryCollectVec for SendableRecordBatchStream {
        async fn try_collect_vec(self) -> Vec<RecordBatch> {
            self.collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()
                .expect("no error")
        }
    }
}
