//! The spool: fragment outputs as Arrow IPC stream files on the worker's disk.
//!
//! ```text
//! <data dir>/spool/<query id>/<stage>-<fragment>-<bucket>.arrows
//! <data dir>/spool/<query id>/plan-<stage>.bin     (the server's: large stage plans)
//! ```
//!
//! A fragment writes each bucket to a temporary file and renames it into place when
//! the fragment finishes, so a reader never sees a partial output and a retried
//! fragment replaces its earlier attempt atomically. Query directories are deleted
//! when they are older than the spool's TTL.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// Fragment outputs on local disk.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    ttl: Duration,
}

/// Identity of one spooled bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketKey<'a> {
    pub query_id: &'a str,
    pub stage: u32,
    pub fragment: u32,
    pub bucket: u32,
}

impl Spool {
    /// A spool under `data_dir/spool`, keeping outputs for `ttl`.
    pub fn open(data_dir: &Path, ttl: Duration) -> Result<Self> {
        let dir = data_dir.join("spool");
        fs::create_dir_all(&dir).map_err(|e| Error::spool(&dir, e))?;
        Ok(Self { dir, ttl })
    }

    fn query_dir(&self, query_id: &str) -> Result<PathBuf> {
        // Query ids are UUIDs; refuse anything that could name another path.
        if query_id.is_empty()
            || !query_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::InvalidTicket {
                what: "query id",
                message: format!("'{query_id}'"),
            });
        }
        Ok(self.dir.join(query_id))
    }

    fn path(&self, key: BucketKey<'_>) -> Result<PathBuf> {
        Ok(self
            .query_dir(key.query_id)?
            .join(format!("{}-{}-{}.arrows", key.stage, key.fragment, key.bucket)))
    }

    /// Start writing `buckets` outputs of one fragment.
    pub fn writer(
        &self,
        query_id: &str,
        stage: u32,
        fragment: u32,
        buckets: u32,
        schema: &SchemaRef,
    ) -> Result<FragmentWriter> {
        let dir = self.query_dir(query_id)?;
        fs::create_dir_all(&dir).map_err(|e| Error::spool(&dir, e))?;
        let attempt = uuid::Uuid::new_v4().simple().to_string();
        let mut files = Vec::with_capacity(buckets as usize);
        for bucket in 0..buckets.max(1) {
            let path = self.path(BucketKey {
                query_id,
                stage,
                fragment,
                bucket,
            })?;
            let tmp = path.with_extension(format!("{attempt}.tmp"));
            let file = File::create(&tmp).map_err(|e| Error::spool(&tmp, e))?;
            let writer = StreamWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema)?;
            files.push(BucketFile { path, tmp, writer });
        }
        Ok(FragmentWriter {
            files,
            rows: 0,
            bytes: 0,
        })
    }

    /// Store a stage plan too large for a workflow payload; returns its path.
    /// Workers read it from there (the data directory is shared, like tables).
    pub fn store_plan(&self, query_id: &str, stage: u32, bytes: &[u8]) -> Result<PathBuf> {
        let dir = self.query_dir(query_id)?;
        fs::create_dir_all(&dir).map_err(|e| Error::spool(&dir, e))?;
        let path = dir.join(format!("plan-{stage}.bin"));
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).map_err(|e| Error::spool(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| Error::spool(&path, e))?;
        Ok(path)
    }

    /// Read one spooled bucket (blocking I/O: call from a blocking thread).
    pub fn reader(&self, key: BucketKey<'_>) -> Result<StreamReader<BufReader<File>>> {
        let path = self.path(key)?;
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotSpooled {
                what: format!("{}/{}-{}-{}", key.query_id, key.stage, key.fragment, key.bucket),
            },
            _ => Error::spool(&path, e),
        })?;
        Ok(StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)?)
    }

    /// Delete everything spooled for a query.
    pub fn remove_query(&self, query_id: &str) -> Result<()> {
        let dir = self.query_dir(query_id)?;
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::spool(&dir, e)),
        }
    }

    /// Delete query directories older than the TTL; returns how many.
    pub fn expire(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= self.ttl);
            if old {
                match fs::remove_dir_all(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => warn!(path = %entry.path().display(), error = %e, "could not expire spool"),
                }
            }
        }
        if removed > 0 {
            debug!(removed, "expired spooled query outputs");
        }
        removed
    }

    /// Expire old outputs every minute until the task is dropped.
    pub fn spawn_janitor(&self) -> tokio::task::JoinHandle<()> {
        let spool = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let s = spool.clone();
                let _ = tokio::task::spawn_blocking(move || s.expire()).await;
            }
        })
    }
}

struct BucketFile {
    path: PathBuf,
    tmp: PathBuf,
    writer: StreamWriter<BufWriter<File>>,
}

/// Writes one fragment's buckets; [`FragmentWriter::finish`] publishes them.
pub struct FragmentWriter {
    files: Vec<BucketFile>,
    rows: u64,
    bytes: u64,
}

impl std::fmt::Debug for FragmentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FragmentWriter")
            .field("buckets", &self.files.len())
            .field("rows", &self.rows)
            .finish()
    }
}

impl FragmentWriter {
    /// Append a batch to one bucket.
    pub fn write(&mut self, bucket: usize, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let file = self.files.get_mut(bucket).ok_or_else(|| Error::InvalidTicket {
            what: "bucket",
            message: format!("{bucket} out of range"),
        })?;
        // A join's or a shuffle's output points into whole input buffers, which IPC
        // would write out with every batch.
        let batch = contrail_planner::types::compact_views(batch.clone());
        file.writer.write(&batch)?;
        self.rows += batch.num_rows() as u64;
        self.bytes += batch.get_array_memory_size() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Close the files and move them into place. Returns (rows, bytes).
    pub fn finish(mut self) -> Result<(u64, u64)> {
        for mut file in std::mem::take(&mut self.files) {
            file.writer.finish()?;
            let inner = file.writer.into_inner()?;
            inner
                .into_inner()
                .map_err(|e| Error::spool(&file.tmp, e.into_error()))?
                .sync_data()
                .map_err(|e| Error::spool(&file.tmp, e))?;
            fs::rename(&file.tmp, &file.path).map_err(|e| Error::spool(&file.path, e))?;
        }
        Ok((self.rows, self.bytes))
    }
}

impl Drop for FragmentWriter {
    fn drop(&mut self) {
        // An abandoned attempt (error, cancellation) leaves no temporary file behind.
        for file in &self.files {
            let _ = fs::remove_file(&file.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn write_publish_read_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), Duration::from_secs(3600)).expect("spool");
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).expect("batch");
        let key = BucketKey {
            query_id: "q-1",
            stage: 0,
            fragment: 1,
            bucket: 1,
        };
        let mut w = spool.writer("q-1", 0, 1, 2, &schema).expect("writer");
        w.write(1, &batch).expect("write");
        assert!(spool.reader(key).is_err(), "not visible before finish");
        assert_eq!(w.finish().expect("finish").0, 3);
        let rows: usize = spool
            .reader(key)
            .expect("reader")
            .map(|b| b.expect("batch").num_rows())
            .sum();
        assert_eq!(rows, 3);
        let empty = spool.reader(BucketKey { bucket: 0, ..key }).expect("empty bucket");
        assert_eq!(empty.count(), 0);
        assert!(matches!(
            spool.reader(BucketKey { fragment: 9, ..key }),
            Err(Error::NotSpooled { .. })
        ));
        assert!(
            spool
                .reader(BucketKey {
                    query_id: "../x",
                    ..key
                })
                .is_err()
        );
        assert_eq!(spool.expire(), 0);
        let expiring = Spool::open(dir.path(), Duration::ZERO).expect("spool");
        assert_eq!(expiring.expire(), 1);
        assert!(spool.reader(key).is_err());
    }
}
