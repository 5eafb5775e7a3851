//! DoGet's wire encoding: query results leave as Arrow IPC messages framed as
//! `FlightData`, their column buffers handed to HTTP/2 as they are.
//!
//! ```text
//! stock:  columns ─copy─> IPC body Vec (grows as it fills) ─copy─> tonic send buffer ─> h2 ─copy─> socket
//! here:   columns ─────── IPC buffer list (points at the columns) ────────────────────> h2 ─copy─> socket
//! ```
//!
//! arrow-ipc's [`StreamEncoder`] lays a batch out as a list of buffers that point
//! at the columns themselves. [`FrameBody`] writes each message's gRPC prefix
//! and `FlightData` protobuf fields (`data_header`, the `data_body` key) into a
//! small head chunk and lends the large column buffers to h2 as [`Bytes`], which
//! writes them to the socket with vectored writes. The only copy left is the
//! kernel's (FLIGHT_NOTES.md; `benches/results/changes.md`).
//!
//! [`FlightRouter`] serves `DoGet` this way and hands every other method to
//! arrow-flight's generated `FlightServiceServer`. Results that are already
//! `FlightData` (metadata, spooled or relayed workflow partitions) pass through as
//! [`Frame::Flight`], encoded exactly as tonic's prost codec would, their bodies
//! lent the same way.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, StreamEncoder};
use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::encode::{FlightDataEncoderBuilder, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::{FlightData, SchemaAsIpc, Ticket};
use bytes::{BufMut, Bytes, BytesMut};
use contrail_planner::settings::ResultCompression;
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tokio::runtime::Handle;
use tonic::body::Body;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Status};

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

/// How a query's batches become IPC messages.
pub enum Encoding {
    /// Column buffers lent to HTTP/2 as they are (no copy).
    Plain,
    /// Buffers compressed (`SET contrail.result_compression`), a batch per task
    /// on the CPU runtime, as many at once as it has threads, sent in order.
    Compressed { options: IpcWriteOptions, cpu: Handle },
}

impl Encoding {
    /// The encoding a session's `compression` asks for (see
    /// [`contrail_workflows::dataplane::ipc_write_options`]).
    pub fn new(compression: ResultCompression, cpu: &Handle) -> Result<Self> {
        if compression == ResultCompression::None {
            return Ok(Self::Plain);
        }
        Ok(Self::Compressed {
            options: contrail_workflows::dataplane::ipc_write_options(compression)?,
            cpu: cpu.clone(),
        })
    }

    pub(crate) fn options(&self) -> IpcWriteOptions {
        match self {
            Self::Plain => IpcWriteOptions::default(),
            Self::Compressed { options, .. } => options.clone(),
        }
    }
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
    encoding: Encoding,
) -> Result<Frames> {
    let batches = conformed(&schema, batches);
    if schema.fields().iter().any(|f| has_dictionary(f.data_type())) {
        return Ok(flight_frames(flight_data(schema, batches, encoding.options())));
    }
    let head = Frame::Flight(FlightData::from(SchemaAsIpc::new(&schema, &encoding.options())));
    let body = match encoding {
        Encoding::Plain => {
            let mut encoder = StreamEncoder::try_new_with_options(&schema, IpcWriteOptions::default())?;
            batches
                .map(move |batch| {
                    let mut frames = Vec::new();
                    for piece in split(&batch?, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES) {
                        ipc_frames(encoder.encode(&piece)?, &mut frames)?;
                    }
                    Ok::<_, Error>(frames)
                })
                .boxed()
        }
        Encoding::Compressed { options, cpu } => {
            let ahead = cpu.metrics().num_workers().max(1);
            batches
                .map(move |batch| {
                    let options = options.clone();
                    let task = cpu.spawn(async move {
                        split(&batch?, GRPC_TARGET_MAX_FLIGHT_SIZE_BYTES)
                            .iter()
                            .map(|piece| compressed_frame(piece, &options))
                            .collect::<Result<Vec<_>>>()
                    });
                    async move {
                        task.await.map_err(|e| Error::Internal {
                            message: format!("result compression task failed: {e}"),
                        })?
                    }
                })
                .buffered(ahead)
                .boxed()
        }
    };
    let body = body
        .map_ok(|frames| stream::iter(frames.into_iter().map(Ok)))
        .map_err(Status::from)
        .try_flatten();
    Ok(stream::once(async { Ok(head) }).chain(body).boxed())
}

/// `batches`, each checked (or losslessly cast) against the schema the client
/// was promised and the stream's first message declares: the one place every
/// DoGet result passes before it is encoded (see `contrail_planner::types::conform`).
fn conformed(
    schema: &SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static {
    let promised = Arc::clone(schema);
    batches.map(move |batch| Ok(contrail_planner::types::conform(batch?, &promised)?))
}

/// One batch (without dictionaries) as one IPC message with compressed buffers.
/// Its body is new memory anyway, so it is built whole and lent to HTTP/2 as one buffer.
fn compressed_frame(batch: &RecordBatch, options: &IpcWriteOptions) -> Result<Frame> {
    thread_local! {
        /// The codec's state (a Zstandard context is ~1 MiB to set up), kept
        /// per CPU-runtime thread rather than made for every message.
        static CONTEXT: RefCell<IpcWriteContext> = RefCell::new(IpcWriteContext::default());
    }
    let mut dictionaries = DictionaryTracker::new(false);
    let (_, encoded) = CONTEXT
        .with_borrow_mut(|context| IpcDataGenerator::default().encode(batch, &mut dictionaries, options, context))?;
    let body_len = encoded.arrow_data.len();
    Ok(Frame::Ipc {
        header: Bytes::from(encoded.ipc_message),
        body: vec![Buffer::from_vec(encoded.arrow_data)],
        body_len,
    })
}

/// A query's output as `FlightData`, by arrow-flight's encoder (which also
/// sends dictionary columns as their values).
pub fn flight_data(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    options: IpcWriteOptions,
) -> impl Stream<Item = Result<FlightData, Status>> + Send + 'static {
    let batches = conformed(&schema, batches);
    let batches = batches.map_err(|e| FlightError::Tonic(Box::new(Status::from(e))));
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_options(options)
        .build(batches);
    encoded.map_err(|e| match e {
        FlightError::Tonic(status) => *status,
        other => Status::from(Error::from(other)),
    })
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
    let size = contrail_planner::types::data_bytes(batch);
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

/// `Frame::Ipc` body buffers smaller than this are copied into the message's
/// head chunk (validity bitmaps, padding, short columns) instead of each
/// becoming an HTTP/2 DATA frame of its own.
const COPY_BELOW: usize = 4096;

/// An arrow [`Buffer`] lent to the HTTP/2 layer as [`Bytes`] (kept alive, not copied).
struct Lent(Buffer);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
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

    /// Append it to `out` as one length-prefixed gRPC message: what tonic's
    /// prost codec would send for the same `FlightData` (fields in order,
    /// empty ones omitted), with the body's large buffers as chunks of their
    /// own rather than copies.
    fn write_message(self, max: usize, out: &mut VecDeque<Bytes>) -> Result<(), Status> {
        let len = self.encoded_len();
        let prefix_len = u32::try_from(len).ok().filter(|_| len <= max).ok_or_else(|| {
            Status::out_of_range(format!("a result message of {len} bytes is over the {max} byte limit"))
        })?;
        let (mut head, body_len, body) = match self {
            Frame::Flight(mut data) => {
                // prost writes `data_body` (field 1000) last: encode the rest,
                // then lend the body.
                let body = std::mem::take(&mut data.data_body);
                let mut head = BytesMut::with_capacity(5 + data.encoded_len() + 8);
                head.put_u8(0);
                head.put_u32(prefix_len);
                data.encode(&mut head)
                    .map_err(|e| Status::internal(format!("encoding FlightData: {e}")))?;
                let body_len = body.len();
                (head, body_len, vec![Chunk::Bytes(body)])
            }
            Frame::Ipc { header, body, body_len } => {
                let mut head = BytesMut::with_capacity(5 + 16 + header.len() + COPY_BELOW);
                head.put_u8(0);
                head.put_u32(prefix_len);
                if !header.is_empty() {
                    head.put_u8(DATA_HEADER_TAG);
                    encode_varint(header.len() as u64, &mut head);
                    head.put_slice(&header);
                }
                (head, body_len, body.into_iter().map(Chunk::Arrow).collect())
            }
        };
        if body_len > 0 {
            head.put_slice(&DATA_BODY_TAG);
            encode_varint(body_len as u64, &mut head);
        }
        for chunk in body {
            if chunk.len() < COPY_BELOW {
                head.put_slice(chunk.as_slice());
                continue;
            }
            if !head.is_empty() {
                out.push_back(head.split().freeze());
            }
            out.push_back(chunk.into_bytes());
        }
        if !head.is_empty() {
            out.push_back(head.freeze());
        }
        Ok(())
    }
}

/// A piece of a message body: arrow's or already [`Bytes`].
enum Chunk {
    Arrow(Buffer),
    Bytes(Bytes),
}

impl Chunk {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Arrow(b) => b.as_slice(),
            Chunk::Bytes(b) => b,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Chunk::Arrow(b) => Bytes::from_owner(Lent(b)),
            Chunk::Bytes(b) => b,
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

/// A DoGet response body: each frame's gRPC message as chunks, then the
/// trailers with the stream's status (OK, or the error that ended it).
struct FrameBody {
    frames: Frames,
    chunks: VecDeque<Bytes>,
    max_message: usize,
    finished: bool,
}

impl http_body::Body for FrameBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(chunk) = this.chunks.pop_front() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
            }
            if this.finished {
                return Poll::Ready(None);
            }
            let status = match ready!(this.frames.poll_next_unpin(cx)) {
                Some(Ok(frame)) => match frame.write_message(this.max_message, &mut this.chunks) {
                    Ok(()) => continue,
                    Err(status) => status,
                },
                Some(Err(status)) => status,
                None => Status::ok(""),
            };
            this.finished = true;
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(status_headers(&status)))));
        }
    }
}

/// `grpc-status` and `grpc-message` for `status`.
fn status_headers(status: &Status) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        // Metadata that cannot be a header: the code alone still tells the client.
        headers.clear();
        let code = http::HeaderValue::from(status.code() as i32);
        headers.insert(Status::GRPC_STATUS, code);
    }
    headers
}

/// DATA payloads shorter than this are copied into h2's write buffer; longer ones
/// are lent to the socket write (h2's `CHAIN_THRESHOLD`, 256 bytes with vectored
/// writes), after which h2 must write before it can buffer another frame.
const H2_COPIED_BELOW: usize = 256;

/// Payloads up to this size are split into copied DATA frames by [`OneWrite`].
const SPLIT_UP_TO: usize = 4096;

/// A response body whose small DATA payloads leave in the same socket write as
/// the trailers.
///
/// A unary reply (`GetFlightInfo`) or a small `DoGet` result is a few hundred
/// bytes. Sent as one DATA frame, h2 lends it to a vectored write, and the
/// trailers that follow must wait for that write: the response leaves in two
/// writes (headers and data, then the 10-byte trailers), and the client wakes up
/// twice per call. Split into DATA frames that h2 copies, headers, data and
/// trailers leave in one write. Payloads above [`SPLIT_UP_TO`] (a result's
/// column buffers) pass through as they are, zero-copy.
pub struct OneWrite<B> {
    inner: B,
    rest: Bytes,
}

impl<B> OneWrite<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
        }
    }

    fn next_piece(&mut self) -> http_body::Frame<Bytes> {
        let n = self.rest.len().min(H2_COPIED_BELOW - 1);
        http_body::Frame::data(self.rest.split_to(n))
    }
}

impl<B> http_body::Body for OneWrite<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(this.next_piece())));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        match frame.into_data() {
            Ok(data) if data.len() >= H2_COPIED_BELOW && data.len() <= SPLIT_UP_TO => {
                this.rest = data;
                Poll::Ready(Some(Ok(this.next_piece())))
            }
            Ok(data) => Poll::Ready(Some(Ok(http_body::Frame::data(data)))),
            Err(frame) => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        hint.set_lower(hint.lower() + rest);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

/// The Flight service with DoGet answered by [`FrameBody`]; everything else
/// goes to arrow-flight's generated server.
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

impl Service<http::Request<Body>> for FlightRouter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let one_write = |response: http::Response<Body>| response.map(|body| Body::new(OneWrite::new(body)));
        if request.uri().path() != DO_GET {
            let response = self.others.call(request);
            return Box::pin(async move { response.await.map(undecodable_is_invalid).map(one_write) });
        }
        let flight = Arc::clone(&self.flight);
        let max_message = self.max_message;
        Box::pin(async move {
            let response = do_get(&flight, request, max_message)
                .await
                .unwrap_or_else(Status::into_http);
            Ok(one_write(undecodable_is_invalid(response)))
        })
    }
}

/// A request the generated code cannot decode is the client's error,
/// INVALID_ARGUMENT, where tonic and arrow-flight answer INTERNAL before any
/// handler of ours runs: a message that is not valid protobuf (a descriptor path
/// or an action type that is not UTF-8: tonic's prost codec), and a Flight SQL
/// message inside a valid `Any` (a DoPut command, a ticket, an action's body:
/// arrow-flight unpacks those itself, and only those it takes from a client).
/// Both come as trailers-only responses, their status in the headers; they are
/// recognised by the decoders' own messages.
fn undecodable_is_invalid(mut response: http::Response<Body>) -> http::Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = status.message();
    let undecodable = message.starts_with("failed to decode Protobuf message")
        || message.starts_with("ParseError(\"Unable to decode Any value");
    if status.code() == tonic::Code::Internal && undecodable {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

/// DoGet as tonic's server-streaming handler would run it (the ticket decoded
/// from the request body, headers as metadata, an error before the first
/// message as a trailers-only response), with the rows sent by [`FrameBody`].
async fn do_get(
    flight: &ContrailFlight,
    request: http::Request<Body>,
    max_message: usize,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = request.into_parts();
    if let Some(encoding) = parts.headers.get("grpc-encoding")
        && encoding.as_bytes() != b"identity"
    {
        return Err(Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        )));
    }
    let mut messages = Streaming::new_request(TicketDecoder, body, None, Some(max_message));
    let ticket = messages
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("DoGet without a Ticket"))?;
    let request = Request::from_parts(MetadataMap::from_headers(parts.headers), parts.extensions, ticket);
    let (metadata, frames, _) = flight.do_get_frames(request).await?.into_parts();
    let mut response = http::Response::new(Body::new(FrameBody {
        frames,
        chunks: VecDeque::new(),
        max_message,
        finished: false,
    }));
    *response.headers_mut() = metadata.into_headers();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Decimal128Array, Int64Array, ListArray, StringArray, StructArray};
    use arrow::compute::concat_batches;
    use arrow::datatypes::{Field, Int32Type, Schema};
    use arrow_flight::decode::FlightRecordBatchStream;

    /// The gRPC message written for a frame, decoded back as prost's FlightData.
    fn roundtrip(frame: Frame) -> FlightData {
        let len = frame.encoded_len();
        if let Frame::Ipc { body, body_len, .. } = &frame {
            assert_eq!(body.iter().map(|b| b.len()).sum::<usize>(), *body_len);
        }
        let mut chunks = VecDeque::new();
        frame.write_message(usize::MAX, &mut chunks).expect("write");
        let message: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(message[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(message[1..5].try_into().expect("prefix")) as usize,
            len
        );
        assert_eq!(message.len(), 5 + len);
        FlightData::decode(&message[5..]).expect("a FlightData message")
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
        let frames = batch_frames(
            batch.schema(),
            stream::iter(input.clone().into_iter().map(Ok)),
            Encoding::Plain,
        )
        .expect("frames");
        let output = decode(frames).await;
        assert_eq!(output, input);
    }

    #[tokio::test]
    async fn compressed_frames_decode_to_the_batches_sent_in_fewer_bytes() {
        let batch = sample();
        let big = concat_batches(&batch.schema(), &vec![batch.clone(); 40]).expect("concat");
        // Sliced batches, an empty one, and one over the message size (split in pieces).
        let input = vec![batch.clone(), batch.slice(3, 5000), batch.slice(0, 0), big];
        let plain_bytes = wire_bytes(
            batch_frames(
                batch.schema(),
                stream::iter(input.clone().into_iter().map(Ok)),
                Encoding::Plain,
            )
            .expect("frames"),
        )
        .await;
        for compression in [ResultCompression::Lz4, ResultCompression::Zstd] {
            let encoding = || Encoding::new(compression, &Handle::current()).expect("codec");
            let frames = || {
                batch_frames(
                    batch.schema(),
                    stream::iter(input.clone().into_iter().map(Ok)),
                    encoding(),
                )
                .expect("frames")
            };
            let bytes = wire_bytes(frames()).await;
            assert!(
                bytes * 3 < plain_bytes * 2,
                "{compression:?}: {bytes} bytes on the wire vs {plain_bytes} plain"
            );
            // Split pieces of `big` come back as their own batches: compare rows.
            let output = decode(frames()).await;
            let schema = batch.schema();
            assert_eq!(
                concat_batches(&schema, &output).expect("concat"),
                concat_batches(&schema, &input).expect("concat"),
                "{compression:?}"
            );
            let messages: Vec<FlightData> = frames().map_ok(roundtrip).try_collect().await.expect("frames");
            let compressed = messages.iter().skip(1).all(|m| {
                root_as_message(&m.data_header)
                    .ok()
                    .and_then(|h| h.header_as_record_batch())
                    .is_some_and(|rb| rb.compression().is_some())
            });
            assert!(
                compressed,
                "{compression:?}: every batch message says how it is compressed"
            );
        }
    }

    async fn wire_bytes(frames: Frames) -> usize {
        let messages: Vec<FlightData> = frames.map_ok(roundtrip).try_collect().await.expect("frames");
        messages.iter().map(|m| m.data_header.len() + m.data_body.len()).sum()
    }

    #[tokio::test]
    async fn bodies_are_byte_for_byte_what_arrow_flight_sends() {
        let batch = sample();
        let input = vec![batch.clone(), batch.slice(7, 3000)];
        let ours: Vec<FlightData> = batch_frames(
            batch.schema(),
            stream::iter(input.clone().into_iter().map(Ok)),
            Encoding::Plain,
        )
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
        let frames = batch_frames(Arc::clone(&schema), stream::empty(), Encoding::Plain).expect("frames");
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
        let frames: Vec<FlightData> = batch_frames(batch.schema(), stream::iter([Ok(batch.clone())]), Encoding::Plain)
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
        let output =
            decode(batch_frames(batch.schema(), stream::iter([Ok(batch)]), Encoding::Plain).expect("frames")).await;
        let values = arrow::compute::cast(output[0].column(0), &DataType::Utf8).expect("cast");
        assert_eq!(
            values.as_ref(),
            &StringArray::from(vec!["a", "b", "a"]) as &dyn arrow::array::Array
        );
    }

    /// Everything a response body yields: its messages' bytes and its trailers.
    async fn drain(frames: Frames, max_message: usize) -> (Vec<FlightData>, http::HeaderMap) {
        let mut body = FrameBody {
            frames,
            chunks: VecDeque::new(),
            max_message,
            finished: false,
        };
        let (mut bytes, mut trailers) = (Vec::new(), None);
        use http_body::Body as _;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.expect("a body frame");
            assert!(trailers.is_none(), "nothing follows the trailers");
            match frame.into_data() {
                Ok(data) => bytes.extend_from_slice(data.as_ref()),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        let mut messages = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            assert_eq!(rest[0], 0, "not compressed");
            let len = u32::from_be_bytes(rest[1..5].try_into().expect("prefix")) as usize;
            messages.push(FlightData::decode(&rest[5..5 + len]).expect("a FlightData message"));
            rest = &rest[5 + len..];
        }
        (messages, trailers.expect("trailers"))
    }

    #[tokio::test]
    async fn a_response_body_is_grpc_messages_then_an_ok_status() {
        let batch = sample();
        let input = vec![batch.clone(), batch.slice(100, 900)];
        let frames = batch_frames(
            batch.schema(),
            stream::iter(input.clone().into_iter().map(Ok)),
            Encoding::Plain,
        )
        .expect("frames");
        let (messages, trailers) = drain(frames, usize::MAX).await;
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
        let decoded: Vec<RecordBatch> =
            FlightRecordBatchStream::new_from_flight_data(stream::iter(messages.into_iter().map(Ok)))
                .try_collect()
                .await
                .expect("a readable Flight stream");
        assert_eq!(decoded, input);
    }

    #[tokio::test]
    async fn errors_and_oversized_messages_end_the_body_with_their_status() {
        let batch = sample();
        let failing = batch_frames(
            batch.schema(),
            stream::iter([Ok(batch.clone()), Err(Error::invalid("boom"))]),
            Encoding::Plain,
        );
        let (messages, trailers) = drain(failing.expect("frames"), usize::MAX).await;
        assert_eq!(messages.len(), 2, "the schema and the batch before the error");
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"3"[..]));
        let message = trailers
            .get("grpc-message")
            .expect("a message")
            .to_str()
            .expect("ascii");
        assert!(message.contains("boom"), "{message}");

        let frames = batch_frames(batch.schema(), stream::iter([Ok(batch)]), Encoding::Plain).expect("frames");
        let (messages, trailers) = drain(frames, 64 * 1024).await;
        assert_eq!(
            messages.len(),
            1,
            "the schema only: the batch's message is over the limit"
        );
        assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"11"[..]));
    }

    #[tokio::test]
    async fn an_error_mid_stream_ends_it_with_that_status() {
        let batch = sample();
        let input = vec![Ok(batch.clone()), Err(Error::invalid("boom"))];
        let frames: Vec<Result<Frame, Status>> = batch_frames(batch.schema(), stream::iter(input), Encoding::Plain)
            .expect("frames")
            .collect()
            .await;
        let last = frames.last().expect("frames");
        let status = last.as_ref().err().expect("an error last");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("boom"));
    }

    /// A body of the given DATA payload sizes, then trailers.
    struct Sized {
        sizes: VecDeque<usize>,
        trailers: bool,
    }

    impl http_body::Body for Sized {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
            if let Some(n) = self.sizes.pop_front() {
                let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                return Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(data)))));
            }
            if std::mem::take(&mut self.trailers) {
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(status_headers(&Status::ok(""))))));
            }
            Poll::Ready(None)
        }

        fn is_end_stream(&self) -> bool {
            self.sizes.is_empty() && !self.trailers
        }
    }

    #[tokio::test]
    async fn one_write_splits_small_payloads_into_copied_frames_and_keeps_the_bytes() {
        use http_body::Body as _;
        let sizes = [10, 255, 256, 371, 4096, 4097, 1 << 20];
        let mut body = OneWrite::new(Sized {
            sizes: sizes.into_iter().collect(),
            trailers: true,
        });
        let (mut data, mut frames, mut trailers) = (Vec::new(), Vec::new(), 0);
        while let Some(frame) = futures::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            match frame.expect("frame").into_data() {
                Ok(chunk) => {
                    frames.push(chunk.len());
                    data.extend_from_slice(&chunk);
                }
                Err(frame) => {
                    assert!(frame.is_trailers());
                    trailers += 1;
                }
            }
        }
        let expected: Vec<u8> = sizes.iter().flat_map(|&n| (0..n).map(|i| (i % 251) as u8)).collect();
        assert_eq!(data, expected, "the same bytes in the same order");
        assert_eq!(trailers, 1);
        // Up to 4 KiB: frames h2 copies (< 256 bytes); beyond: as they came.
        let small: usize = sizes.iter().filter(|&&n| n <= SPLIT_UP_TO).sum();
        let (copied, lent): (Vec<usize>, Vec<usize>) = frames.iter().partition(|&&n| n < H2_COPIED_BELOW);
        assert_eq!(copied.iter().sum::<usize>(), small);
        assert_eq!(lent, vec![4097, 1 << 20]);
        assert!(body.is_end_stream());
    }
}
