//! DoGet's wire encoding: query results leave as Arrow IPC messages framed as
//! `FlightData` without first being assembled into one body in memory.
//!
//! ```text
//! stock:  columns ─copy─> IPC body Vec (grows as it fills) ─copy─> tonic send buffer
//! here:   columns ─────── IPC buffer list (points at the columns) ─copy─> tonic send buffer
//! ```
//!
//! arrow-ipc's [`StreamEncoder`] lays a batch out as a list of buffers that point
//! at the columns themselves; [`FrameEncoder`] writes the `FlightData` protobuf
//! fields (`data_header`, `data_body`) around them straight into tonic's send
//! buffer. One copy of the data instead of two (and no regrowth), which was the
//! largest removable cost of a large `SELECT *` (FLIGHT_NOTES.md; `benches/results/changes.md`).
//!
//! [`FlightRouter`] serves `DoGet` with this codec and hands every other method
//! to arrow-flight's generated `FlightServiceServer`. Results that are already
//! `FlightData` (metadata, spooled or relayed workflow partitions) pass through as
//! [`Frame::Flight`], encoded exactly as the stock codec would.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::ipc::writer::{IpcWriteOptions, StreamEncoder};
use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::encode::{FlightDataEncoderBuilder, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, SchemaAsIpc, Ticket};
use bytes::{BufMut, Bytes};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::flight::ContrailFlight;

/// The gRPC path of `DoGet`.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// `FlightData.data_header` (field 2, length-delimited).
const DATA_HEADER_TAG: u8 = 2 << 3 | 2;
/// `FlightData.data_body` (field 1000, length-delimited) as its varint key.
const DATA_BODY_TAG: [u8; 2] = [0xC2, 0x3E];

/// One message of a DoGet response.
pub enum Frame {
    /// A `FlightData` built elsewhere; encoded as tonic's prost codec would.
    Flight(FlightData),
    /// One Arrow IPC message: its flatbuffer header, and its body as the
    /// buffers it is made of (`body_len` bytes in all).
    Ipc {
        header: Bytes,
        body: Vec<Buffer>,
        body_len: usize,
    },
}

/// A response stream of frames.
pub type Frames = BoxStream<'static, Result<Frame, Status>>;

/// A stream of `FlightData` as frames.
pub fn flight_frames(stream: impl Stream<Item = Result<FlightData, Status>> + Send + 'static) -> Frames {
    stream.map_ok(Frame::Flight).boxed()
}

/// Encode a query's output: the schema message, then each batch (split to
/// ~2 MiB messages, as arrow-flight does, so that clients with gRPC's default
/// 4 MiB receive limit, such as the JDBC driver, can read them).
///
/// Schemas with dictionaries take arrow-flight's own encoder, which sends their
/// values instead (dictionary messages have no place in Flight SQL results).
pub fn batch_frames(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
) -> Result<Frames> {
    if schema.fields().iter().any(|f| has_dictionary(f.data_type())) {
        let batches = batches.map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
        let encoded = FlightDataEncoderBuilder::new().with_schema(schema).build(batches);
        return Ok(flight_frames(encoded.map_err(|e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::from(Error::from(other)),
        })));
    }
    let options = IpcWriteOptions::default();
    let head = Frame::Flight(FlightData::from(SchemaAsIpc::new(&schema, &options)));
    let mut encoder = StreamEncoder::try_new_with_options(&schema, options)?;
    let body = batches
        .map(move |batch| {
            let mut frames = Vec::new();
            for piece in split(&batch?, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES) {
                ipc_frames(encoder.encode(&piece)?, &mut frames)?;
            }
            Ok::<_, Error>(stream::iter(frames.into_iter().map(Ok)))
        })
        .map_err(Status::from)
        .try_flatten();
    Ok(stream::once(async { Ok(head) }).chain(body).boxed())
}

fn has_dictionary(dt: &DataType) -> bool {
    match dt {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields.iter().any(|(_, f)| has_dictionary(f.data_type())),
        DataType::RunEndEncoded(_, values) => has_dictionary(values.data_type()),
        _ => false,
    }
}

/// `batch` cut into row ranges of about `max_bytes` each (zero-copy slices).
fn split(batch: &RecordBatch, max_bytes: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let size: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum();
    let pieces = size.div_ceil(max_bytes.max(1)).max(1);
    if pieces == 1 || rows <= 1 {
        return vec![batch.clone()];
    }
    let per_piece = rows.div_ceil(pieces);
    (0..rows)
        .step_by(per_piece)
        .map(|offset| batch.slice(offset, per_piece.min(rows - offset)))
        .collect()
}

/// Split IPC stream-format output (`[0xFFFFFFFF][len][header][body]...`) into
/// one frame per message. The body buffers are slices, not copies; the stream's
/// own schema message is skipped (the response already began with one).
fn ipc_frames(buffers: Vec<Buffer>, out: &mut Vec<Frame>) -> Result<()> {
    let mut rope = Rope::new(buffers);
    while !rope.is_empty() {
        let mut len = rope.read_i32()?;
        if len == -1 {
            len = rope.read_i32()?; // continuation marker, then the length
        }
        let len = usize::try_from(len).map_err(|_| malformed("negative message length"))?;
        if len == 0 {
            break; // end of stream
        }
        let header = Bytes::from(rope.read_vec(len)?);
        let message = root_as_message(&header).map_err(|e| malformed(&e.to_string()))?;
        let body_len = usize::try_from(message.bodyLength()).map_err(|_| malformed("negative body length"))?;
        let is_schema = message.header_type() == MessageHeader::Schema;
        let body = rope.take(body_len)?;
        if !is_schema {
            out.push(Frame::Ipc { header, body, body_len });
        }
    }
    Ok(())
}

fn malformed(what: &str) -> Error {
    Error::Internal {
        message: format!("malformed IPC stream from the encoder: {what}"),
    }
}

/// A byte sequence made of buffers, read front to back.
struct Rope {
    buffers: std::collections::VecDeque<Buffer>,
}

impl Rope {
    fn new(buffers: Vec<Buffer>) -> Self {
        Self {
            buffers: buffers.into_iter().filter(|b| !b.is_empty()).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }

    /// The next `n` bytes as slices of the buffers that hold them.
    fn take(&mut self, mut n: usize) -> Result<Vec<Buffer>> {
        let mut out = Vec::new();
        while n > 0 {
            let front = self
                .buffers
                .pop_front()
                .ok_or_else(|| malformed("message runs past the end"))?;
            if front.len() <= n {
                n -= front.len();
                out.push(front);
            } else {
                out.push(front.slice_with_length(0, n));
                self.buffers.push_front(front.slice(n));
                n = 0;
            }
        }
        Ok(out)
    }

    /// The next `n` bytes, copied (message headers: a few hundred bytes).
    fn read_vec(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        for b in self.take(n)? {
            out.extend_from_slice(b.as_slice());
        }
        Ok(out)
    }

    fn read_i32(&mut self) -> Result<i32> {
        let bytes = self.read_vec(4)?;
        let bytes: [u8; 4] = bytes.try_into().map_err(|_| malformed("short length prefix"))?;
        Ok(i32::from_le_bytes(bytes))
    }
}

/// DoGet's codec: tickets in, [`Frame`]s out.
#[derive(Debug, Clone, Copy, Default)]
pub struct DoGetCodec;

impl Codec for DoGetCodec {
    type Encode = Frame;
    type Decode = Ticket;
    type Encoder = FrameEncoder;
    type Decoder = TicketDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> TicketDecoder {
        TicketDecoder
    }
}

/// Writes a [`Frame`] as a `FlightData` message.
#[derive(Debug)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.write(dst)
    }
}

impl Frame {
    /// Its size as an encoded `FlightData` message.
    fn encoded_len(&self) -> usize {
        match self {
            Frame::Flight(data) => data.encoded_len(),
            Frame::Ipc { header, body_len, .. } => frame_len(header.len(), *body_len),
        }
    }

    /// Write it as a `FlightData` message: what prost would write for the same
    /// message (fields in order, empty ones omitted).
    fn write(self, dst: &mut impl BufMut) -> Result<(), Status> {
        match self {
            Frame::Flight(data) => data
                .encode(dst)
                .map_err(|e| Status::internal(format!("encoding FlightData: {e}"))),
            Frame::Ipc { header, body, body_len } => {
                if !header.is_empty() {
                    dst.put_u8(DATA_HEADER_TAG);
                    encode_varint(header.len() as u64, dst);
                    dst.put_slice(&header);
                }
                if body_len > 0 {
                    dst.put_slice(&DATA_BODY_TAG);
                    encode_varint(body_len as u64, dst);
                    for b in &body {
                        dst.put_slice(b.as_slice());
                    }
                }
                Ok(())
            }
        }
    }
}

/// The encoded size of a `FlightData` with only `data_header` and `data_body`.
fn frame_len(header_len: usize, body_len: usize) -> usize {
    let field = |tag_len: usize, len: usize| {
        if len == 0 {
            0
        } else {
            tag_len + encoded_len_varint(len as u64) + len
        }
    };
    field(1, header_len) + field(DATA_BODY_TAG.len(), body_len)
}

/// Reads a DoGet request's [`Ticket`].
#[derive(Debug)]
pub struct TicketDecoder;

impl Decoder for TicketDecoder {
    type Item = Ticket;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Ticket>, Status> {
        Ticket::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("invalid Ticket: {e}")))
    }
}

/// The Flight service with DoGet on [`DoGetCodec`]; everything else goes to
/// arrow-flight's generated server.
#[derive(Clone)]
pub struct FlightRouter {
    flight: Arc<ContrailFlight>,
    others: FlightServiceServer<ContrailFlight>,
    max_message: usize,
}

impl FlightRouter {
    pub fn new(flight: ContrailFlight, max_message: usize) -> Self {
        let flight = Arc::new(flight);
        let others = FlightServiceServer::from_arc(Arc::clone(&flight))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        Self {
            flight,
            others,
            max_message,
        }
    }
}

impl NamedService for FlightRouter {
    const NAME: &'static str = <FlightServiceServer<ContrailFlight> as NamedService>::NAME;
}

impl Service<http::Request<tonic::body::Body>> for FlightRouter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != DO_GET {
            return self.others.call(request);
        }
        let method = DoGet(Arc::clone(&self.flight));
        let max = Some(self.max_message);
        Box::pin(async move {
            let mut grpc = Grpc::new(DoGetCodec).apply_max_message_size_config(max, max);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

struct DoGet(Arc<ContrailFlight>);

impl ServerStreamingService<Ticket> for DoGet {
    type Response = Frame;
    type ResponseStream = Frames;
    type Future = BoxFuture<Response<Frames>, Status>;

    fn call(&mut self, request: Request<Ticket>) -> Self::Future {
        let flight = Arc::clone(&self.0);
        Box::pin(async move { flight.do_get_frames(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Decimal128Array, Int64Array, ListArray, StringArray, StructArray};
    use arrow::datatypes::{Field, Int32Type, Schema};
    use arrow_flight::decode::FlightRecordBatchStream;

    /// What FrameEncoder writes for a frame, decoded back as prost's FlightData.
    fn roundtrip(frame: Frame) -> FlightData {
        let len = frame.encoded_len();
        if let Frame::Ipc { body, body_len, .. } = &frame {
            assert_eq!(body.iter().map(|b| b.len()).sum::<usize>(), *body_len);
        }
        let mut buf = bytes::BytesMut::with_capacity(len);
        frame.write(&mut buf).expect("write");
        assert_eq!(buf.len(), len);
        FlightData::decode(buf.freeze()).expect("a FlightData message")
    }

    fn sample() -> RecordBatch {
        let n = 10_000;
        let ints: ArrayRef = Arc::new(Int64Array::from_iter((0..n).map(|i| (i % 7 != 0).then_some(i))));
        let strings: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("row {i}"))));
        let flags: ArrayRef = Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0))));
        let decimals: ArrayRef = Arc::new(
            Decimal128Array::from_iter_values((0..n).map(|i| i as i128 * 100))
                .with_precision_and_scale(15, 2)
                .expect("decimal"),
        );
        let lists: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..n).map(|i| Some(vec![Some(i as i32), None])),
        ));
        let structs: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("s", DataType::Utf8, false)),
            Arc::new(StringArray::from_iter_values((0..n).map(|i| i.to_string()))) as ArrayRef,
        )]));
        let schema = Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("s", DataType::Utf8, false),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Decimal128(15, 2), false),
            Field::new("l", lists.data_type().clone(), true),
            Field::new("st", structs.data_type().clone(), true),
        ]);
        RecordBatch::try_new(Arc::new(schema), vec![ints, strings, flags, decimals, lists, structs]).expect("batch")
    }

    async fn decode(frames: Frames) -> Vec<RecordBatch> {
        let data = frames.map_ok(roundtrip);
        FlightRecordBatchStream::new_from_flight_data(data.map_err(|s| FlightError::Tonic(Box::new(s))))
            .try_collect()
            .await
            .expect("a readable Flight stream")
    }

    #[tokio::test]
    async fn frames_decode_to_the_batches_sent() {
        let batch = sample();
        // Sliced batches too: offsets not at zero, validity bits not byte-aligned.
        let input = vec![
            batch.clone(),
            batch.slice(3, 5000),
            batch.slice(9999, 1),
            batch.slice(0, 0),
        ];
        let frames = batch_frames(batch.schema(), stream::iter(input.clone().into_iter().map(Ok))).expect("frames");
        let output = decode(frames).await;
        assert_eq!(output, input);
    }

    #[tokio::test]
    async fn bodies_are_byte_for_byte_what_arrow_flight_sends() {
        let batch = sample();
        let input = vec![batch.clone(), batch.slice(7, 3000)];
        let ours: Vec<FlightData> = batch_frames(batch.schema(), stream::iter(input.clone().into_iter().map(Ok)))
            .expect("frames")
            .map_ok(roundtrip)
            .try_collect()
            .await
            .expect("frames");
        let stock: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_schema(batch.schema())
            .build(stream::iter(input.into_iter().map(Ok)))
            .try_collect()
            .await
            .expect("stock frames");
        assert_eq!(ours.len(), stock.len());
        for (o, s) in ours.iter().zip(&stock) {
            assert_eq!(o.data_body, s.data_body);
            // Ours keeps the IPC stream's 8-byte padding after the flatbuffer.
            assert_eq!(&o.data_header[..s.data_header.len()], &s.data_header[..]);
            assert!(o.data_header[s.data_header.len()..].iter().all(|b| *b == 0));
        }
    }

    #[tokio::test]
    async fn an_empty_result_still_carries_its_schema() {
        let schema = sample().schema();
        let frames = batch_frames(Arc::clone(&schema), stream::empty()).expect("frames");
        let data: Vec<FlightData> = frames.map_ok(roundtrip).try_collect().await.expect("frames");
        assert_eq!(data.len(), 1);
        let stream = FlightRecordBatchStream::new_from_flight_data(stream::iter(data.into_iter().map(Ok)));
        let mut stream = stream;
        assert!(stream.next().await.is_none());
        assert_eq!(stream.schema(), Some(&schema));
    }

    #[tokio::test]
    async fn large_batches_are_cut_below_the_grpc_limit() {
        let n = 400_000;
        let strings: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("{i:>20}"))));
        let batch = RecordBatch::try_from_iter([("s", strings)]).expect("batch");
        let frames: Vec<FlightData> = batch_frames(batch.schema(), stream::iter([Ok(batch.clone())]))
            .expect("frames")
            .map_ok(roundtrip)
            .try_collect()
            .await
            .expect("frames");
        assert!(frames.len() > 3, "{} messages", frames.len());
        assert!(frames.iter().all(|f| f.data_body.len() <= 3 * 1024 * 1024));
        let decoded = decode(flight_frames(stream::iter(frames.into_iter().map(Ok)))).await;
        let rows: usize = decoded.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, n);
        assert_eq!(
            arrow::compute::concat_batches(&batch.schema(), &decoded).expect("concat"),
            batch
        );
    }

    #[tokio::test]
    async fn dictionaries_are_sent_as_values() {
        let dict: ArrayRef = Arc::new(
            ["a", "b", "a"]
                .into_iter()
                .collect::<arrow::array::DictionaryArray<Int32Type>>(),
        );
        let batch = RecordBatch::try_from_iter([("d", dict)]).expect("batch");
        let output = decode(batch_frames(batch.schema(), stream::iter([Ok(batch)])).expect("frames")).await;
        let values = arrow::compute::cast(output[0].column(0), &DataType::Utf8).expect("cast");
        assert_eq!(
            values.as_ref(),
            &StringArray::from(vec!["a", "b", "a"]) as &dyn arrow::array::Array
        );
    }

    #[tokio::test]
    async fn an_error_mid_stream_ends_it_with_that_status() {
        let batch = sample();
        let input = vec![Ok(batch.clone()), Err(Error::invalid("boom"))];
        let frames: Vec<Result<Frame, Status>> = batch_frames(batch.schema(), stream::iter(input))
            .expect("frames")
            .collect()
            .await;
        let last = frames.last().expect("frames");
        let status = last.as_ref().err().expect("an error last");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("boom"));
    }
}
