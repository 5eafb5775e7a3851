//! Data files that no commit will ever reference, left by a write that never
//! committed (the process killed in the middle of an `INSERT`, a CTAS or a
//! workflow's fragments): removed when the server starts.
//!
//! A file under a managed table's directory is an orphan when the table's current
//! version does not reference it, no commit still in its `_delta_log` adds or
//! removes it, and it is older than [`GRACE`]. The grace period keeps the files
//! of a write in flight (a worker's fragments, an ingest) until its commit, which
//! checks its files still exist ([`crate::sink::commit`]). Committed files,
//! including those an older version still reads, are never touched. A table
//! directory whose log has no commit (a `CREATE TABLE ... AS` killed before its
//! first commit) is removed whole once everything in it is older than the grace.
//!
//! Only at start: a write of this process in flight longer than the grace (a
//! huge inline `INSERT`) could otherwise lose its first files before it commits.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use deltalake::DeltaTable;
use tracing::{info, warn};
use url::Url;

/// How old an unreferenced file must be before it is removed.
pub const GRACE: Duration = Duration::from_secs(3600);

/// What a sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, other: Self) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// Remove the orphaned data files of the committed table `table` at `dir`.
pub(crate) fn sweep_table(table: &DeltaTable, dir: &Path, grace: Duration) -> Swept {
    let Some(referenced) = referenced(table, dir) else {
        return Swept::default();
    };
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut swept = Swept::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // A symbolic link is never followed nor removed: nothing outside the
            // table's own directory is touched.
            let (Ok(kind), Ok(meta)) = (entry.file_type(), entry.metadata()) else {
                continue;
            };
            if kind.is_symlink() {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                if name == "_delta_log" {
                    swept += sweep_commit_temporaries(&path, cutoff);
                } else {
                    stack.push(path); // partition directories
                }
                continue;
            }
            let data_file = name.ends_with(".parquet") && !name.starts_with(['.', '_']);
            if !data_file || referenced.contains(&path) || !older_than(&meta, cutoff) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    swept.files += 1;
                    swept.bytes += meta.len();
                }
                Err(e) => warn!(path = %path.display(), error = %e, "could not remove an orphaned data file"),
            }
        }
    }
    if swept.files > 0 {
        info!(table = %dir.display(), files = swept.files, bytes = swept.bytes, "removed data files no commit references");
    }
    swept
}

/// Every data file the table's current version or a commit still in its log
/// names; `None` if the log cannot be read whole (then nothing is removed).
fn referenced(table: &DeltaTable, dir: &Path) -> Option<HashSet<PathBuf>> {
    let base = Url::from_directory_path(dir).ok()?;
    let to_path = |relative: &str| {
        // Paths in the log are relative to the table and URL-encoded.
        Url::parse(relative)
            .or_else(|_| base.join(relative))
            .ok()
            .and_then(|u| u.to_file_path().ok())
    };
    let mut paths = HashSet::new();
    for uri in table.get_file_uris().ok()? {
        paths.insert(to_path(&uri)?);
    }
    for entry in std::fs::read_dir(dir.join("_delta_log")).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.ends_with(".json") && name.starts_with(|c: char| c.is_ascii_digit())) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).ok()?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let action: serde_json::Value = serde_json::from_str(line).ok()?;
            for kind in ["add", "remove", "cdc"] {
                if let Some(path) = action.get(kind).and_then(|a| a.get("path")).and_then(|p| p.as_str()) {
                    paths.insert(to_path(path)?);
                }
            }
        }
    }
    Some(paths)
}

/// deltalake writes a commit to a temporary file and renames it into place: one
/// left by a killed commit is never renamed.
fn sweep_commit_temporaries(log: &Path, cutoff: SystemTime) -> Swept {
    let mut swept = Swept::default();
    for entry in std::fs::read_dir(log).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if name.starts_with("_commit_") && name.ends_with(".tmp") && meta.is_file() && older_than(&meta, cutoff) {
            if std::fs::remove_file(entry.path()).is_ok() {
                swept.files += 1;
                swept.bytes += meta.len();
            }
        }
    }
    swept
}

/// Whether everything in the uncommitted table directory `dir` is older than
/// the grace period (so no write is still filling it).
pub(crate) fn abandoned(dir: &Path, grace: Duration) -> bool {
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        match std::fs::metadata(&at) {
            Ok(meta) if older_than(&meta, cutoff) => {}
            _ => return false,
        }
        if let Ok(entries) = std::fs::read_dir(&at) {
            for entry in entries.flatten() {
                match entry.metadata() {
                    Ok(meta) if meta.is_dir() && !entry.file_type().is_ok_and(|t| t.is_symlink()) => {
                        stack.push(entry.path())
                    }
                    Ok(meta) if older_than(&meta, cutoff) => {}
                    _ => return false,
                }
            }
        }
    }
    true
}

fn older_than(meta: &std::fs::Metadata, cutoff: SystemTime) -> bool {
    meta.modified().is_ok_and(|m| m < cutoff)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array};
    use futures::TryStreamExt;

    use super::*;
    use crate::{Engine, EngineOptions, Outcome, SessionSettings};

    fn age(path: &Path, by: Duration) {
        let file = std::fs::File::open(path).expect("open");
        file.set_modified(SystemTime::now() - by).expect("set mtime");
    }

    fn parquet_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        files.sort();
        files
    }

    async fn count(engine: &Engine, sql: &str) -> i64 {
        let Outcome::Rows(stream) = engine.sql(&mut SessionSettings::default(), sql).await.expect(sql) else {
            panic!("{sql}: not a query");
        };
        let batches: Vec<_> = stream.try_collect().await.expect("rows");
        let column = batches[0].column(0);
        let column = arrow::compute::cast(column, &arrow::datatypes::DataType::Int64).expect("cast");
        let ints = column.as_any().downcast_ref::<Int64Array>().expect("int64");
        assert_eq!(ints.len(), 1);
        ints.value(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_no_commit_names_go_after_the_grace_and_committed_ones_never() {
        let tmp = tempfile::tempdir().expect("tmp");
        let engine = Engine::open(EngineOptions::new(tmp.path())).await.expect("open");
        let mut settings = SessionSettings::default();
        for sql in [
            "CREATE TABLE t AS VALUES (1), (2)",
            "INSERT INTO t VALUES (3)",
            "DELETE FROM t WHERE column1 = 3", // a file only an older version reads
        ] {
            engine.sql(&mut settings, sql).await.expect(sql);
        }
        let catalog = engine.catalog();
        let dir = catalog.table_dir("public", "t").expect("dir");
        let committed = parquet_files(&dir);
        assert!(committed.len() >= 2, "{committed:?}");
        let old_orphan = dir.join("part-00000-killed-mid-write.parquet");
        let new_orphan = dir.join("part-00001-still-being-written.parquet");
        for orphan in [&old_orphan, &new_orphan] {
            std::fs::copy(&committed[0], orphan).expect("copy");
        }
        let hours = Duration::from_secs(2 * 3600);
        for file in committed.iter().chain([&old_orphan]) {
            age(file, hours); // only a reference keeps a committed file
        }
        let ghost = catalog.table_dir("public", "ghost").expect("dir");
        std::fs::create_dir_all(ghost.join("_delta_log")).expect("mkdir");
        std::fs::copy(&committed[0], ghost.join("part-0.parquet")).expect("copy");
        for path in [ghost.join("part-0.parquet"), ghost.join("_delta_log"), ghost.clone()] {
            age(&path, hours);
        }
        let young = catalog.table_dir("public", "young").expect("dir");
        std::fs::create_dir_all(&young).expect("mkdir");
        std::fs::copy(&committed[0], young.join("part-0.parquet")).expect("copy");

        let swept = catalog.sweep_orphans(GRACE).await;

        assert!(!old_orphan.exists(), "an unreferenced file past the grace is removed");
        assert!(new_orphan.exists(), "a write in flight keeps its files");
        for file in &committed {
            assert!(file.exists(), "committed {} is kept", file.display());
        }
        assert!(!ghost.exists(), "a table directory no commit created is removed");
        assert!(young.exists(), "... unless something in it is recent");
        assert_eq!(swept.files, 2, "{swept:?}");
        assert_eq!(count(&engine, "SELECT count(*) FROM t").await, 2);
        // The file only version 1 reads is still there for it.
        let v1 = deltalake::open_table_with_version(catalog.managed("public", "t").expect("t").url().clone(), 1)
            .await
            .expect("version 1");
        let files: Vec<String> = v1.get_file_uris().expect("files").collect();
        assert!(!files.is_empty());
        for uri in files {
            // A local table's file URIs are plain absolute paths.
            let path = Url::parse(&uri)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .unwrap_or_else(|| PathBuf::from(&uri));
            assert!(path.exists(), "{uri}");
        }
    }
}
