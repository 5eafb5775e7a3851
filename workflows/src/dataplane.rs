//! The data plane: fragment outputs move between workers, and to clients, as Arrow
//! over Flight `DoGet`. Temporal never sees them.
//!
//! ```text
//!  activity on worker B ──DoGet(spool ticket)──> worker A: Spool ──IPC file──> FlightData
//!  client ──DoGet(endpoint ticket)──> the worker named in the endpoint's location
//! ```
//!
//! A spool ticket names one bucket of one fragment output. Tickets carry the query
//! id (a random UUID), which is what makes them unguessable.

use std::pin::Pin;
use std::sync::Arc;

use arrow::ipc::CompressionType;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse,
    PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use contrail_planner::distributed::{FragmentFetcher, FragmentRef, UpstreamLost};
use contrail_planner::settings::ResultCompression;
use dashmap::DashMap;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::spool::{BucketKey, Spool};

/// Largest gRPC message on the data plane.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

const SPOOL_TICKET_PREFIX: &[u8] = b"contrail-spool\0";

/// HTTP/2 flow control of the fetcher's connections: 16 MiB per stream, the
/// largest connection window HTTP/2 allows (2^31 - 1), and 1 MiB frames (a
/// tonic client's default 16 KiB frames halve a DoGet's throughput).
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
const MAX_FRAME: u32 = 1 << 20;

/// A `DoGet` ticket for one bucket of one spooled fragment output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolTicket {
    #[serde(rename = "q")]
    pub query_id: String,
    #[serde(rename = "s")]
    pub stage: u32,
    #[serde(rename = "f")]
    pub fragment: u32,
    #[serde(rename = "b")]
    pub bucket: u32,
    /// The worker holding it, when the serving process relays (`--proxy-results`).
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The serving process's signature of a relayed ticket (base64): it relays
    /// only to locations it named itself.
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// How to compress the bucket's batches for a client that asked
    /// (`contrail.result_compression`); fragments reading each other send them plain.
    #[serde(rename = "z", default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<ResultCompression>,
}

impl SpoolTicket {
    /// The ticket for bucket `bucket` of `fragment`.
    pub fn new(fragment: &FragmentRef, bucket: u32) -> Self {
        Self {
            query_id: fragment.query_id.clone(),
            stage: fragment.stage,
            fragment: fragment.fragment,
            bucket,
            location: None,
            signature: None,
            compression: None,
        }
    }

    /// The same ticket, for a client that asked for results compressed as `compression`.
    pub fn compressed(self, compression: ResultCompression) -> Self {
        Self {
            compression: (compression != ResultCompression::None).then_some(compression),
            ..self
        }
    }

    /// Encode as Flight ticket bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = SPOOL_TICKET_PREFIX.to_vec();
        // Serializing four plain fields cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    /// Whether `ticket` is a spool ticket (rather than a Flight SQL one).
    pub fn is_spool_ticket(ticket: &[u8]) -> bool {
        ticket.starts_with(SPOOL_TICKET_PREFIX)
    }

    /// Decode ticket bytes.
    pub fn decode(ticket: &[u8]) -> Result<Self> {
        let body = ticket
            .strip_prefix(SPOOL_TICKET_PREFIX)
            .ok_or_else(|| Error::InvalidTicket {
                what: "spool ticket",
                message: "not a spool ticket".to_string(),
            })?;
        serde_json::from_slice(body).map_err(|e| Error::InvalidTicket {
            what: "spool ticket",
            message: e.to_string(),
        })
    }

    fn key(&self) -> BucketKey<'_> {
        BucketKey {
            query_id: &self.query_id,
            stage: self.stage,
            fragment: self.fragment,
            bucket: self.bucket,
        }
    }
}

/// The gRPC status for a spool error.
pub fn spool_status(e: Error) -> Status {
    match e {
        Error::NotSpooled { .. } => Status::not_found(e.to_string()),
        Error::InvalidTicket { .. } => Status::invalid_argument(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// A spooled bucket as a FlightData stream, read and encoded on a blocking thread.
pub fn serve_spooled(
    spool: &Spool,
    ticket: &[u8],
) -> Result<Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>> {
    let ticket = SpoolTicket::decode(ticket)?;
    let options = ipc_write_options(ticket.compression.unwrap_or(ResultCompression::None))?;
    let reader = spool.reader(ticket.key())?;
    let schema = reader.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<FlightData, Status>>(2);
    tokio::task::spawn_blocking(move || {
        // Read, encode and (when asked) compress here, off the I/O runtime. The
        // encoder's input is a plain iterator, so it never waits.
        let batches = futures::stream::iter(reader.map(|batch| batch.map_err(FlightError::Arrow)));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_options(options)
            .build(batches);
        for message in futures::executor::block_on_stream(encoded) {
            if tx
                .blocking_send(message.map_err(|e| Status::internal(e.to_string())))
                .is_err()
            {
                break; // the client went away
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// IPC write options for results compressed as `compression` asks. Zstandard
/// runs at level 1, as Arrow C++ writes it (level 3, arrow-rs's default, costs
/// about twice the CPU for a few percent more).
pub fn ipc_write_options(compression: ResultCompression) -> Result<IpcWriteOptions> {
    let (codec, level) = match compression {
        ResultCompression::None => return Ok(IpcWriteOptions::default()),
        ResultCompression::Lz4 => (CompressionType::LZ4_FRAME, None),
        ResultCompression::Zstd => (CompressionType::ZSTD, Some(1)),
    };
    Ok(IpcWriteOptions::default()
        .try_with_compression(Some(codec))?
        .try_with_compression_level(level)?)
}

/// Reads fragment outputs from workers over Flight, one cached channel per worker.
#[derive(Debug, Default)]
pub struct FlightFetcher {
    channels: DashMap<String, Channel>,
}

impl FlightFetcher {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    async fn channel(&self, location: &str) -> std::result::Result<Channel, String> {
        if let Some(c) = self.channels.get(location) {
            return Ok(c.clone());
        }
        let channel = endpoint(location)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        self.channels.insert(location.to_string(), channel.clone());
        Ok(channel)
    }
}

/// A client of the data plane at `location`, with its flow control settled.
///
/// One connection carries every stream a fragment reads from a worker, and a plan
/// consumes them in its own order: a join collects one build side while the
/// others' streams are already open (CoalescePartitions starts reading at
/// execute time). Streams left unread must not use up the connection's window,
/// or the one being read stalls for good (TPC-H Q9 with broadcast joins hung so).
/// Each stream stays bounded by its own window; the connection's is as large as
/// HTTP/2 allows.
pub fn endpoint(location: &str) -> std::result::Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(http_uri(location))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME))
}

/// `grpc+tcp://host:port` -> `http://host:port`.
pub fn http_uri(location: &str) -> String {
    match location.split_once("://") {
        Some(("grpc+tls", rest)) => format!("https://{rest}"),
        Some((_, rest)) => format!("http://{rest}"),
        None => format!("http://{location}"),
    }
}

#[async_trait]
impl FragmentFetcher for FlightFetcher {
    async fn fetch(&self, fragment: &FragmentRef, bucket: u32) -> DfResult<SendableRecordBatchStream> {
        let lost = |reason: String| {
            DataFusionError::External(Box::new(UpstreamLost {
                fragment: fragment.clone(),
                reason,
            }))
        };
        let channel = self.channel(&fragment.location).await.map_err(lost)?;
        let mut client = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let ticket = Ticket::new(SpoolTicket::new(fragment, bucket).encode());
        let response = match client.do_get(ticket).await {
            Ok(r) => r,
            Err(status) => {
                // A malformed ticket is our bug; anything else means the output
                // cannot be had from there (worker gone, file gone): recompute it.
                if status.code() == tonic::Code::InvalidArgument {
                    return Err(DataFusionError::External(Box::new(status)));
                }
                self.channels.remove(&fragment.location);
                return Err(lost(status.message().to_string()));
            }
        };
        let flight = response.into_inner().map_err(|s| FlightError::Tonic(Box::new(s)));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(flight);
        // The first message carries the schema; read it so the stream is typed.
        let first = batches.next().await;
        let schema = batches
            .schema()
            .cloned()
            .ok_or_else(|| lost("the stream ended before its schema".to_string()))?;
        let fragment_for_errors = fragment.clone();
        // Mid-stream, any failure (a broken pipe when the worker dies, a reset
        // stream, a truncated message) loses the output: the producer runs again.
        let rest = futures::stream::iter(first).chain(batches).map(move |r| {
            r.map_err(|e| {
                DataFusionError::External(Box::new(UpstreamLost {
                    fragment: fragment_for_errors.clone(),
                    reason: e.to_string(),
                }))
            })
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, rest)))
    }
}

/// The Flight service of a `contrail worker` process: only `DoGet` of spooled outputs.
#[derive(Debug, Clone)]
pub struct DataPlane {
    spool: Spool,
}

impl DataPlane {
    pub fn new(spool: Spool) -> Self {
        Self { spool }
    }
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn only_doget() -> Status {
    Status::unimplemented("a Contrail worker serves fragment outputs (DoGet) only; send SQL to the server")
}

#[tonic::async_trait]
impl FlightService for DataPlane {
    type HandshakeStream = BoxedStream<HandshakeResponse>;
    type ListFlightsStream = BoxedStream<FlightInfo>;
    type DoGetStream = BoxedStream<FlightData>;
    type DoPutStream = BoxedStream<PutResult>;
    type DoActionStream = BoxedStream<arrow_flight::Result>;
    type ListActionsStream = BoxedStream<ActionType>;
    type DoExchangeStream = BoxedStream<FlightData>;

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // Clients following an endpoint here may handshake first; there is nothing to agree on.
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn list_flights(&self, _request: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(only_doget())
    }

    async fn get_flight_info(&self, _request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        Err(only_doget())
    }

    async fn poll_flight_info(&self, _request: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        Err(only_doget())
    }

    async fn get_schema(&self, _request: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        Err(only_doget())
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let stream = serve_spooled(&self.spool, &request.into_inner().ticket).map_err(spool_status)?;
        Ok(Response::new(stream))
    }

    async fn do_put(&self, _request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        Err(only_doget())
    }

    async fn do_action(&self, _request: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        Err(only_doget())
    }

    async fn list_actions(&self, _request: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::empty())))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(only_doget())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;

    #[test]
    fn spool_ticket_round_trip() {
        let f = FragmentRef {
            location: "grpc+tcp://127.0.0.1:1".into(),
            query_id: "abc".into(),
            stage: 2,
            fragment: 3,
        };
        let t = SpoolTicket::new(&f, 4);
        let bytes = t.encode();
        assert!(SpoolTicket::is_spool_ticket(&bytes));
        assert_eq!(SpoolTicket::decode(&bytes).expect("decode"), t);
        assert!(!SpoolTicket::is_spool_ticket(b"\x0a\x10something"));
        assert!(SpoolTicket::decode(b"contrail-spool\0{bad").is_err());
        // Plain tickets stay as they were (no "z"); compressed ones carry the codec.
        assert!(!String::from_utf8_lossy(&bytes).contains("\"z\""));
        assert_eq!(t.clone().compressed(ResultCompression::None), t);
        let zstd = t.clone().compressed(ResultCompression::Zstd);
        assert_eq!(
            SpoolTicket::decode(&zstd.encode()).expect("decode").compression,
            Some(ResultCompression::Zstd)
        );
        assert_eq!(http_uri("grpc+tcp://h:1"), "http://h:1");
        assert_eq!(http_uri("grpc+tls://h:1"), "https://h:1");
    }

    /// Streams opened on one connection and read in reverse order, as a join
    /// collects one build side while the others' streams are open. With hyper's
    /// defaults (5 MiB per connection, 2 MiB per stream) the unread streams took
    /// the whole connection window and the stream being read stalled for good.
    #[tokio::test]
    async fn unread_streams_do_not_stall_the_one_being_read() {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        use arrow_flight::flight_service_server::FlightServiceServer;

        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), std::time::Duration::from_secs(60)).expect("spool");
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let (buckets, batches, rows) = (4u32, 16, 65_536usize);
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int64Array::from_iter_values(0..rows as i64))],
        )
        .expect("batch");
        let mut writer = spool.writer("q", 0, 0, buckets, &schema).expect("writer");
        for bucket in 0..buckets as usize {
            for _ in 0..batches {
                writer.write(bucket, &batch).expect("write"); // 8 MiB per bucket
            }
        }
        writer.finish().expect("finish");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(FlightServiceServer::new(DataPlane::new(spool)))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let fetcher = FlightFetcher::new();
        let fragment = FragmentRef {
            location: format!("grpc+tcp://{address}"),
            query_id: "q".into(),
            stage: 0,
            fragment: 0,
        };
        let read_all = async {
            let mut streams = Vec::new();
            for bucket in 0..buckets {
                streams.push(fetcher.fetch(&fragment, bucket).await.expect("fetch"));
            }
            let mut total = 0;
            for stream in streams.into_iter().rev() {
                total += stream
                    .try_fold(0, |n, b| async move { Ok(n + b.num_rows()) })
                    .await
                    .expect("read");
            }
            total
        };
        let total = tokio::time::timeout(std::time::Duration::from_secs(60), read_all)
            .await
            .expect("every stream opened and read to its end, none stalled");
        assert_eq!(total, buckets as usize * batches * rows);
        server.abort();
    }
}
