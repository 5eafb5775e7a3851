//! The persistent catalog.
//!
//! On disk, under the data directory:
//!
//! ```text
//! <data>/catalog.json                  schemas, views and external tables (SQL text),
//!                                      which tables are cached (`CACHE TABLE`)
//! <data>/tables/<schema>/<table>/      one Delta Lake table per managed table
//! <data>/trash/                        dropped tables on their way out
//! ```
//!
//! `catalog.json` is replaced atomically (write, fsync, rename, fsync the
//! directory), so a crash leaves either the old or the new definition. A managed
//! table exists exactly when its directory holds a committed Delta log; a
//! directory left behind by a `CREATE TABLE` that crashed before its first commit
//! is ignored on load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
    SchemaProvider,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};
use url::Url;

use crate::cache::{CachingSchema, TableCache};
use crate::error::{Error, Result};
use crate::managed::ManagedTable;

/// The one catalog Contrail serves.
pub const CATALOG: &str = "contrail";
/// The schema used when none is given.
pub const DEFAULT_SCHEMA: &str = "public";
const CATALOG_FILE: &str = "catalog.json";

/// What kind of catalog object a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// `CREATE VIEW`.
    View,
    /// `CREATE EXTERNAL TABLE`.
    External,
}

/// A view or external table, persisted by its defining SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub schema: String,
    pub name: String,
    pub kind: ObjectKind,
    pub sql: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct CatalogFile {
    version: u32,
    schemas: BTreeSet<String>,
    objects: Vec<StoredObject>,
    /// `schema.table` of every cached table.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    cached: BTreeSet<String>,
}

/// A number that changes whenever a name may resolve to another table: a
/// table registered or dropped in any schema (DDL, or another process's seen
/// by a refresh), a table cached or uncached, a managed table's columns
/// changed (replaced, or evolved by a write). A plan made at one version may
/// be reused while the version is unchanged (see [`Catalog::version`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Version(Arc<AtomicU64>);

impl Version {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// Catalog state shared by every session.
#[derive(Debug)]
pub struct Catalog {
    data_dir: PathBuf,
    list: Arc<MemoryCatalogProviderList>,
    root: Arc<MemoryCatalogProvider>,
    /// Managed tables by `schema.table`, with their concrete type.
    managed: DashMap<String, Arc<ManagedTable>>,
    /// Serializes DDL and owns the persisted definitions.
    file: Mutex<CatalogFile>,
    /// Rows of cached tables; every schema answers those from it.
    cache: Arc<TableCache>,
    version: Version,
}

impl Catalog {
    /// Open (or create) the catalog in `data_dir` and register every managed
    /// table. Views and external tables are replayed by the engine afterwards,
    /// see [`Catalog::stored_objects`]. Cached tables are marked in `cache`; their
    /// rows are loaded by the engine.
    pub async fn open(data_dir: &Path, cache: Arc<TableCache>) -> Result<Self> {
        let data_dir = std::path::absolute(data_dir).map_err(|e| io_err(data_dir, e))?;
        for dir in [data_dir.join("tables"), data_dir.join("trash")] {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| io_err(&dir, e))?;
        }
        empty_trash(&data_dir.join("trash")).await;

        let mut file = read_catalog_file(&data_dir).await?;
        file.version = 1;
        file.schemas.insert(DEFAULT_SCHEMA.to_string());

        let root = Arc::new(MemoryCatalogProvider::new());
        let list = Arc::new(MemoryCatalogProviderList::new());
        list.register_catalog(CATALOG.to_string(), root.clone());

        let catalog = Self {
            data_dir,
            list,
            root,
            managed: DashMap::new(),
            file: Mutex::new(CatalogFile::default()),
            cache,
            version: Version::default(),
        };
        for key in &file.cached {
            catalog.cache.mark(key);
        }

        // Schemas: the persisted list plus every directory under tables/.
        let mut schemas = file.schemas.clone();
        let mut dirs = read_dirs(&catalog.data_dir.join("tables")).await?;
        dirs.sort();
        schemas.extend(dirs.iter().cloned());
        file.schemas = schemas.clone();
        for schema in &schemas {
            catalog.register_schema(schema)?;
            let Ok(root) = catalog.table_root(schema) else {
                warn!(schema, "ignoring a schema whose name cannot be a directory");
                continue;
            };
            let mut tables = read_dirs(&root).await?;
            tables.sort();
            for table in tables {
                let Ok(dir) = catalog.table_dir(schema, &table) else {
                    warn!(schema, table, "ignoring a table whose name cannot be a directory");
                    continue;
                };
                if !is_committed_delta_table(&dir).await {
                    warn!(table = %dir.display(), "ignoring table directory without a committed Delta log");
                    continue;
                }
                let url = dir_url(&dir)?;
                let managed = ManagedTable::open(format!("{schema}.{table}"), url, catalog.version.clone()).await?;
                catalog.register_managed(schema, &table, Arc::new(managed))?;
            }
        }
        *catalog.file.lock().await = file;
        catalog.persist_current().await?;
        info!(data_dir = %catalog.data_dir.display(), schemas = schemas.len(), "catalog loaded");
        Ok(catalog)
    }

    /// The catalog's version: read it before planning, and a plan is still
    /// what planning would make while it reads the same (DML changes no name's
    /// table: managed tables show each write in place).
    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// The version itself, for the tables that change it.
    pub(crate) fn version_handle(&self) -> Version {
        self.version.clone()
    }

    /// The DataFusion catalog list every session shares.
    pub fn catalog_list(&self) -> Arc<dyn CatalogProviderList> {
        self.list.clone()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Views and external tables to replay at start-up, in creation order.
    pub async fn stored_objects(&self) -> Vec<StoredObject> {
        self.file.lock().await.objects.clone()
    }

    /// Names of all schemas, sorted.
    pub fn schema_names(&self) -> Vec<String> {
        let mut names = self.root.schema_names();
        names.sort();
        names
    }

    /// The table cache.
    pub fn cache(&self) -> &Arc<TableCache> {
        &self.cache
    }

    /// `schema.table` of every cached table.
    pub async fn cached_tables(&self) -> Vec<String> {
        self.file.lock().await.cached.iter().cloned().collect()
    }

    /// The table `schema.table` itself (never its cached rows), if there is one.
    pub async fn table_itself(
        &self,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        let provider = self.schema_provider(schema)?;
        let found = match provider.downcast_ref::<CachingSchema>() {
            Some(caching) => caching.table_itself(table).await,
            None => provider.table(table).await,
        };
        found.map_err(Error::plan)
    }

    /// Record whether `schema.table` is cached (the rows are the engine's to load).
    pub(crate) async fn set_cached(&self, schema: &str, table: &str, cached: bool) -> Result<()> {
        let key = key(schema, table);
        let mut file = self.file.lock().await;
        let changed = if cached {
            self.cache.mark(&key);
            file.cached.insert(key)
        } else {
            self.cache.remove(&key);
            file.cached.remove(&key)
        };
        self.version.bump();
        if changed {
            persist(&self.data_dir, &file).await?;
        }
        Ok(())
    }

    /// The DataFusion schema provider for `schema`.
    pub fn schema_provider(&self, schema: &str) -> Result<Arc<dyn SchemaProvider>> {
        self.root.schema(schema).ok_or_else(|| Error::NotFound {
            kind: "schema",
            name: schema.to_string(),
        })
    }

    /// Directory of a managed table; refuses names that are not one safe path
    /// component (see [`check_storage_name`]).
    pub fn table_dir(&self, schema: &str, table: &str) -> Result<PathBuf> {
        check_storage_name("table", table)?;
        Ok(self.table_root(schema)?.join(table))
    }

    fn table_root(&self, schema: &str) -> Result<PathBuf> {
        check_storage_name("schema", schema)?;
        Ok(self.data_dir.join("tables").join(schema))
    }

    /// The managed table `schema.table`, if it is one.
    pub fn managed(&self, schema: &str, table: &str) -> Option<Arc<ManagedTable>> {
        self.managed.get(&key(schema, table)).map(|m| m.value().clone())
    }

    /// Whether `schema.table` is a stored view or external table.
    pub async fn stored(&self, schema: &str, table: &str) -> Option<StoredObject> {
        self.file
            .lock()
            .await
            .objects
            .iter()
            .find(|o| o.schema == schema && o.name == table)
            .cloned()
    }

    // ---- mutations (callers hold the DDL lock) ----

    /// Create a schema.
    pub(crate) async fn create_schema(&self, schema: &str, if_not_exists: bool) -> Result<bool> {
        if self.root.schema(schema).is_some() {
            if if_not_exists {
                return Ok(false);
            }
            return Err(Error::AlreadyExists {
                kind: "schema",
                name: schema.to_string(),
            });
        }
        let dir = self.table_root(schema)?;
        tokio::fs::create_dir_all(&dir).await.map_err(|e| io_err(&dir, e))?;
        self.register_schema(schema)?;
        let mut file = self.file.lock().await;
        file.schemas.insert(schema.to_string());
        persist(&self.data_dir, &file).await?;
        Ok(true)
    }

    /// Drop a schema; with `cascade` its tables go too.
    pub(crate) async fn drop_schema(&self, schema: &str, if_exists: bool, cascade: bool) -> Result<bool> {
        let Some(provider) = self.root.schema(schema) else {
            if if_exists {
                return Ok(false);
            }
            return Err(Error::NotFound {
                kind: "schema",
                name: schema.to_string(),
            });
        };
        if schema == DEFAULT_SCHEMA {
            return Err(Error::unsupported("dropping the default schema 'public'"));
        }
        let tables = provider.table_names();
        if !tables.is_empty() && !cascade {
            return Err(Error::invalid(
                "DROP SCHEMA",
                format!("schema '{schema}' is not empty ({} tables); use CASCADE", tables.len()),
            ));
        }
        for t in &tables {
            self.drop_table(schema, t).await?;
        }
        self.root.deregister_schema(schema, true).map_err(Error::plan)?;
        let mut file = self.file.lock().await;
        file.schemas.remove(schema);
        persist(&self.data_dir, &file).await?;
        drop(file);
        let dir = self.table_root(schema)?;
        move_to_trash(&self.data_dir, &dir).await?;
        Ok(true)
    }

    /// Register a managed table that was just created on disk.
    pub(crate) fn register_managed(&self, schema: &str, table: &str, managed: Arc<ManagedTable>) -> Result<()> {
        self.schema_provider(schema)?
            .register_table(table.to_string(), managed.clone())
            .map_err(Error::plan)?;
        self.managed.insert(key(schema, table), managed);
        Ok(())
    }

    /// Record a view or external table (already registered with DataFusion).
    pub(crate) async fn add_object(&self, object: StoredObject) -> Result<()> {
        let mut file = self.file.lock().await;
        file.objects
            .retain(|o| !(o.schema == object.schema && o.name == object.name));
        file.objects.push(object);
        persist(&self.data_dir, &file).await
    }

    /// Drop any table-like object: managed table, view or external table.
    pub(crate) async fn drop_table(&self, schema: &str, table: &str) -> Result<()> {
        let provider = self.schema_provider(schema)?;
        let managed = self.managed(schema, table);
        {
            let mut file = self.file.lock().await;
            let before = file.objects.len();
            file.objects.retain(|o| !(o.schema == schema && o.name == table));
            let uncached = file.cached.remove(&key(schema, table));
            if file.objects.len() != before || uncached {
                persist(&self.data_dir, &file).await?;
            }
        }
        self.cache.remove(&key(schema, table));
        provider.deregister_table(table).map_err(Error::plan)?;
        self.managed.remove(&key(schema, table));
        if managed.is_some() {
            // Rename is atomic: after a crash the table is either fully there or gone.
            move_to_trash(&self.data_dir, &self.table_dir(schema, table)?).await?;
        }
        Ok(())
    }

    /// Register a read-only schema of built-in tables (`system`).
    pub(crate) fn register_builtin(
        &self,
        schema: &str,
        tables: impl IntoIterator<Item = (&'static str, Arc<dyn datafusion::catalog::TableProvider>)>,
    ) -> Result<()> {
        let provider = Arc::new(MemorySchemaProvider::new());
        for (name, table) in tables {
            provider.register_table(name.to_string(), table).map_err(Error::plan)?;
        }
        self.root.register_schema(schema, provider).map_err(Error::plan)?;
        Ok(())
    }

    /// Remove what writes that never committed left under the data directory
    /// (see [`crate::orphans`]): unreferenced data files of managed tables, and
    /// table directories without a commit, all older than `grace`.
    pub async fn sweep_orphans(&self, grace: std::time::Duration) -> crate::orphans::Swept {
        let mut swept = crate::orphans::Swept::default();
        let tables: Vec<Arc<ManagedTable>> = self.managed.iter().map(|m| Arc::clone(m.value())).collect();
        for managed in tables {
            let Ok(dir) = managed.url().to_file_path() else {
                continue;
            };
            let table = managed.delta();
            swept += tokio::task::spawn_blocking(move || crate::orphans::sweep_table(&table, &dir, grace))
                .await
                .unwrap_or_default();
        }
        let schemas = read_dirs(&self.data_dir.join("tables")).await.unwrap_or_default();
        for schema in schemas {
            let Ok(root) = self.table_root(&schema) else { continue };
            for table in read_dirs(&root).await.unwrap_or_default() {
                let Ok(dir) = self.table_dir(&schema, &table) else {
                    continue;
                };
                if self.managed(&schema, &table).is_some() || is_committed_delta_table(&dir).await {
                    continue;
                }
                let check = dir.clone();
                if tokio::task::spawn_blocking(move || crate::orphans::abandoned(&check, grace))
                    .await
                    .unwrap_or(false)
                {
                    info!(table = %dir.display(), "removing a table directory no commit ever created");
                    match move_to_trash(&self.data_dir, &dir).await {
                        Ok(()) => swept.files += 1,
                        Err(e) => warn!(table = %dir.display(), error = %e, "could not remove"),
                    }
                }
            }
        }
        swept
    }

    /// Pick up what other processes changed since this one loaded the catalog:
    /// new schemas and managed tables, dropped managed tables; returns views and
    /// external tables it has not registered yet (the engine replays them).
    pub(crate) async fn refresh(&self) -> Result<Vec<StoredObject>> {
        let on_disk = read_catalog_file(&self.data_dir).await?;
        let mut schemas = on_disk.schemas.clone();
        schemas.extend(read_dirs(&self.data_dir.join("tables")).await?);
        for schema in &schemas {
            self.register_schema(schema)?;
            let Ok(root) = self.table_root(schema) else { continue };
            for table in read_dirs(&root).await? {
                let Ok(dir) = self.table_dir(schema, &table) else {
                    continue;
                };
                if self.managed(schema, &table).is_none() && is_committed_delta_table(&dir).await {
                    let managed =
                        ManagedTable::open(format!("{schema}.{table}"), dir_url(&dir)?, self.version.clone()).await?;
                    self.register_managed(schema, &table, Arc::new(managed))?;
                }
            }
        }
        let gone: Vec<(String, String)> = self
            .managed
            .iter()
            .filter(|m| {
                m.value()
                    .url()
                    .to_file_path()
                    .is_ok_and(|p| !p.join("_delta_log").exists())
            })
            .filter_map(|m| m.key().split_once('.').map(|(s, t)| (s.to_string(), t.to_string())))
            .collect();
        for (schema, table) in gone {
            if let Ok(provider) = self.schema_provider(&schema) {
                provider.deregister_table(&table).map_err(Error::plan)?;
            }
            self.managed.remove(&key(&schema, &table));
        }
        let mut file = self.file.lock().await;
        let new: Vec<StoredObject> = on_disk
            .objects
            .iter()
            .filter(|o| !file.objects.contains(o))
            .cloned()
            .collect();
        file.objects = on_disk.objects;
        file.cached = on_disk.cached;
        file.schemas.extend(schemas);
        Ok(new)
    }

    fn register_schema(&self, schema: &str) -> Result<()> {
        if self.root.schema(schema).is_none() {
            let tables = Arc::new(MemorySchemaProvider::new());
            let caching = CachingSchema::new(schema, tables, Arc::clone(&self.cache), self.version.clone());
            self.root
                .register_schema(schema, Arc::new(caching))
                .map_err(Error::plan)?;
        }
        Ok(())
    }

    async fn persist_current(&self) -> Result<()> {
        let file = self.file.lock().await;
        persist(&self.data_dir, &file).await
    }
}

/// Longest schema or table name, in bytes: one file name on common file systems.
const MAX_NAME_BYTES: usize = 255;

/// Refuse a schema or table name that cannot be one directory under the data
/// directory as it is: empty, `.` or `..`, with a path separator, NUL or another
/// control character, or longer than a file name may be. Such a name would
/// otherwise resolve to the schema's own directory (`""`, `.`), its parent
/// (`..`) or somewhere else entirely, and a DROP would take that with it.
pub fn check_storage_name(kind: &'static str, name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("'.' and '..' name directories")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator ('/' or '\\')")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character (NUL, newline...)")
    } else if name.len() > MAX_NAME_BYTES {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(Error::invalid(
            format!("{kind} name"),
            format!("{}: {why}", crate::error::quoted_prefix(name)),
        )),
    }
}

fn key(schema: &str, table: &str) -> String {
    format!("{schema}.{table}")
}

/// `file://` URL of a directory.
pub(crate) fn dir_url(dir: &Path) -> Result<Url> {
    Url::from_directory_path(dir).map_err(|()| Error::invalid("path", dir.display().to_string()))
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::CatalogIo {
        path: path.display().to_string(),
        source,
    }
}

/// `catalog.json` of `data_dir` (empty when there is none yet).
async fn read_catalog_file(data_dir: &Path) -> Result<CatalogFile> {
    let path = data_dir.join(CATALOG_FILE);
    match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice::<CatalogFile>(&bytes).map_err(|e| Error::CatalogCorrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CatalogFile::default()),
        Err(e) => Err(io_err(&path, e)),
    }
}

async fn read_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir, e)),
    };
    while let Some(entry) = rd.next_entry().await.map_err(|e| io_err(dir, e))? {
        if entry.file_type().await.map_err(|e| io_err(dir, e))?.is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

async fn is_committed_delta_table(dir: &Path) -> bool {
    let log = dir.join("_delta_log");
    let Ok(mut rd) = tokio::fs::read_dir(&log).await else {
        return false;
    };
    while let Ok(Some(entry)) = rd.next_entry().await {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") || name.ends_with(".checkpoint.parquet") {
            return true;
        }
    }
    false
}

async fn persist(data_dir: &Path, file: &CatalogFile) -> Result<()> {
    let path = data_dir.join(CATALOG_FILE);
    let tmp = data_dir.join(format!("{CATALOG_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| Error::CatalogCorrupt {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let (tmp2, path2, dir) = (tmp.clone(), path.clone(), data_dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp2)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp2, &path2)?;
        std::fs::File::open(&dir)?.sync_all()
    })
    .await
    .map_err(|e| io_err(&path, std::io::Error::other(e)))?
    .map_err(|e| io_err(&path, e))
}

async fn move_to_trash(data_dir: &Path, dir: &Path) -> Result<()> {
    if tokio::fs::metadata(dir).await.is_err() {
        return Ok(());
    }
    let trash = data_dir.join("trash").join(uuid::Uuid::new_v4().to_string());
    tokio::fs::rename(dir, &trash).await.map_err(|e| io_err(dir, e))?;
    if let Err(e) = tokio::fs::remove_dir_all(&trash).await {
        warn!(path = %trash.display(), error = %e, "could not delete dropped table; it is removed on next start");
    }
    Ok(())
}

async fn empty_trash(trash: &Path) {
    if let Ok(entries) = read_dirs(trash).await {
        for e in entries {
            let _ = tokio::fs::remove_dir_all(trash.join(e)).await;
        }
    }
}
