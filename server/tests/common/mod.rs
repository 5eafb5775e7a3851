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
    let port_file = data_dir.with_extension(format!("port-{}", std::process::id()));
    let _ = std::fs::remove_file(&port_file);
    let child = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .args(["serve", "--listen", "127.0.0.1:0", "--temporal", "off", "--data-dir"])
        .arg(data_dir)
        .arg("--port-file")
        .arg(&port_file)
        .args(extra)
        .env("CONTRAIL_LOG", "warn,buoyant_kernel=off")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn contrail");
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
