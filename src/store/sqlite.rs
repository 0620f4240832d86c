//! The SQLite store (rusqlite, bundled SQLite): WAL journal with
//! `synchronous=FULL` (each commit fsyncs the WAL, so an acknowledged write
//! survives `kill -9` and power loss), schema migrations by
//! `PRAGMA user_version`, file created 0600 (it holds PBX passwords).

use std::collections::{BTreeSet, HashMap};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{OptionalExtension, params};

use super::{
    ListQuery, Owner, Page, Row, SortKey, Store, StoreError, SyncReport, like_contains, sync,
};
use crate::config::{Connection, Secret};

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: connections. `settings` is the connection as JSON without its
    // passwords, which have their own columns.
    "CREATE TABLE connections (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        user_name TEXT NOT NULL UNIQUE,
        connection_name TEXT NOT NULL,
        owner TEXT NOT NULL CHECK (owner IN ('file', 'api')),
        settings TEXT NOT NULL,
        password TEXT NOT NULL,
        external_password TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX connections_user_created ON connections (user_id, created_at);",
    // 2: the other sort keys of a listing, per owner.
    "CREATE INDEX connections_user_name ON connections (user_id, connection_name);
    CREATE INDEX connections_user_updated ON connections (user_id, updated_at);",
];

const COLUMNS: &str = "id, owner, settings, password, external_password, created_at, updated_at";

/// SQLite behind two connections: one writer, one reader (WAL lets reads
/// proceed during a write). Locks are std mutexes held for one call, on a
/// blocking thread.
pub struct SqliteStore {
    writer: Mutex<rusqlite::Connection>,
    /// None for an in-memory store (one connection sees one database).
    reader: Option<Mutex<rusqlite::Connection>>,
    /// Rows per owner, so that an unfiltered listing needs no `count(*)`; None
    /// until first needed. Writers hold this lock across their commit, so a
    /// recount never interleaves with one.
    counts: Mutex<Option<HashMap<String, u64>>>,
}

impl SqliteStore {
    /// Opens (creating it 0600 if absent, with its directory 0700) and
    /// migrates the store at `path`; checks its integrity first.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.to_owned(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| open_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                warn_if_readable_by_others(path);
            }
            Err(e) => return Err(open_err(e.to_string())),
        }
        let writer = open_conn(path)?;
        check_integrity(&writer, path)?;
        migrate(&writer, path)?;
        let reader = open_conn(path)?;
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            reader: Some(Mutex::new(reader)),
            counts: Mutex::new(None),
        })
    }

    /// A store that lives in memory only (tests that need no persistence).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = rusqlite::Connection::open_in_memory().map_err(|e| StoreError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        migrate(&conn, &path)?;
        Ok(SqliteStore {
            writer: Mutex::new(conn),
            reader: None,
            counts: Mutex::new(None),
        })
    }

    fn writer(&self) -> MutexGuard<'_, rusqlite::Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counts(&self) -> MutexGuard<'_, Option<HashMap<String, u64>>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, rusqlite::Connection> {
        match &self.reader {
            Some(r) => r.lock().unwrap_or_else(|e| e.into_inner()),
            None => self.writer(),
        }
    }
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "store file is readable by group/others; it holds PBX passwords (chmod 600)");
        }
    }
}

fn open_conn(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let conn = rusqlite::Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(open_err)?;
    // journal_mode is the first statement that reads the file: "file is not a
    // database" shows up here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_owned(),
            reason: format!("cannot switch to WAL journal mode (got {mode})"),
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(open_err)?;
    Ok(conn)
}

fn check_integrity(conn: &rusqlite::Connection, path: &Path) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| corrupt(e.to_string()))?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| corrupt(e.to_string()))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(corrupt(lines.join("; ")))
    }
}

fn migrate(conn: &rusqlite::Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = i + 1, "store schema migrated");
    }
    Ok(())
}

fn owner_from(s: &str) -> Owner {
    if s == "file" { Owner::File } else { Owner::Api }
}

/// Decodes one row selected with [`COLUMNS`].
fn decode(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Row, StoreError>> {
    let id: String = r.get(0)?;
    let owner: String = r.get(1)?;
    // Borrowed from SQLite's row buffer: the document is parsed, not kept.
    let settings = r.get_ref(2)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let password: String = r.get(3)?;
    let external: Option<String> = r.get(4)?;
    let created_at: i64 = r.get(5)?;
    let updated_at: i64 = r.get(6)?;
    Ok(match serde_json::from_str::<Connection>(settings) {
        Ok(mut c) => {
            c.id = id;
            c.password = Secret::new(password);
            c.external_uac_settings.password = external.map(Secret::new);
            Ok(Row {
                connection: c,
                owner: owner_from(&owner),
                created_at,
                updated_at,
            })
        }
        Err(source) => Err(StoreError::Decode { id, source }),
    })
}

fn collect(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    for r in stmt.query_map(params, decode)? {
        out.push(r??);
    }
    Ok(out)
}

/// Frees the connection's page cache after a pass over every row (start-up,
/// the config file's sync). SQLite keeps up to `cache_size` (2 MiB) of
/// pages per connection, and these pages are not read again until the next
/// such pass: at 10,000 connections that is 200 bytes each, kept for
/// nothing. Later reads fill the cache again as they need it.
fn release_cache(conn: &rusqlite::Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA shrink_memory") {
        tracing::debug!(error = %e, "PRAGMA shrink_memory failed");
    }
}

/// Every row, by `created_at` then `seq`. Read in rowid (`seq`) order and
/// sorted here: rows are inserted in time order, so the stable sort finds
/// one run and moves nothing, where SQLite's `ORDER BY` would sort the
/// whole table's records through its sorter (a third of a start-up read).
fn read_all(conn: &rusqlite::Connection) -> Result<Vec<Row>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM connections ORDER BY seq"))?;
    let mut rows = collect(&mut stmt, [])?;
    rows.sort_by_key(|r| r.created_at);
    Ok(rows)
}

fn encode(c: &Connection) -> Result<String, StoreError> {
    serde_json::to_string(c).map_err(StoreError::Encode)
}

/// Maps UNIQUE violations to the typed errors.
fn unique(e: rusqlite::Error, c: &Connection) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, Some(msg)) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        if msg.contains("connections.user_name") {
            return StoreError::DuplicateUserName(c.user_name.clone());
        }
        if msg.contains("connections.id") {
            return StoreError::DuplicateId(c.id.clone());
        }
    }
    StoreError::Sql(e)
}

fn insert_row(conn: &rusqlite::Connection, row: &Row) -> Result<(), StoreError> {
    let c = &row.connection;
    // Cached: a store import inserts thousands of rows, and preparing the
    // statement each time cost more than the insert itself.
    conn.prepare_cached(
        "INSERT INTO connections (id, user_id, user_name, connection_name, owner, settings, password, external_password, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(
        params![
            c.id,
            c.user_id,
            c.user_name,
            c.connection_name,
            row.owner.as_str(),
            encode(c)?,
            c.password.expose(),
            c.external_uac_settings.password.as_ref().map(Secret::expose),
            row.created_at,
            row.updated_at
        ],
    )
    .map_err(|e| unique(e, c))?;
    Ok(())
}

fn update_row(conn: &rusqlite::Connection, row: &Row) -> Result<bool, StoreError> {
    let c = &row.connection;
    let n = conn
        .prepare_cached(
            "UPDATE connections SET user_id = ?2, user_name = ?3, connection_name = ?4, owner = ?5,
             settings = ?6, password = ?7, external_password = ?8, updated_at = ?9 WHERE id = ?1",
        )?
        .execute(params![
            c.id,
            c.user_id,
            c.user_name,
            c.connection_name,
            row.owner.as_str(),
            encode(c)?,
            c.password.expose(),
            c.external_uac_settings
                .password
                .as_ref()
                .map(Secret::expose),
            row.updated_at
        ])
        .map_err(|e| unique(e, c))?;
    Ok(n > 0)
}

/// `LIKE` pattern for "contains `s`", with `\` as the escape character.
/// `ORDER BY` of a listing, its page size and offset.
fn order_and_page(q: &ListQuery) -> (String, i64, i64) {
    let column = match q.sort.key {
        SortKey::CreatedAt => "created_at",
        SortKey::UpdatedAt => "updated_at",
        SortKey::ConnectionName => "connection_name",
        SortKey::Active => "json_extract(settings, '$.active')",
    };
    let dir = if q.sort.descending { "DESC" } else { "ASC" };
    let size = i64::from(q.page_size.max(1));
    let offset = (i64::from(q.page_number.max(1)) - 1).saturating_mul(size);
    (format!("{column} {dir}, seq {dir}"), size, offset)
}

impl SqliteStore {
    /// A listing filtered by `user_name` too (the v1 `filter_auth_user_name`):
    /// rare, so counted and paged by a plain scan of the owner's rows.
    fn list_filtered(
        &self,
        conn: &rusqlite::Connection,
        q: &ListQuery,
        name: Option<String>,
        user_name: String,
    ) -> Result<Page, StoreError> {
        let filter = "user_id = ?1 AND (?2 IS NULL OR connection_name LIKE ?2 ESCAPE '\\')
                      AND user_name LIKE ?5 ESCAPE '\\'";
        let total: i64 = conn
            .prepare_cached(&format!("SELECT count(*) FROM connections WHERE {filter}"))?
            .query_row(params![q.user_id, name, 0, 0, user_name], |r| r.get(0))?;
        let (order, size, offset) = order_and_page(q);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM connections WHERE {filter} ORDER BY {order} LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = collect(&mut stmt, params![q.user_id, name, size, offset, user_name])?;
        Ok(Page {
            rows,
            total: u64::try_from(total).unwrap_or(0),
        })
    }
}

impl Store for SqliteStore {
    fn all(&self) -> Result<Vec<Row>, StoreError> {
        let conn = self.reader();
        let rows = read_all(&conn)?;
        release_cache(&conn);
        Ok(rows)
    }

    fn get(&self, id: &str) -> Result<Option<Row>, StoreError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM connections WHERE id = ?1"))?;
        let row = stmt.query_row([id], decode).optional()?;
        row.transpose()
    }

    fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let conn = self.reader();
        // Without a name filter the count and the page come from an index alone.
        let pattern = q.name_contains.as_deref().map(like_contains);
        if let Some(user_pattern) = q.user_name_contains.as_deref().map(like_contains) {
            return self.list_filtered(&conn, q, pattern, user_pattern);
        }
        // A name filter is evaluated on the (user_id, connection_name) index
        // alone (it covers seq, the rowid): the page query then sorts only
        // the matching rows instead of visiting every row of the owner in
        // sort order to test its name.
        let filter = if pattern.is_some() {
            "seq IN (SELECT seq FROM connections INDEXED BY connections_user_name
                     WHERE user_id = ?1 AND connection_name LIKE ?2 ESCAPE '\\')"
        } else {
            "user_id = ?1 AND ?2 IS NULL"
        };
        let total: i64 = if pattern.is_some() {
            conn.prepare_cached(&format!("SELECT count(*) FROM connections WHERE {filter}"))?
                .query_row(params![q.user_id, pattern], |r| r.get(0))?
        } else {
            let mut counts = self.counts();
            if counts.is_none() {
                let mut stmt = conn
                    .prepare_cached("SELECT user_id, count(*) FROM connections GROUP BY user_id")?;
                let all = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                    .map(|r| r.map(|(u, n)| (u, u64::try_from(n).unwrap_or(0))))
                    .collect::<Result<HashMap<_, _>, _>>()?;
                *counts = Some(all);
            }
            let n = counts
                .as_ref()
                .and_then(|m| m.get(&q.user_id).copied())
                .unwrap_or(0);
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        let (order, size, offset) = order_and_page(q);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM connections WHERE {filter}
             ORDER BY {order} LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = collect(&mut stmt, params![q.user_id, pattern, size, offset])?;
        Ok(Page {
            rows,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    fn insert(&self, row: &Row) -> Result<(), StoreError> {
        let w = self.writer();
        let mut counts = self.counts();
        insert_row(&w, row)?;
        if let Some(m) = counts.as_mut() {
            *m.entry(row.connection.user_id.clone()).or_default() += 1;
        }
        Ok(())
    }

    fn update(&self, row: &Row) -> Result<bool, StoreError> {
        let w = self.writer();
        let mut counts = self.counts();
        let changed = update_row(&w, row)?;
        // The owner may have changed: recount when next needed.
        *counts = None;
        Ok(changed)
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let w = self.writer();
        let mut counts = self.counts();
        let owner: Option<String> = w
            .query_row(
                "DELETE FROM connections WHERE id = ?1 RETURNING user_id",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        if let (Some(m), Some(u)) = (counts.as_mut(), &owner)
            && let Some(n) = m.get_mut(u)
        {
            *n = n.saturating_sub(1);
        }
        Ok(owner.is_some())
    }

    fn sync_file(
        &self,
        file: &mut [Connection],
        generated_passwords: &BTreeSet<String>,
        now: i64,
    ) -> Result<SyncReport, StoreError> {
        let conn = self.writer();
        let mut counts = self.counts();
        *counts = None;
        let tx = conn.unchecked_transaction()?;
        let existing = read_all(&tx)?;
        let writes = sync::plan(&existing, file, generated_passwords, now)?;
        for w in &writes {
            match w {
                sync::Write::Remove(id) => {
                    tx.prepare_cached("DELETE FROM connections WHERE id = ?1")?
                        .execute([id])?;
                }
                sync::Write::Update(row) => {
                    update_row(&tx, row).map_err(|e| sync::file_conflict(e, &row.connection))?;
                }
                sync::Write::Insert(row) => {
                    insert_row(&tx, row).map_err(|e| sync::file_conflict(e, &row.connection))?;
                }
            }
        }
        tx.commit()?;
        release_cache(&conn);
        Ok(sync::report(existing, writes))
    }
}

#[cfg(test)]
mod tests;
