//! Cluster mode (`[store] url` + `[cluster]`): every connection is held by
//! exactly one live node, by lease. A pure core (`lease`: assignment, plan,
//! validity, CSeq base) and the loop that drives it (`node`) over
//! [`ClusterDb`], which the PostgreSQL store implements.

pub mod lease;
mod node;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Connection;

pub use node::{Cluster, NodeView};

/// An error of the database behind [`ClusterDb`], as text.
pub type DbError = String;

/// What one heartbeat returns: the nodes as the database sees them and the
/// leases it says we hold (connection id → fencing epoch).
#[derive(Debug, Clone, Default)]
pub struct Beat {
    pub nodes: Vec<NodeView>,
    pub held: BTreeMap<String, u64>,
}

/// A claim that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub epoch: u64,
    /// Another node held it before (a takeover, not a first claim).
    pub took_over: bool,
}

/// One connection's registration status as persisted for every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub connection_id: String,
    pub node_id: Option<String>,
    pub status: u8,
    pub last_response: Option<String>,
    pub registered_ip: Option<String>,
    /// Unix milliseconds.
    pub expires_at: Option<i64>,
    /// Unix milliseconds.
    pub updated_at: i64,
}

/// Connection rows written since a mark (live apply from other nodes).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub upserted: Vec<Connection>,
    pub deleted: Vec<String>,
    /// The mark to ask from next time.
    pub mark: i64,
}

/// The shared state of a cluster. Calls block: the loop runs them on the
/// blocking pool with a deadline. Time is the database's (`now()`).
pub trait ClusterDb: Send + Sync + 'static {
    /// Gives back every lease a previous run of `node` held (their next
    /// claim raises the epoch, so CSeqs go on rising).
    fn join(&self, node: &str) -> Result<(), DbError>;
    /// Records that `node` is alive now; returns every node (alive when
    /// seen within `lease`) and the leases `node` holds.
    fn heartbeat(&self, node: &str, lease: Duration) -> Result<Beat, DbError>;
    /// Claims each of `ids` that is free or whose holder is dead (or `node`
    /// itself), raising its epoch; returns those obtained.
    fn claim(&self, node: &str, ids: &[String], lease: Duration) -> Result<Vec<Claimed>, DbError>;
    /// Frees the leases of `ids` that `node` holds.
    fn release(&self, node: &str, ids: &[String]) -> Result<(), DbError>;
    /// Frees every lease of `node` and removes it from the node list.
    fn leave(&self, node: &str) -> Result<(), DbError>;
    /// The current change mark (before a full read of the connections).
    fn change_mark(&self) -> Result<i64, DbError>;
    fn changes_since(&self, mark: i64) -> Result<Changes, DbError>;
    /// Writes statuses of connections `node` holds at the given epochs; a
    /// row whose lease moved on is skipped (fencing).
    fn put_status(&self, node: &str, rows: &[(StatusRow, u64)]) -> Result<(), DbError>;
    /// Status rows written since `mark`, and the next mark.
    fn statuses_since(&self, mark: i64) -> Result<(Vec<StatusRow>, i64), DbError>;
}

/// `[cluster]` as the loop needs it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_id: String,
    pub lease: Duration,
}
