//! What a config-file sync writes (pure; [`super::Store::sync_file`] of each
//! backend runs the plan inside its transaction).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Owner, Row, StoreError, SyncReport};
use crate::config::Connection;

/// One write of a sync, in the order it must be made.
#[derive(Debug)]
pub(super) enum Write {
    Remove(String),
    Update(Row),
    Insert(Row),
}

/// The writes that make the file-owned rows of `existing` equal to `file`:
/// removals first (so that a `user_name` can move between file connections),
/// then updates and inserts in file order. For ids in `generated_passwords`
/// the stored password is kept, and written back into `file`. An API-owned
/// row with a file connection's id is a conflict.
pub(super) fn plan(
    existing: &[Row],
    file: &mut [Connection],
    generated_passwords: &BTreeSet<String>,
    now: i64,
) -> Result<Vec<Write>, StoreError> {
    let wanted: BTreeSet<&str> = file.iter().map(|c| c.id.as_str()).collect();
    // By id: a linear search per file connection made a reload O(N²)
    // (10k connections: ~1.7 s of memcmp).
    let by_id: HashMap<&str, &Row> = existing
        .iter()
        .map(|r| (r.connection.id.as_str(), r))
        .collect();
    let mut writes: Vec<Write> = existing
        .iter()
        .filter(|r| r.owner == Owner::File && !wanted.contains(r.connection.id.as_str()))
        .map(|r| Write::Remove(r.connection.id.clone()))
        .collect();
    for c in file.iter_mut() {
        match by_id.get(c.id.as_str()).copied() {
            Some(r) if r.owner == Owner::Api => {
                return Err(StoreError::FileConflict {
                    id: c.id.clone(),
                    reason: "an API-created connection has the same id; rename one of them".into(),
                });
            }
            Some(r) => {
                if generated_passwords.contains(&c.id) {
                    c.password = r.connection.password.clone();
                }
                if r.connection != *c {
                    writes.push(Write::Update(Row {
                        connection: c.clone(),
                        owner: Owner::File,
                        created_at: r.created_at,
                        updated_at: now,
                    }));
                }
            }
            None => writes.push(Write::Insert(Row {
                connection: c.clone(),
                owner: Owner::File,
                created_at: now,
                updated_at: now,
            })),
        }
    }
    Ok(writes)
}

/// The sync's report: `writes` counted, and the rows after them. `existing`
/// is in creation order; an update keeps a row's place, inserts come last in
/// file order (they are created now), removals drop out. Rows move, none is
/// cloned (10,000 of them were a twentieth of a start-up).
pub(super) fn report(existing: Vec<Row>, writes: Vec<Write>) -> SyncReport {
    let mut r = SyncReport::default();
    let mut updated: HashMap<String, Row> = HashMap::new();
    let mut inserted: Vec<Row> = Vec::new();
    for w in writes {
        match w {
            Write::Remove(id) => r.removed_ids.push(id),
            Write::Update(row) => {
                updated.insert(row.connection.id.clone(), row);
            }
            Write::Insert(row) => inserted.push(row),
        }
    }
    (r.removed, r.updated, r.inserted) = (r.removed_ids.len(), updated.len(), inserted.len());
    let removed: HashSet<&str> = r.removed_ids.iter().map(String::as_str).collect();
    let mut after: Vec<Row> = existing
        .into_iter()
        .filter(|row| !removed.contains(row.connection.id.as_str()))
        .map(|row| updated.remove(&row.connection.id).unwrap_or(row))
        .collect();
    after.extend(inserted);
    r.after = after;
    r
}

/// A file connection's write refused because its `user_name` is taken by an
/// API-created one: said as a conflict of that file connection.
pub(super) fn file_conflict(e: StoreError, c: &Connection) -> StoreError {
    match e {
        StoreError::DuplicateUserName(u) => StoreError::FileConflict {
            id: c.id.clone(),
            reason: format!("user_name {u:?} is already used by an API-created connection"),
        },
        other => other,
    }
}
