//! Test fixture: the real `contrail` binary on a free loopback port.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::Channel;

/// A running server; killed on drop.
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

impl TestServer {
    /// Start on a fresh data directory.
    pub fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let mut s = Self::start_on(&data_dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Start on a fresh data directory, the server's log (stderr) going to
    /// [`TestServer::log`] instead of the test's output.
    pub fn start_logged(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let log = tmp.path().join("server.log");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn_with(&data_dir, &extra, Some(&log));
        Self {
            child: Some(child),
            addr,
            data_dir,
            _tmp: Some(tmp),
            extra,
        }
    }

    /// The log of a server from [`TestServer::start_logged`].
    pub fn log(&self) -> String {
        let path = self._tmp.as_ref().map(|t| t.path().join("server.log"));
        path.and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// Start on an existing data directory.
    pub fn start_on(data_dir: &Path, extra: &[&str]) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(data_dir, &extra);
        Self {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
            _tmp: None,
            extra,
        }
    }

    /// Stop with SIGTERM (clean) or SIGKILL, then start again on the same data dir.
    pub fn restart(&mut self, clean: bool) {
        self.stop(clean);
        let (child, addr) = spawn(&self.data_dir, &self.extra);
        self.child = Some(child);
        self.addr = addr;
    }

    pub fn stop(&mut self, clean: bool) {
        if let Some(mut child) = self.child.take() {
            if clean {
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> FlightSqlServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        FlightSqlServiceClient::new(channel)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop(false);
    }
}

fn spawn(data_dir: &Path, extra: &[String]) -> (Child, String) {
    spawn_with(data_dir, extra, None)
}

fn spawn_with(data_dir: &Path, extra: &[String], log: Option<&Path>) -> (Child, String) {
    let port_file = data_dir.with_extension(format!("port-{}", std::process::id()));
    let _ = std::fs::remove_file(&port_file);
    let mut command = Command::new(env!("CARGO_BIN_EXE_contrail"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--temporal", "off", "--data-dir"])
        .arg(data_dir)
        .arg("--port-file")
        .arg(&port_file)
        .args(extra)
        .env("CONTRAIL_LOG", "warn,buoyant_kernel=off")
        .stdout(Stdio::null());
    if let Some(log) = log {
        command.stderr(std::fs::File::create(log).expect("log file"));
    }
    let child = command.spawn().expect("spawn contrail");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(addr) = std::fs::read_to_string(&port_file) {
            if !addr.is_empty() {
                return (child, addr.trim().to_string());
            }
        }
        assert!(Instant::now() < deadline, "server did not start within 60s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Read every endpoint of a FlightInfo.
pub async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    try_fetch(client, info).await.expect("fetch")
}

pub async fn try_fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let mut out = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = client.do_get(ticket).await?;
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        out.extend(batches);
    }
    Ok(out)
}

/// Run a query and pretty-print the result.
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> String {
    let info = client.execute(sql.to_string(), None).await.expect(sql);
    let batches = fetch(client, info).await;
    arrow::util::pretty::pretty_format_batches(&batches)
        .expect("format")
        .to_string()
}

/// gRPC calls with hand-made message bytes (what no generated client can send).
pub mod raw {
    use bytes::{Buf, BufMut};
    use futures::{Stream, StreamExt};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;
    use tonic::{Request, Status};

    /// Messages as they are on the wire.
    pub struct Bytes;
    pub struct Raw;

    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }

    impl Codec for Bytes {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    async fn ready(channel: Channel) -> Result<tonic::client::Grpc<Channel>, Status> {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(grpc)
    }

    /// A unary call: its response message.
    pub async fn unary(channel: Channel, path: &'static str, message: Vec<u8>) -> Result<Vec<u8>, Status> {
        ready(channel)
            .await?
            .unary(Request::new(message), PathAndQuery::from_static(path), Bytes)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A server-streaming call, read to its end: its messages.
    pub async fn server_streaming(
        channel: Channel,
        path: &'static str,
        message: Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, Status> {
        let mut stream = ready(channel)
            .await?
            .server_streaming(Request::new(message), PathAndQuery::from_static(path), Bytes)
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(message) = stream.message().await? {
            out.push(message);
        }
        Ok(out)
    }

    /// A bidirectional call (DoPut, DoExchange), read to its end.
    pub async fn streaming(
        channel: Channel,
        path: &'static str,
        messages: impl Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<Vec<Vec<u8>>, Status> {
        let mut stream = ready(channel)
            .await?
            .streaming(Request::new(messages.boxed()), PathAndQuery::from_static(path), Bytes)
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(message) = stream.message().await? {
            out.push(message);
        }
        Ok(out)
    }
}
