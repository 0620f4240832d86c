//! The PostgreSQL store (cluster mode, `[store] url`): the same semantics as
//! the SQLite one (an API write returns when committed; config-file rows
//! synced in one transaction), plus what the nodes of a cluster share: the
//! dialog-token key, a change counter that other nodes follow (live apply),
//! and the lease and status tables of `cluster` (see `postgres/cluster.rs`).
//! Connections are JSON (`jsonb`) as in SQLite, so new fields need no
//! migration. Synchronous client (`postgres`), a small pool of connections.

mod cluster;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::{
    ListQuery, Owner, Page, Row, SortKey, Store, StoreError, SyncReport, like_contains, sync,
};
use crate::config::{Connection, Secret};

/// Schema migrations; entry `i` takes `uacd_schema.version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: connections (as SQLite's, `settings` as jsonb), the change counter
    // other nodes follow, deletions (so that a follower sees them), shared
    // secrets, nodes, leases and persisted registration status.
    "CREATE SEQUENCE uacd_changes;
    CREATE TABLE connections (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        user_id text NOT NULL,
        user_name text COLLATE \"C\" NOT NULL UNIQUE,
        connection_name text COLLATE \"C\" NOT NULL,
        owner text NOT NULL CHECK (owner IN ('file', 'api')),
        settings jsonb NOT NULL,
        password text NOT NULL,
        external_password text,
        created_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        change bigint NOT NULL DEFAULT nextval('uacd_changes')
    );
    CREATE INDEX connections_user_created ON connections (user_id, created_at);
    CREATE INDEX connections_user_name ON connections (user_id, connection_name);
    CREATE INDEX connections_user_updated ON connections (user_id, updated_at);
    CREATE INDEX connections_change ON connections (change);
    CREATE TABLE connection_deletions (
        id text NOT NULL,
        change bigint NOT NULL DEFAULT nextval('uacd_changes')
    );
    CREATE INDEX connection_deletions_change ON connection_deletions (change);
    CREATE TABLE secrets (name text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE cluster_nodes (
        node_id text PRIMARY KEY,
        heartbeat_at timestamptz NOT NULL,
        started_at timestamptz NOT NULL
    );
    CREATE TABLE leases (
        connection_id text PRIMARY KEY,
        holder text,
        epoch bigint NOT NULL,
        since timestamptz NOT NULL,
        taken_from text
    );
    CREATE INDEX leases_holder ON leases (holder);
    CREATE SEQUENCE uacd_status_changes;
    CREATE TABLE registration_status (
        connection_id text PRIMARY KEY,
        node_id text,
        status integer NOT NULL,
        last_response text,
        registered_ip text,
        expires_at bigint,
        updated_at bigint NOT NULL,
        change bigint NOT NULL DEFAULT nextval('uacd_status_changes'),
        written_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX registration_status_change ON registration_status (change);
    CREATE INDEX registration_status_written ON registration_status (written_at);",
];

pub(super) const COLUMNS: &str =
    "id, owner, settings::text, password, external_password, created_at, updated_at";

/// Connections in the pool: API reads and writes, the cluster loop and the
/// change follower each get one without waiting on the others.
const POOL: usize = 4;

/// A pool of synchronous clients; a slot whose connection broke is
/// reconnected on its next use. Locks are held for one call, on a blocking
/// thread.
pub struct PgStore {
    config: postgres::Config,
    /// What the URL names, without its password (for messages).
    shown: String,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

/// The server's message when there is one (`postgres::Error` displays a
/// server error as just "db error").
pub(super) fn sql(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Pg(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Pg(e.to_string()),
    }
}

impl PgStore {
    /// Connects to `url` (the password, when not in it, from `password`)
    /// and migrates the schema.
    pub fn open(url: &str, password: Option<&str>) -> Result<PgStore, StoreError> {
        let shown = redact(url);
        let open_err = |reason: String| StoreError::Open {
            path: shown.clone().into(),
            reason,
        };
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| open_err(format!("not a PostgreSQL URL: {e}")))?;
        if let Some(p) = password {
            config.password(p);
        }
        config
            .connect_timeout(Duration::from_secs(3))
            .tcp_user_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("uacd");
        let store = PgStore {
            config,
            shown: shown.clone(),
            slots: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        store.with(migrate).map_err(|e| match e {
            StoreError::NewerSchema { found, known, .. } => StoreError::NewerSchema {
                path: shown.clone().into(),
                found,
                known,
            },
            other => open_err(other.to_string()),
        })?;
        Ok(store)
    }

    /// The URL without its password, for logs.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn slot(&self) -> MutexGuard<'_, Option<Client>> {
        for s in &self.slots {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on a pooled client (connecting it first if needed); a
    /// client left closed by an error is dropped, to reconnect next time.
    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.slot();
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(self.config.connect(NoTls).map_err(sql)?);
        }
        let client = slot.as_mut().expect("connected above");
        let out = f(client);
        if client.is_closed() {
            *slot = None;
        }
        out
    }

    /// The dialog-token key shared by every node: created by the first
    /// node that asks, read by the others.
    pub fn dialog_secret(&self) -> Result<[u8; 16], StoreError> {
        let fresh: [u8; 16] = rand::random();
        self.with(|c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES ('dialog_key', $1)
                 ON CONFLICT (name) DO NOTHING",
                &[&fresh.as_slice()],
            )
            .map_err(sql)?;
            let v: Vec<u8> = c
                .query_one("SELECT value FROM secrets WHERE name = 'dialog_key'", &[])
                .map_err(sql)?
                .get(0);
            <[u8; 16]>::try_from(v.as_slice())
                .map_err(|_| StoreError::Pg("stored dialog key has the wrong length".into()))
        })
    }
}

/// A `postgres::Client` blocks on its own runtime when dropped (it says
/// goodbye to the server), which panics on an async thread: the last handle
/// may go away there, so the clients are closed on a thread of their own.
impl Drop for PgStore {
    fn drop(&mut self) {
        let clients: Vec<Client> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.get_mut().unwrap_or_else(|e| e.into_inner()).take())
            .collect();
        if !clients.is_empty() {
            let _ = std::thread::spawn(move || drop(clients)).join();
        }
    }
}

/// How the store is named in logs and errors: built from the parsed
/// config (user, hosts, ports, database), never from the text, so no
/// password reaches a line however it was written (`user:secret@`,
/// `?password=`, `sslpassword=`, unencoded characters); `***` says one was
/// given. Text that does not parse is not shown at all.
fn redact(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => shown(&c),
        Err(_) => "postgres://…".into(),
    }
}

fn shown(c: &postgres::Config) -> String {
    use postgres::config::Host;
    let mut out = String::from("postgres://");
    if let Some(user) = c.get_user() {
        out.push_str(user);
    }
    if c.get_password().is_some() {
        out.push_str(":***");
    }
    if c.get_user().is_some() || c.get_password().is_some() {
        out.push('@');
    }
    let ports = c.get_ports();
    for (i, host) in c.get_hosts().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match host {
            Host::Tcp(h) if h.contains(':') => out.push_str(&format!("[{h}]")),
            Host::Tcp(h) => out.push_str(h),
            Host::Unix(p) => out.push_str(&p.display().to_string()),
        }
        // One port applies to every host; else they pair up.
        if let Some(port) = ports.get(i).or(ports.first().filter(|_| ports.len() == 1)) {
            out.push_str(&format!(":{port}"));
        }
    }
    if let Some(db) = c.get_dbname() {
        out.push('/');
        out.push_str(db);
    }
    out
}

fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction().map_err(sql)?;
    // The lock first: nodes starting together would otherwise race on
    // CREATE TABLE IF NOT EXISTS (a unique violation in pg_type).
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7517);
         CREATE TABLE IF NOT EXISTS uacd_schema (version bigint NOT NULL);",
    )
    .map_err(sql)?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM uacd_schema", &[])
        .map_err(sql)?
    {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO uacd_schema (version) VALUES (0)", &[])
                .map_err(sql)?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::NewerSchema {
            path: "postgres".into(),
            found: version,
            known,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(step).map_err(sql)?;
        tx.execute("UPDATE uacd_schema SET version = $1", &[&(i as i64 + 1)])
            .map_err(sql)?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    tx.commit().map_err(sql)
}

/// A write transaction. Writers take one lock, so that change numbers are
/// handed out in commit order: a follower that has seen change `n` has seen
/// every change below it (a sequence alone gives no such order).
fn writing(c: &mut Client) -> Result<postgres::Transaction<'_>, StoreError> {
    let mut tx = c.transaction().map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock(7518)", &[])
        .map_err(sql)?;
    Ok(tx)
}

fn owner_from(s: &str) -> Owner {
    if s == "file" { Owner::File } else { Owner::Api }
}

/// Decodes one row selected with [`COLUMNS`].
pub(super) fn decode(r: &postgres::Row) -> Result<Row, StoreError> {
    let id: String = r.get(0);
    let owner: String = r.get(1);
    let settings: String = r.get(2);
    let password: String = r.get(3);
    let external: Option<String> = r.get(4);
    match serde_json::from_str::<Connection>(&settings) {
        Ok(mut c) => {
            c.id = id;
            c.password = Secret::new(password);
            c.external_uac_settings.password = external.map(Secret::new);
            Ok(Row {
                connection: c,
                owner: owner_from(&owner),
                created_at: r.get(5),
                updated_at: r.get(6),
            })
        }
        Err(source) => Err(StoreError::Decode { id, source }),
    }
}

fn decode_all(rows: &[postgres::Row]) -> Result<Vec<Row>, StoreError> {
    rows.iter().map(decode).collect()
}

fn encode(c: &Connection) -> Result<String, StoreError> {
    serde_json::to_string(c).map_err(StoreError::Encode)
}

/// Maps UNIQUE violations to the typed errors.
fn unique(e: postgres::Error, c: &Connection) -> StoreError {
    if let Some(db) = e.as_db_error()
        && *db.code() == postgres::error::SqlState::UNIQUE_VIOLATION
    {
        match db.constraint() {
            Some("connections_user_name_key") => {
                return StoreError::DuplicateUserName(c.user_name.clone());
            }
            Some("connections_id_key") => return StoreError::DuplicateId(c.id.clone()),
            _ => {}
        }
    }
    sql(e)
}

fn insert_row(c: &mut impl postgres::GenericClient, row: &Row) -> Result<(), StoreError> {
    let conn = &row.connection;
    c.execute(
        "INSERT INTO connections (id, user_id, user_name, connection_name, owner, settings, password, external_password, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, CAST($6::text AS jsonb), $7, $8, $9, $10)",
        &[
            &conn.id,
            &conn.user_id,
            &conn.user_name,
            &conn.connection_name,
            &row.owner.as_str(),
            &encode(conn)?,
            &conn.password.expose(),
            &conn.external_uac_settings.password.as_ref().map(Secret::expose),
            &row.created_at,
            &row.updated_at,
        ],
    )
    .map_err(|e| unique(e, conn))?;
    Ok(())
}

fn update_row(c: &mut impl postgres::GenericClient, row: &Row) -> Result<bool, StoreError> {
    let conn = &row.connection;
    let n = c
        .execute(
            "UPDATE connections SET user_id = $2, user_name = $3, connection_name = $4, owner = $5,
             settings = CAST($6::text AS jsonb), password = $7, external_password = $8,
             updated_at = $9, change = nextval('uacd_changes') WHERE id = $1",
            &[
                &conn.id,
                &conn.user_id,
                &conn.user_name,
                &conn.connection_name,
                &row.owner.as_str(),
                &encode(conn)?,
                &conn.password.expose(),
                &conn
                    .external_uac_settings
                    .password
                    .as_ref()
                    .map(Secret::expose),
                &row.updated_at,
            ],
        )
        .map_err(|e| unique(e, conn))?;
    Ok(n > 0)
}

fn delete_row(c: &mut impl postgres::GenericClient, id: &str) -> Result<bool, StoreError> {
    let n = c
        .execute("DELETE FROM connections WHERE id = $1", &[&id])
        .map_err(sql)?;
    if n > 0 {
        c.execute("INSERT INTO connection_deletions (id) VALUES ($1)", &[&id])
            .map_err(sql)?;
    }
    Ok(n > 0)
}

impl Store for PgStore {
    fn all(&self) -> Result<Vec<Row>, StoreError> {
        self.with(|c| {
            let rows = c
                .query(
                    &format!("SELECT {COLUMNS} FROM connections ORDER BY created_at, seq"),
                    &[],
                )
                .map_err(sql)?;
            decode_all(&rows)
        })
    }

    fn get(&self, id: &str) -> Result<Option<Row>, StoreError> {
        self.with(|c| {
            let row = c
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM connections WHERE id = $1"),
                    &[&id],
                )
                .map_err(sql)?;
            row.as_ref().map(decode).transpose()
        })
    }

    fn list(&self, q: &ListQuery) -> Result<Page, StoreError> {
        let name = q.name_contains.as_deref().map(like_contains);
        let user_name = q.user_name_contains.as_deref().map(like_contains);
        let column = match q.sort.key {
            SortKey::CreatedAt => "created_at",
            SortKey::UpdatedAt => "updated_at",
            SortKey::ConnectionName => "connection_name",
            SortKey::Active => "(settings->'active')::boolean",
        };
        let dir = if q.sort.descending { "DESC" } else { "ASC" };
        let size = i64::from(q.page_size.max(1));
        let offset = (i64::from(q.page_number.max(1)) - 1).saturating_mul(size);
        // Case-insensitive like SQLite's LIKE (which folds ASCII only).
        let filter = "user_id = $1 AND ($2::text IS NULL OR connection_name ILIKE $2 ESCAPE '\\')
                      AND ($3::text IS NULL OR user_name ILIKE $3 ESCAPE '\\')";
        self.with(|c| {
            let total: i64 = c
                .query_one(
                    &format!("SELECT count(*) FROM connections WHERE {filter}"),
                    &[&q.user_id, &name, &user_name],
                )
                .map_err(sql)?
                .get(0);
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM connections WHERE {filter}
                         ORDER BY {column} {dir}, seq {dir} LIMIT $4 OFFSET $5"
                    ),
                    &[&q.user_id, &name, &user_name, &size, &offset],
                )
                .map_err(sql)?;
            Ok(Page {
                rows: decode_all(&rows)?,
                total: u64::try_from(total).unwrap_or(0),
            })
        })
    }

    fn insert(&self, row: &Row) -> Result<(), StoreError> {
        self.with(|c| {
            let mut tx = writing(c)?;
            insert_row(&mut tx, row)?;
            tx.commit().map_err(sql)
        })
    }

    fn update(&self, row: &Row) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = writing(c)?;
            let found = update_row(&mut tx, row)?;
            tx.commit().map_err(sql)?;
            Ok(found)
        })
    }

    fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let mut tx = writing(c)?;
            let found = delete_row(&mut tx, id)?;
            tx.commit().map_err(sql)?;
            Ok(found)
        })
    }

    fn sync_file(
        &self,
        file: &mut [Connection],
        generated_passwords: &BTreeSet<String>,
        now: i64,
    ) -> Result<SyncReport, StoreError> {
        self.with(|c| {
            // Nodes starting together sync one after the other: the first
            // one's generated passwords are the ones every node keeps.
            let mut tx = writing(c)?;
            let existing = decode_all(
                &tx.query(
                    &format!("SELECT {COLUMNS} FROM connections ORDER BY created_at, seq"),
                    &[],
                )
                .map_err(sql)?,
            )?;
            let writes = sync::plan(&existing, file, generated_passwords, now)?;
            for w in &writes {
                match w {
                    sync::Write::Remove(id) => {
                        delete_row(&mut tx, id)?;
                    }
                    sync::Write::Update(row) => {
                        update_row(&mut tx, row)
                            .map_err(|e| sync::file_conflict(e, &row.connection))?;
                    }
                    sync::Write::Insert(row) => {
                        insert_row(&mut tx, row)
                            .map_err(|e| sync::file_conflict(e, &row.connection))?;
                    }
                }
            }
            tx.commit().map_err(sql)?;
            Ok(sync::report(existing, writes))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn the_password_never_shows() {
        let cases = [
            (
                "postgres://uacd:secret@db.example.net/uacd",
                "postgres://uacd:***@db.example.net:5432/uacd",
            ),
            ("postgres://db/uacd", "postgres://db:5432/uacd"),
            ("postgres://u@db:5433/uacd", "postgres://u@db:5433/uacd"),
            ("host=db password=x", "postgres://:***@db"),
            (
                "postgres://u@db/uacd?password=secret&sslmode=disable",
                "postgres://u:***@db:5432/uacd",
            ),
            // An option the client does not know: refused, so not shown.
            (
                "postgres://u:secret@db/uacd?sslpassword=secret",
                "postgres://…",
            ),
            (
                "postgres://u@a:6000,[::1]/x",
                "postgres://u@a:6000,[::1]:5432/x",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(redact(url), want, "{url}");
        }
        // Never any part of text the parser reads otherwise or refuses.
        for bad in [
            "postgres://u:pa?ss@db/x?password=s3cr",
            "postgres://u:s3cr@[db/x",
            "nothing s3cr",
        ] {
            let shown = redact(bad);
            assert!(
                !shown.contains("s3cr") && !shown.contains("pa"),
                "{bad} -> {shown}"
            );
        }
    }
}
