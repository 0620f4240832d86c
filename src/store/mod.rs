//! Persistence of connections (design.md Part 1 "Where state lives"): the only
//! state that must survive a restart. A small synchronous [`Store`] trait with an
//! SQLite implementation ([`SqliteStore`]), and [`StoreHandle`], the cheap-clone
//! async face that runs every call on tokio's blocking pool, off the async threads.
//! In cluster mode the store is PostgreSQL ([`PgStore`]), shared by the nodes.

mod postgres;
mod sqlite;
mod sync;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Connection;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Who owns a connection: the config file (read-only over the API) or the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    File,
    Api,
}

impl Owner {
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::File => "file",
            Owner::Api => "api",
        }
    }
}

/// One stored connection with its bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub connection: Connection,
    pub owner: Owner,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// Sort keys of a listing (`sort=created_at`, `-connection_name`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    CreatedAt,
    UpdatedAt,
    ConnectionName,
    /// `active` (ascending: inactive first).
    Active,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

/// One page of one owner's connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub user_id: String,
    /// Case-insensitive (ASCII) substring of `connection_name`.
    pub name_contains: Option<String>,
    /// Case-insensitive (ASCII) substring of `user_name`.
    pub user_name_contains: Option<String>,
    pub sort: Sort,
    /// 1-based.
    pub page_number: u32,
    pub page_size: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub rows: Vec<Row>,
    /// Rows matching the query across all pages.
    pub total: u64,
}

/// What [`Store::sync_file`] changed: the ids of the file rows it removed,
/// and every row after it in creation order (as [`Store::all`] gives them),
/// so that a caller needs no second read of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub inserted: usize,
    pub updated: usize,
    pub removed: usize,
    pub removed_ids: Vec<String>,
    pub after: Vec<Row>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be created or opened (permissions, a
    /// missing directory that cannot be created, not a database).
    #[error("cannot open the store {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// The file opened but failed SQLite's integrity check: restore a backup
    /// or move the file away (the daemon never starts on an empty store
    /// silently).
    #[error("the store {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Written by a newer uacd: its schema version is unknown to this one.
    #[error("the store {path} has schema version {found}; this uacd knows up to {known}")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// Another connection already uses this `user_name` (unique: it is the Contact user).
    #[error("user_name {0:?} is already used by another connection")]
    DuplicateUserName(String),
    /// Another connection already has this id.
    #[error("connection id {0:?} already exists")]
    DuplicateId(String),
    /// A config-file connection collides with an API-owned one.
    #[error("config connection {id:?}: {reason}")]
    FileConflict { id: String, reason: String },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A PostgreSQL query failed (cluster mode): the database is down or
    /// unreachable, or refused the statement.
    #[error("store query failed: {0}")]
    Pg(String),
    #[error("stored connection {id:?} cannot be decoded: {source}")]
    Decode {
        id: String,
        source: serde_json::Error,
    },
    #[error("cannot encode connection: {0}")]
    Encode(serde_json::Error),
    /// The blocking task running the call panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
}

/// Connection persistence. Calls block (disk I/O, fsync): run them through
/// [`StoreHandle`], never on an async thread. Every write is durable when it
/// returns.
pub trait Store: Send + Sync + 'static {
    /// Every row, in creation order.
    fn all(&self) -> Result<Vec<Row>, StoreError>;
    fn get(&self, id: &str) -> Result<Option<Row>, StoreError>;
    fn list(&self, q: &ListQuery) -> Result<Page, StoreError>;
    fn insert(&self, row: &Row) -> Result<(), StoreError>;
    /// Replaces the row with `row.connection.id` (keeps `created_at`); false if absent.
    fn update(&self, row: &Row) -> Result<bool, StoreError>;
    /// False if absent.
    fn delete(&self, id: &str) -> Result<bool, StoreError>;
    /// Makes the file-owned rows equal to `file` in one transaction: inserts
    /// new ones, updates changed ones, removes those no longer in the file.
    /// For ids in `generated_passwords` (the file sets no `password`), a stored
    /// password is kept, so that a generated one survives restarts; the
    /// connections are updated in place with the password in force.
    fn sync_file(
        &self,
        file: &mut [Connection],
        generated_passwords: &BTreeSet<String>,
        now: i64,
    ) -> Result<SyncReport, StoreError>;
}

/// A cheap-clone async handle: each call runs on the blocking pool.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<dyn Store>,
}

impl StoreHandle {
    pub fn new(store: impl Store) -> StoreHandle {
        StoreHandle {
            inner: Arc::new(store),
        }
    }

    /// A handle on a store shared with another owner (cluster mode: the
    /// PostgreSQL store is also the cluster's database).
    pub fn from_arc(store: Arc<dyn Store>) -> StoreHandle {
        StoreHandle { inner: store }
    }

    /// Runs `f` against the store on tokio's blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(inner.as_ref()))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A `LIKE`/`ILIKE` pattern for "contains `s`", with `\` as the escape
/// character (both backends list with it).
fn like_contains(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}
